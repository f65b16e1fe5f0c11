"""Near-duplicates of transactional mail (issue 17): three quote replies are one message.

The three-leads incident with the CRM's quote replies labelled transactional: only exact
copies used to be stopped. Receipts stay exempt by what they are, not by their label.
Real SMTP sessions through the gateway on a FakeClock, as tests/integration/test_duplicates.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tests.integration.conftest import message
from tests.integration.test_duplicates import JOHN, Gate, make_gate

__all__ = ["make_gate"]  # the fixture

MakeGate = Callable[..., Awaitable[Gate]]


def quote(source: str, ref: str, label: str = "transactional") -> bytes:
    body = (
        f"Hi John,\r\n\r\nThank you for your inquiry through {source} (lead {ref}). Here is the "
        "quote you requested for the 2026 Corolla LE: MSRP $24,990, freight and PDI $1,865, "
        "total before tax $26,855. This quote is valid for 7 days; reply to this email with "
        "any questions.\r\n\r\nSam, Sales Consultant, Example Motors\r\n"
    )
    extra = f"X-Mailgate-Category: {label}\r\n" if label else ""
    return message(to=JOHN, subject="The quote you asked for: 2026 Corolla LE", body=body,
                   extra=extra)  # fmt: skip


def receipt(number: str, label: str = "transactional") -> bytes:
    body = (
        f"Thank you for your payment. This is your receipt.\r\n\r\nReceipt number: {number}\r\n"
        "Oil change          $79.95\r\nTotal paid          $90.34\r\n\r\nExample Motors Service\r\n"
    )
    extra = f"X-Mailgate-Category: {label}\r\n" if label else ""
    return message(to=JOHN, subject=f"Your receipt {number}", body=body, extra=extra)


async def test_three_quote_replies_to_one_customer_are_one_message(make_gate: MakeGate) -> None:
    gate = await make_gate()
    first = await gate.send(quote("our website", "W-1881"))
    assert "queued" in first
    for source, ref in (("Cars.com", "C-55120"), ("Autotrader", "A-9031")):
        reply = await gate.send(quote(source, ref))
        assert reply.startswith("250") and "not sent" in reply, reply
    await gate.settle(1)
    assert [kind for _, kind, _ in await gate.drops()] == ["near", "near"]


async def test_receipts_are_exempt_by_purpose_with_or_without_a_label(make_gate: MakeGate) -> None:
    gate = await make_gate()
    for n, label in enumerate(("transactional", "transactional", "", "")):
        assert "queued" in await gate.send(receipt(f"2026-00{n}", label))
    await gate.settle(4)
    assert await gate.drops() == []


async def test_policy_can_keep_near_duplicates_to_commercial_mail(make_gate: MakeGate) -> None:
    gate = await make_gate("[checks.near-duplicate-message]\ntransactional = false\n")
    for source, ref in (("our website", "W-1"), ("Cars.com", "C-2")):
        assert "queued" in await gate.send(quote(source, ref))
    await gate.settle(2)
