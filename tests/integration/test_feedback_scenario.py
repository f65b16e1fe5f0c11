"""The issue-6 scenario, end to end over loopback SMTP and HTTP.

A dealer sends 5,000 messages through the gateway to a sink; ten ARF complaints about
them arrive on the inbound listener: the complainants are suppressed, the dealer is
warned at five and suspended at ten, the alerts reach the sink with the evidence, the
next MAIL FROM is refused with the reason, queued mail is held, /metrics shows it all;
forged reports change nothing; after the resume, mail flows again (held mail included).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from email import message_from_bytes, policy
from email.message import EmailMessage

from gateway.reputation.records import DealerState
from gateway.tracking import parse_header
from gateway.types import DealerId, MessageId, NewMessage
from tests.feedback_reports import arf, deliver, metric, scrape
from tests.integration.conftest import Harness, dot_stuff, message
from tests.sinks import Received

MakeHarness = Callable[..., Awaitable[Harness]]
DEALER = DealerId("example-motors")
INBOUND = {
    "listen": "127.0.0.1:0",
    "report_addresses": ["fbl@mailgate.test"],
    "bounce_domain": "bounces.mailgate.test",
}
TOTAL = 5000
PER_MESSAGE = 100  # the submission listener's default recipient limit


def ref_of(received: Received) -> str:
    found = re.search(rb"^X-Mailgate-Ref: (\S+)", received.data, re.M)
    assert found is not None
    return found.group(1).decode()


def body_of(received: Received) -> str:
    msg = message_from_bytes(received.data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


async def send_bulk(h: Harness) -> None:
    """5,000 copies: 50 messages of 100 recipients each, on one connection."""
    client = await h.client()
    try:
        for batch in range(TOTAL // PER_MESSAGE):
            assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
            for n in range(PER_MESSAGE):
                rcpt = f"c{batch}-{n}@customers.example"
                assert (await client.cmd(f"RCPT TO:<{rcpt}>")).code == 250
            data = message(
                to="undisclosed-recipients:;",
                subject="Spring service special" if batch % 2 else "Your test drive",
                body=f"Offer {batch}.\r\n",
            ).replace(b"<t1@", f"<t{batch}@".encode())
            reply = await client.data(dot_stuff(data), timeout=60)
            assert reply.code == 250, reply
    finally:
        await client.close()


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_complaints_suppress_suspend_alert_and_resume(make_harness: MakeHarness) -> None:
    started = time.monotonic()
    h = await make_harness(
        inbound=INBOUND,
        alerts={"operators": ["ops@mailgate.test"]},
        delivery={"workers": 16},
    )
    gw = h.gateway
    assert gw.suspensions is not None
    store = gw.storage

    await send_bulk(h)

    async def all_delivered() -> bool:
        rows = await store.daily_counts(DEALER, gw.clock.now().date(), gw.clock.now().date())
        return bool(rows) and rows[0].counts.delivered == TOTAL

    await wait_for(all_delivered, timeout=40)
    assert len(h.sink.messages) == TOTAL
    # Every copy went out with its own VERP return path and reference.
    first = h.sink.messages[0]
    assert first.mail_from.startswith("b-") and first.mail_from.endswith("@bounces.mailgate.test")

    complained = h.sink.messages[:10]
    port = gw.inbound_port
    for n, received in enumerate(complained, start=1):
        report = arf(received.data, received.rcpt_tos[0], report_id=str(n))
        replies = await deliver(port, ["fbl@mailgate.test"], report)
        assert replies[-1].startswith("250 2.0.0"), replies
        status = await store.get_dealer_status(DEALER)
        if n < 5:
            assert status is None
        elif n < 10:
            assert status is not None and status.state is DealerState.WARNED
    status = await store.get_dealer_status(DEALER)
    assert status is not None and status.state is DealerState.SUSPENDED
    assert status.reason.startswith("complaint rate 0.20% (10 of 5000 delivered")
    assert DEALER in gw.suspensions.suspended()

    # The complainants are suppressed for the dealer, with the report's date.
    for received in complained:
        entry = await store.find_suppression(DEALER, received.rcpt_tos[0], gw.clock.now())
        assert entry is not None and entry.reason == "spam complaint"
    assert await store.find_suppression(DEALER, "c9-9@customers.example", gw.clock.now()) is None

    # The warning and the suspension alerts reach the dealer's contact and the operator,
    # with the evidence, through the gateway's own queue (system messages).
    async def alerts_arrived() -> bool:
        return sum(1 for m in h.sink.messages[TOTAL:] if b"X-Mailgate-Alert" in m.data) == 4

    await wait_for(alerts_arrived, timeout=10)
    alerts = [m for m in h.sink.messages[TOTAL:] if b"X-Mailgate-Alert" in m.data]
    assert {m.rcpt_tos[0] for m in alerts} == {"gm@example-motors.test", "ops@mailgate.test"}
    assert all(m.mail_from in ("", "<>") for m in alerts)  # null sender: never bounced
    suspended = [m for m in alerts if b"is suspended" in m.data]
    assert len(suspended) == 2
    text = body_of(suspended[0])
    assert "complaint rate 0.20% (10 of 5000 delivered" in text
    assert "10 complaints / 5000 delivered" in text
    assert "warning at 0.100%, suspension at 0.200%" in text
    assert "Your test drive" in text  # the most-complained subject
    assert complained[0].rcpt_tos[0] in text  # a recent complaint, with its date
    assert "What to do next" in text
    assert b"text/html" in suspended[0].data

    # The next MAIL FROM is refused with the reason.
    client = await h.client()
    reply = await client.cmd("MAIL FROM:<sales@example-motors.test>")
    await client.close()
    assert reply.code == 554 and reply.enhanced == "5.7.1", reply
    assert "Dealer example-motors is suspended: complaint rate 0.20%" in reply.text

    # Mail already queued for the dealer is held, not sent.
    queued = NewMessage(
        id=MessageId("heldwhilesuspended.1"),
        dealer_id=DEALER,
        mail_from="sales@example-motors.test",
        rcpt="waiting@customers.example",
        data=message(to="waiting@customers.example"),
        received_at=gw.clock.now(),
    )
    await store.enqueue([queued])
    gw.worker.notify()
    await asyncio.sleep(0.5)
    assert not any(m.rcpt_tos == ["waiting@customers.example"] for m in h.sink.messages)

    # The metrics show it, over HTTP.
    page = await asyncio.to_thread(scrape, gw.http_port)
    assert metric(page, "mailgate_complaints_total", dealer=DEALER) == 10
    assert metric(page, "mailgate_complaint_rate", dealer=DEALER) == 0.002
    assert metric(page, "mailgate_dealer_state", dealer=DEALER, state="suspended") == 1
    assert metric(page, "mailgate_dealer_state", dealer=DEALER, state="active") == 0
    assert metric(page, "mailgate_dealer_suspended", dealer=DEALER) == 1
    assert metric(page, "mailgate_suppressed_addresses", dealer=DEALER) == 10

    # Forged reports change nothing: a bad MAC, a genuine reference for someone else,
    # and a replay of a counted complaint.
    victim = h.sink.messages[20]
    token = parse_header(ref_of(victim))
    assert token is not None
    forged_mac = "a" * 16 if token.mac != "a" * 16 else "b" * 16
    bad_mac = victim.data.replace(token.mac.encode(), forged_mac.encode())
    other = h.sink.messages[21].rcpt_tos[0]
    for report in (
        arf(bad_mac, victim.rcpt_tos[0], report_id="f1"),
        arf(victim.data, other, report_id="f2"),
        arf(complained[0].data, complained[0].rcpt_tos[0], report_id="1"),
    ):
        replies = await deliver(port, ["fbl@mailgate.test"], report)
        assert replies[-1].startswith("250 2.0.0"), replies
    for address in (victim.rcpt_tos[0], other):
        assert await store.find_suppression(DEALER, address, gw.clock.now()) is None
    page = await asyncio.to_thread(scrape, gw.http_port)
    assert metric(page, "mailgate_complaints_total", dealer=DEALER) == 10
    for reason in ("bad-mac", "recipient-mismatch", "replay"):
        assert metric(page, "mailgate_reports_untrusted_total", reason=reason) == 1, reason
    history = await store.dealer_history(DEALER)
    assert [c.state for c in history] == [DealerState.SUSPENDED, DealerState.WARNED]

    # Resume: held mail goes out, new mail flows, suppressed recipients stay refused.
    resumed = await gw.suspensions.resume(DEALER, "list cleaned", by="ops")
    assert resumed is not None
    await h.wait_delivered(TOTAL + 4 + 1 + 2)  # + held message + two resumed alerts
    assert any(m.rcpt_tos == ["waiting@customers.example"] for m in h.sink.messages)
    client = await h.client()
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        refused = await client.cmd(f"RCPT TO:<{complained[0].rcpt_tos[0]}>")
        day = gw.clock.now().strftime("%Y-%m-%d")
        assert refused.code == 550 and refused.enhanced == "5.7.1"
        assert refused.text.endswith(
            f"<{complained[0].rcpt_tos[0]}> is suppressed for example-motors: "
            f"spam complaint on {day}"
        )
        assert (await client.cmd("RCPT TO:<new@customers.example>")).code == 250
        reply = await client.data(dot_stuff(message(to="new@customers.example")))
        assert reply.code == 250, reply
    finally:
        await client.close()
    await h.wait_delivered(TOTAL + 4 + 1 + 2 + 1)
    assert h.sink.messages[-1].rcpt_tos == ["new@customers.example"]
    status = await store.get_dealer_status(DEALER)
    assert status is not None and status.state is DealerState.RESUMED
    assert time.monotonic() - started < 60
