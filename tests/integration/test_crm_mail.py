"""Mail as CRMs really send it, through the real gateway: what recipients see, what is held.

Each test submits over a real SMTP session (STARTTLS, AUTH) to the gateway in process and
reads what arrives at the loopback sink and what the store kept.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.cli import main as cli
from gateway.clock import FakeClock
from gateway.settings import Settings
from gateway.types import MessageId, MessageState
from tests.integration.conftest import Harness, add_credentials, dot_stuff
from tests.sinks import Sink

DEALER_FROM = "Example Motors <sales@example-motors.test>"


@pytest.fixture
def h(harness: Harness) -> Harness:
    return harness


@dataclass
class Timed(Harness):
    clock: FakeClock

    async def quiet(self) -> None:
        """Wait until nothing is queued (delivery leases run on the fake clock too)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (await self.gateway.storage.stats()).count(MessageState.QUEUED):
            assert loop.time() < deadline, "messages still queued"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)


@pytest.fixture
async def timed(
    sink: Sink, settings_factory: Callable[..., Settings]
) -> AsyncIterator[Callable[..., Awaitable[Timed]]]:
    started: list[Gateway] = []

    async def make(**sections: dict[str, Any]) -> Timed:
        clock = FakeClock()
        gateway = await Gateway.build(settings_factory(sink.port, **sections), clock=clock)
        await add_credentials(gateway)
        await gateway.start()
        started.append(gateway)
        return Timed(gateway, sink, clock)

    yield make
    for gateway in started:
        await gateway.stop()


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
    reply, findings = await held_for(h, data)
    assert findings == ("display-name-address",)
    assert reply.startswith("250 2.0.0 held as "), reply
    assert "display-name-address: the From: display name shows sales@rival-motors.test" in reply


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


# -- held mail is never silent (issue 15, item 2) ----------------------------------------

HELD_HTML = "<p>Please install the attached update.</p>"


def held_message(n: int) -> bytes:
    """A CRM message with a program attached: dangerous-attachment, held by default."""
    msg = EmailMessage()
    msg["From"] = DEALER_FROM
    msg["To"] = f"customer{n}@example.org"
    msg["Subject"] = f"Your invoice {n}"
    msg["Date"] = "Mon, 05 Jan 2026 09:00:00 +0000"
    msg["Message-ID"] = f"<inv{n}@crm.example-motors.test>"
    msg.set_content(f"Invoice {n} attached.\n")
    msg.add_attachment(b"MZ\x90\x00" + bytes(200), maintype="application",
                       subtype="octet-stream", filename="setup.exe")  # fmt: skip
    return msg.as_bytes().replace(b"\n", b"\r\n")


async def test_held_reply_names_the_hold_the_reason_and_the_id(h: Harness) -> None:
    reply = await submit(h, held_message(1), "customer1@example.org")
    (held,) = await h.gateway.storage.list_messages(state=MessageState.HELD)
    submission = held.id.rsplit(".", 1)[0]
    assert reply.startswith(f"250 2.0.0 held as {submission}, not sent until an operator "
                            "releases it: dangerous-attachment: "), reply  # fmt: skip
    assert "setup.exe" in reply


def notices(sink: Sink) -> list[email.message.EmailMessage]:
    found = []
    for got in sink.messages:
        parsed = email.message_from_bytes(got.data, policy=email.policy.default)
        if "held for review" in str(parsed["Subject"]):
            assert isinstance(parsed, email.message.EmailMessage)
            found.append(parsed)
    return found


async def test_contacts_get_one_notice_per_dealer_per_interval(
    timed: Callable[..., Awaitable[Timed]],
) -> None:
    t = await timed(delivery={"held_notice_interval": "15m"})
    notices_of = t.gateway.held_notices
    assert notices_of is not None
    for n in (1, 2):
        assert (await submit(t, held_message(n), f"customer{n}@example.org")).startswith(
            "250 2.0.0 held as "
        )
    assert await notices_of.send_due() == 0  # the interval is not over yet
    t.clock.advance(timedelta(minutes=15))
    assert await notices_of.send_due() == 1
    assert await notices_of.send_due() == 0  # once per dealer and interval
    await t.quiet()
    (notice,) = notices(t.sink)
    assert notice["To"] == "gm@example-motors.test"
    assert notice["Subject"].strip() == "[Mailgate] Example Motors: 2 messages held for review"
    body = notice.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "customer1@example.org" in text and "customer2@example.org" in text
    assert "dangerous-attachment" in text and "setup.exe" in text
    link = t.gateway.status_links.url("example-motors") if t.gateway.status_links else "?"
    assert f"Status page (everything held now): {link}" in text
    # A hold in the next interval: a second notice, naming only the new message.
    assert (await submit(t, held_message(3), "customer3@example.org")).startswith("250 ")
    t.clock.advance(timedelta(minutes=15))
    assert await notices_of.send_due() == 1
    await t.quiet()
    _, second = notices(t.sink)
    assert "customer3@example.org" in second.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert second["Subject"].strip() == "[Mailgate] Example Motors: 1 message held for review"


async def test_an_expired_hold_sends_the_sender_a_dsn(
    h: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (await submit(h, held_message(1), "customer1@example.org")).startswith("250 ")
    (held,) = await h.gateway.storage.list_messages(state=MessageState.HELD)
    config = tmp_path / "mailgate.toml"
    url = h.gateway.settings.storage_url
    config.write_text(f'[server]\nhostname = "mailgate.test"\n[storage]\nurl = "{url}"\n')

    def expire() -> tuple[int, str]:
        code = cli.main(["--config", str(config), "held", "expire", "--older-than", "0s"])
        return code, capsys.readouterr().out

    code, out = await asyncio.to_thread(expire)
    assert code == 0 and "expired 1" in out, out
    assert await h.gateway.storage.get(held.id) is None
    # Recorded: the DSN is a queued system message named after the expired one.
    dsn_row = await h.gateway.storage.get(MessageId(f"{held.id}.dsn"))
    assert dsn_row is not None and dsn_row.system and dsn_row.mail_from == ""
    h.gateway.worker.notify()
    await h.wait_delivered(1)
    got = h.sink.messages[0]
    assert got.mail_from == "<>" and got.rcpt_tos == ["sales@example-motors.test"]
    report = email.message_from_bytes(got.data, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    text = got.data.decode()
    assert "Status: 5.7.1" in text and "Action: failed" in text
    assert "held it for review" in text and "dangerous-attachment" in text
    assert "Final-Recipient: rfc822; customer1@example.org" in text
