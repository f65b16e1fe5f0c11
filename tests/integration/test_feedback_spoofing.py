"""Reliability bar section E (FBL and bounce spoofing) and the inbound listener's relay rules.

Each test sends a few real messages through the gateway to get genuine references, then
mails reports to the inbound listener over loopback SMTP and checks what they changed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from gateway.feedback.ingest import Via
from gateway.reputation.records import DayCounts, EventKind
from gateway.types import DealerId
from tests.feedback_reports import arf, deliver, dsn, metric, scrape
from tests.integration.conftest import Harness, dot_stuff, message
from tests.sinks import Received
from tests.smtpclient import RawSmtp

MakeHarness = Callable[..., Awaitable[Harness]]
DEALER = DealerId("example-motors")
INBOUND = {
    "listen": "127.0.0.1:0",
    "report_addresses": ["fbl@mailgate.test"],
    "bounce_domain": "bounces.mailgate.test",
}
FBL = ["fbl@mailgate.test"]


BODIES = (
    "The recall repair parts for your vehicle arrived; call us to choose a day for the work.",
    "Your oil change is confirmed for Monday at nine; the waiting room has coffee and wifi.",
    "Your tyre rotation is booked for Thursday afternoon; please bring the locking wheel nut.",
)


async def sent(h: Harness, *rcpts: str, n: int = 0) -> list[Received]:
    """Send one message to ``rcpts`` through the gateway; return what the sink got.

    ``n`` makes a distinct transactional message (frequency caps do not apply to it, and
    its text differs enough not to be a near duplicate of the others).
    """
    before = len(h.sink.messages)
    client = await h.client()
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        for rcpt in rcpts:
            assert (await client.cmd(f"RCPT TO:<{rcpt}>")).code == 250
        data = message(to=rcpts[0])
        if n:
            data = message(
                to=rcpts[0],
                subject=f"Appointment {n}",
                body=BODIES[n % len(BODIES)] + f" Reference {n}.\r\n",
                extra="X-Mailgate-Category: transactional\r\n",
            )
        reply = await client.data(dot_stuff(data))
        assert reply.code == 250, reply
    finally:
        await client.close()
    await h.wait_delivered(before + len(rcpts))
    return sorted(h.sink.messages[before:], key=lambda m: m.rcpt_tos[0])


async def counts(h: Harness) -> DayCounts:
    now = h.gateway.clock.now()
    rows = await h.gateway.storage.daily_counts(DEALER, now.date(), now.date())
    return rows[0].counts if rows else DayCounts()


async def suppressed(h: Harness, address: str) -> bool:
    found = await h.gateway.storage.find_suppression(DEALER, address, h.gateway.clock.now())
    return found is not None


async def untrusted(h: Harness, reason: str) -> float:
    page = await asyncio.to_thread(scrape, h.gateway.http_port)
    return metric(page, "mailgate_reports_untrusted_total", reason=reason) or 0.0


@pytest.fixture
async def h(make_harness: MakeHarness) -> Harness:
    return await make_harness(inbound=INBOUND)


async def test_e1_report_without_reference_changes_nothing(h: Harness) -> None:
    original = message(to="someone@customers.example")  # never sent by us: no reference
    replies = await deliver(h.gateway.inbound_port, FBL, arf(original, "someone@customers.example"))
    assert replies[-1].startswith("250 2.0.0")  # accepted at the SMTP level ...
    assert not await suppressed(h, "someone@customers.example")  # ... but nothing recorded
    assert await untrusted(h, "no-reference") == 1
    assert await counts(h) == DayCounts()


async def test_e2_invalid_or_unknown_reference_changes_nothing(h: Harness) -> None:
    (got,) = await sent(h, "ann@customers.example")
    rcpt = got.rcpt_tos[0]
    ref = got.data.split(b"X-Mailgate-Ref: ", 1)[1].split(b"\r\n", 1)[0]
    mac = ref.rsplit(b".", 1)[1]
    bad = got.data.replace(mac, b"a" * 16 if mac != b"a" * 16 else b"b" * 16)
    unknown = got.data.replace(ref, b"v1.0000000000000000.1." + mac)
    for data in (bad, unknown):
        replies = await deliver(h.gateway.inbound_port, FBL, arf(data, rcpt))
        assert replies[-1].startswith("250 2.0.0")
    assert not await suppressed(h, rcpt)
    assert await untrusted(h, "bad-mac") == 1
    assert await untrusted(h, "unknown-message") == 1
    assert (await counts(h)).complaints == 0


async def test_e3_a_token_for_a_never_suppresses_b(h: Harness) -> None:
    a, b = await sent(h, "a@customers.example", "b@customers.example")
    replies = await deliver(h.gateway.inbound_port, FBL, arf(a.data, b.rcpt_tos[0]))
    assert replies[-1].startswith("250 2.0.0")
    assert not await suppressed(h, b.rcpt_tos[0])
    assert not await suppressed(h, a.rcpt_tos[0])
    assert await untrusted(h, "recipient-mismatch") == 1
    # The genuine report about A (redacted recipient, as some providers send) counts.
    await deliver(h.gateway.inbound_port, FBL, arf(a.data, "redacted@customers.example"))
    assert await suppressed(h, a.rcpt_tos[0])


async def test_e4_a_report_delivered_five_times_counts_once(h: Harness) -> None:
    (got,) = await sent(h, "five@customers.example")
    report = arf(got.data, got.rcpt_tos[0])
    for _ in range(5):
        replies = await deliver(h.gateway.inbound_port, FBL, report)
        assert replies[-1].startswith("250 2.0.0")
    assert (await counts(h)).complaints == 1
    events = await h.gateway.storage.recent_events(
        DEALER, frozenset({EventKind.COMPLAINT}), h.gateway.clock.now() - timedelta(hours=1)
    )
    assert len(events) == 1
    assert await untrusted(h, "replay") == 4


async def test_e5_forged_dsns(h: Harness) -> None:
    (got,) = await sent(h, "dsn@customers.example")
    rcpt = got.rcpt_tos[0]
    port = h.gateway.inbound_port
    # Not a VERP address at the bounce domain: refused at RCPT.
    replies = await deliver(port, ["postmaster@bounces.mailgate.test"], b"x")
    assert replies[2].startswith("550 5.1.1"), replies
    # A VERP address whose MAC is wrong: accepted, then ignored.
    verp = got.mail_from
    forged = verp.replace(verp.split("-")[-1].split("@")[0], "a" * 16)
    replies = await deliver(port, [forged], dsn(forged, [(rcpt, "5.1.1", "failed")]), "")
    assert replies[-1].startswith("250 2.0.0"), replies
    assert not await suppressed(h, rcpt)
    assert await untrusted(h, "bad-mac") == 1
    assert (await counts(h)).hard_bounces == 0


async def test_e6_genuine_dsn_hard_for_one_soft_for_the_other(h: Harness) -> None:
    a, b = await sent(h, "gone@customers.example", "full@customers.example")
    report = dsn(
        a.mail_from,
        [(a.rcpt_tos[0], "5.1.1", "failed"), (b.rcpt_tos[0], "4.2.2", "failed")],
    )
    # A remote MTA that batched both copies sends one DSN to both return paths.
    replies = await deliver(h.gateway.inbound_port, [a.mail_from, b.mail_from], report, "")
    assert replies[-1].startswith("250 2.0.0"), replies
    assert await counts(h) == DayCounts(sent=2, delivered=2, hard_bounces=1, soft_bounces=1)
    assert await suppressed(h, a.rcpt_tos[0])
    assert not await suppressed(h, b.rcpt_tos[0])


async def test_soft_bounces_suppress_for_a_while_after_the_limit(h: Harness) -> None:
    got = [c for n in (1, 2, 3) for c in await sent(h, "full@customers.example", n=n)]
    assert h.gateway.ingest is not None
    for n, copy in enumerate(got, start=1):
        report = dsn(copy.mail_from, [(copy.rcpt_tos[0], "4.2.2", "failed")])
        await h.gateway.ingest.ingest(report, Via("import", (copy.mail_from,), source="t"))
        assert await suppressed(h, "full@customers.example") == (n == 3)
    (entry,) = await h.gateway.storage.list_suppressions(DEALER)
    assert entry.reason == "3 soft bounces in 7 days" and entry.expires_at is not None


async def test_e7_report_flood_is_rate_limited_and_submission_unaffected(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(inbound={**INBOUND, "reports_per_second": 20, "report_burst": 20})
    junk = message(to="x@customers.example")  # no reference: cheap, records nothing

    async def flood() -> list[int]:
        client = await RawSmtp.connect("127.0.0.1", h.gateway.inbound_port)
        codes: list[int] = []
        try:
            await client.cmd("EHLO isp.example")
            for _ in range(15):
                reply = await client.cmd("MAIL FROM:<fbl@isp.example>")
                codes.append(reply.code)
                if reply.code == 250:
                    await client.cmd("RCPT TO:<fbl@mailgate.test>")
                    await client.data(dot_stuff(junk))
        finally:
            await client.close()
        return codes

    flooding = asyncio.gather(*(flood() for _ in range(6)))
    started = time.monotonic()
    await sent(h, "calm@customers.example")
    submission_seconds = time.monotonic() - started
    results = await flooding
    codes = [c for r in results for c in r]
    assert codes.count(451) > 0 and codes.count(250) >= 20
    assert submission_seconds < 3.0
    assert await h.gateway.storage.list_suppressions() == []


async def test_e8_hostile_report_bodies(h: Harness) -> None:
    port = h.gateway.inbound_port
    # An oversized report (the returned original is huge) is refused with 552.
    huge = arf(message(body="x" * 998 + "\r\n"), "a@customers.example")
    huge += (b"y" * 998 + b"\r\n") * 11_000
    replies = await deliver(port, FBL, huge)
    assert replies[-1].startswith("552"), replies[-1]
    # message/rfc822 nested 100 deep, and broken feedback-report fields: no crash.
    nested = message(to="deep@customers.example")
    for _ in range(100):
        nested = b"MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n" + nested
    broken = arf(message(), "a@customers.example").replace(
        b"Feedback-Type: abuse", b"Feedback-Type: \x00\xff" + b"=" * 5000
    )
    for data in (nested, broken):
        started = time.monotonic()
        replies = await deliver(port, FBL, data)
        assert replies[-1].startswith("250 2.0.0"), replies
        assert time.monotonic() - started < 5
    assert await h.gateway.storage.list_suppressions() == []


async def test_e9_e10_reports_are_never_relayed_or_answered(h: Harness) -> None:
    (got,) = await sent(h, "quiet@customers.example")
    before_sink = len(h.sink.messages)
    before_store = len(await h.gateway.storage.list_messages(limit=1000))
    port = h.gateway.inbound_port
    await deliver(port, FBL, arf(got.data, got.rcpt_tos[0]))
    await deliver(port, [got.mail_from], dsn(got.mail_from, [(got.rcpt_tos[0], "5.1.1", "failed")]))
    await deliver(port, FBL, message(subject="Out of office"))  # an auto-reply
    await asyncio.sleep(0.5)
    assert len(h.sink.messages) == before_sink  # nothing sent: no reply, bounce or forward
    assert len(await h.gateway.storage.list_messages(limit=1000)) == before_store
    assert await suppressed(h, got.rcpt_tos[0])


@pytest.mark.parametrize(
    "rcpt",
    [
        "victim@external.example",  # B2: an external domain
        "relay%victim.test@mailgate.test",  # B3: routing tricks inside our own names
        "victim.test!relay@mailgate.test",
        "relay@victim.test@mailgate.test",
        "fbl@[127.0.0.1]",
        "someone@mailgate.test",  # our host, but not a report address
    ],
)
async def test_inbound_listener_never_relays(h: Harness, rcpt: str) -> None:
    client = await RawSmtp.connect("127.0.0.1", h.gateway.inbound_port)
    try:
        assert (await client.cmd("EHLO isp.example")).code == 250
        assert (await client.cmd("MAIL FROM:<x@isp.example>")).code == 250
        reply = await client.cmd(f"RCPT TO:<{rcpt}>")
        assert reply.code in (550, 553, 501), reply
        if reply.code == 550:
            assert reply.enhanced in ("5.7.1", "5.1.1"), reply
    finally:
        await client.close()
    assert await h.gateway.storage.list_messages() == []


async def test_inbound_listener_offers_no_auth(h: Harness) -> None:
    client = await RawSmtp.connect("127.0.0.1", h.gateway.inbound_port)
    try:
        ehlo = await client.cmd("EHLO isp.example")
        assert not any(line.startswith("AUTH") for line in ehlo.lines)
        reply = await client.cmd("AUTH PLAIN AGV4YW1wbGUtY3JtAGNvcnJlY3QgaG9yc2UgYmF0dGVyeQ==")
        assert reply.code >= 500
    finally:
        await client.close()
