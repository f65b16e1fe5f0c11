"""Mail as CRMs really send it, through the real gateway: what recipients see, what is held.

Each test submits over a real SMTP session (STARTTLS, AUTH) to the gateway in process and
reads what arrives at the loopback sink and what the store kept.
"""

from __future__ import annotations

import asyncio
import email
import email.policy

import pytest

from gateway.types import MessageState
from tests.integration.conftest import Harness, dot_stuff

DEALER_FROM = "Example Motors <sales@example-motors.test>"


@pytest.fixture
def h(harness: Harness) -> Harness:
    return harness


async def submit(h: Harness, data: bytes, rcpt: str = "customer@example.org") -> str:
    client = await h.client()
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        assert (await client.cmd(f"RCPT TO:<{rcpt}>")).code == 250
        return str(await client.data(dot_stuff(data)))
    finally:
        await client.close()


def crm_message(*headers: str, body: str = "Hello Sam,\r\n\r\nYour car is ready.\r\n") -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


# -- what recipients see (issue 15, item 10) --------------------------------------------


async def test_recipients_see_no_findings_and_no_defect_the_gateway_fixed(h: Harness) -> None:
    # No Date: (the gateway adds one), HTML only (html-without-text: tag), and a findings
    # field the CRM wrote itself.
    data = crm_message(
        f"From: {DEALER_FROM}",
        "To: customer@example.org",
        "Subject: Your service appointment",
        "Message-ID: <appt-7@crm.example-motors.test>",
        "X-Mailgate-Findings: none",
        "MIME-Version: 1.0",
        "Content-Type: text/html; charset=utf-8",
        body="<html><body><p>Your appointment is on Friday at 9.</p></body></html>\r\n",
    )
    reply = await submit(h, data)
    assert reply.startswith("250 2.0.0 queued as "), reply
    await h.wait_delivered(1)
    got = h.sink.messages[0].data
    parsed = email.message_from_bytes(got, policy=email.policy.default)
    assert parsed["Date"] is not None
    assert b"X-Mailgate-Findings" not in got
    # The dealer's record keeps the real finding, and nothing about the Date: it fixed.
    (stored,) = await h.gateway.storage.list_messages()
    assert stored.findings == ("html-without-text",)


# -- who the message says it is from (issue 15, item 9) ---------------------------------


async def held_for(h: Harness, data: bytes) -> tuple[str, tuple[str, ...]]:
    reply = await submit(h, data)
    assert reply.startswith("250 "), reply
    (held,) = await h.gateway.storage.list_messages(state=MessageState.HELD)
    await asyncio.sleep(0.3)
    assert h.sink.messages == []
    return reply, held.findings


async def test_display_name_showing_another_domains_address_is_held(h: Harness) -> None:
    data = crm_message(
        'From: "sales@rival-motors.test" <sales@example-motors.test>',
        "To: customer@example.org",
        "Subject: Your trade-in value",
        "Date: Mon, 05 Jan 2026 09:00:00 +0000",
    )
    _, findings = await held_for(h, data)
    assert findings == ("display-name-address",)


async def test_sender_naming_another_domain_is_held(h: Harness) -> None:
    data = crm_message(
        f"From: {DEALER_FROM}",
        "Sender: campaigns@crm-vendor.example",
        "To: customer@example.org",
        "Subject: Spring service offer",
        "Date: Mon, 05 Jan 2026 09:00:00 +0000",
    )
    _, findings = await held_for(h, data)
    assert findings == ("sender-domain-not-allowed",)
