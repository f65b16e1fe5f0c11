"""The reports part of the storage contract: tallies over the store, period claims, opt-outs.

The same figures from both backends: the sent log by UTC day, recipient domain and state
(system messages and other dealers left out), feedback events by domain and kind, drops by
kind and subject, finding sets; one claim per dealer and period across nodes.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

from gateway.duplicates.fingerprints import DuplicateDrop
from gateway.reports.records import DeliveryTally, DropTally, EventTally, FindingTally
from gateway.reputation.records import EventKind, FeedbackEvent
from gateway.storage.base import Storage
from gateway.types import DealerId, MessageId, MessageState, NewMessage, OutcomeKind, RcptOutcome
from tests.contract.conftest import Backend

DEALER = DealerId("example-motors")
DAY = datetime(2026, 1, 5, tzinfo=UTC)
T0 = DAY + timedelta(hours=9)
NEXT = DAY + timedelta(days=1)
DELIVERED = RcptOutcome(OutcomeKind.DELIVERED, 250, "2.0.0", "ok")
FAILED = RcptOutcome(OutcomeKind.FAILED, 550, "5.1.1", "no such user")
DEFERRED = RcptOutcome(OutcomeKind.DEFERRED, 451, "4.7.1", "try later")
LEASE = timedelta(minutes=5)


def new(mid: str, rcpt: str, *, at: datetime = T0, dealer: DealerId = DEALER,
        state: MessageState = MessageState.QUEUED, findings: tuple[str, ...] = (),
        system: bool = False) -> NewMessage:  # fmt: skip
    return NewMessage(
        id=MessageId(mid), dealer_id=dealer, mail_from="b@mailgate.test", rcpt=rcpt,
        data=b"Subject: x\r\n\r\nbody\r\n", received_at=at, state=state, findings=findings,
        system=system,
    )  # fmt: skip


async def finish(store: Storage, outcomes: dict[str, list[RcptOutcome]]) -> None:
    """Deliver each queued message through its outcomes (deferrals first)."""
    now = T0 + timedelta(minutes=1)
    for mid, steps in outcomes.items():
        for step in steps:
            claimed = await store.claim("node-a", 100, now + timedelta(days=1), LEASE)
            assert MessageId(mid) in {m.id for m in claimed}, mid
            for other in claimed:
                if other.id != mid:
                    await store.release(other.id, "node-a")
            if step.kind is OutcomeKind.DEFERRED:
                await store.defer(MessageId(mid), "node-a", step, now, now)
            else:
                await store.complete(MessageId(mid), "node-a", step, now)


async def test_delivery_tallies_by_day_domain_and_state(store: Storage) -> None:
    await store.enqueue(
        [
            new("m1", "ann@Gmail.com"),
            new("m2", "bob@gmail.com"),
            new("m3", "cy@outlook.com"),
            new("m4", "di@dealer-customer.test"),
            new("m5", "ed@gmail.com"),
            new("m6", "fi@yahoo.com", state=MessageState.HELD, findings=("dangerous-attachment",)),
            new("m7", "next@gmail.com", at=NEXT + timedelta(hours=1)),  # the next day
            new("m8", "early@gmail.com", at=DAY - timedelta(seconds=1)),  # the day before
            new("m9", "rival@gmail.com", dealer=DealerId("rival-motors")),
            new("m10", "gm@example-motors.test", system=True),  # an alert: not dealer mail
        ]
    )
    # m1 delivered at once; m2 deferred then delivered; m3 failed; m4 deferred, waiting.
    await finish(store, {"m1": [DELIVERED], "m2": [DEFERRED, DELIVERED], "m3": [FAILED],
                         "m4": [DEFERRED]})  # fmt: skip
    got = await store.delivery_tallies(DEALER, DAY, NEXT)
    assert sorted(got, key=lambda t: (t.domain, t.state, t.retried)) == [
        DeliveryTally(date(2026, 1, 5), "dealer-customer.test", MessageState.QUEUED, True, 1),
        DeliveryTally(date(2026, 1, 5), "gmail.com", MessageState.DELIVERED, False, 1),
        DeliveryTally(date(2026, 1, 5), "gmail.com", MessageState.DELIVERED, True, 1),
        DeliveryTally(date(2026, 1, 5), "gmail.com", MessageState.QUEUED, False, 1),
        DeliveryTally(date(2026, 1, 5), "outlook.com", MessageState.FAILED, False, 1),
        DeliveryTally(date(2026, 1, 5), "yahoo.com", MessageState.HELD, False, 1),
    ]
    two_days = await store.delivery_tallies(DEALER, DAY - timedelta(days=1), NEXT + timedelta(1))
    by_day = {(t.day, t.domain): t.messages for t in two_days if t.domain == "gmail.com"}
    assert by_day[(date(2026, 1, 4), "gmail.com")] == 1
    assert by_day[(date(2026, 1, 6), "gmail.com")] == 1
    findings = await store.finding_tallies(DEALER, DAY, NEXT)
    assert findings == [FindingTally(("dangerous-attachment",), MessageState.HELD, 1)]


async def test_event_and_drop_tallies(store: Storage) -> None:
    events = [
        (EventKind.HARD_BOUNCE, "a@gmail.com", T0),
        (EventKind.HARD_BOUNCE, "b@GMAIL.com", T0),
        (EventKind.SOFT_BOUNCE, "c@outlook.com", T0),
        (EventKind.COMPLAINT, "d@yahoo.com", T0 + timedelta(hours=3)),
        (EventKind.COMPLAINT, "e@yahoo.com", NEXT + timedelta(hours=1)),  # next day
    ]
    for n, (kind, rcpt, at) in enumerate(events):
        event = FeedbackEvent(DEALER, kind, MessageId(f"s{n}.1"), rcpt.lower(), at, "x", "Hi")
        assert await store.record_feedback(event)
    got = await store.event_tallies(DEALER, DAY, NEXT)
    assert sorted(got, key=lambda t: (t.domain, t.kind)) == [
        EventTally(date(2026, 1, 5), "gmail.com", "hard-bounce", 2),
        EventTally(date(2026, 1, 5), "outlook.com", "soft-bounce", 1),
        EventTally(date(2026, 1, 5), "yahoo.com", "complaint", 1),
    ]

    def drop(n: int, kind: str, subject: str, at: datetime = T0) -> DuplicateDrop:
        return DuplicateDrop(DEALER, f"r{n}@gmail.com", f"S{n}", kind, "duplicate-message",
                             "drop", "S0.1", "again", at, subject=subject)  # fmt: skip

    drops = [drop(1, "exact", "Your test drive"), drop(2, "exact", "Your test drive"),
             drop(3, "near", "Spring offer"), drop(4, "cap", "Spring offer"),
             drop(5, "exact", "Your test drive", at=NEXT + timedelta(minutes=1))]  # fmt: skip
    assert await store.enqueue_claimed([], [], drops)
    assert await store.drop_tallies(DEALER, DAY, NEXT) == [
        DropTally("exact", "Your test drive", 2),
        DropTally("cap", "Spring offer", 1),
        DropTally("near", "Spring offer", 1),
    ]
    listed = await store.list_duplicate_drops(DEALER, limit=1)
    assert listed[0].subject == "Your test drive"
    assert await store.drop_tallies(DealerId("rival-motors"), DAY, NEXT) == []


async def test_a_period_is_claimed_once_across_nodes(backend: Backend) -> None:
    node_a, node_b = await backend.open(), await backend.open()
    results = await asyncio.gather(
        *(s.claim_report(DEALER, "day:2026-01-05", n, T0, LEASE)
          for s, n in ((node_a, "a"), (node_b, "b")) for _ in range(3))
    )  # fmt: skip
    assert sum(results) == 1
    claim = await node_a.get_report_claim(DEALER, "day:2026-01-05")
    assert claim is not None and claim.outcome == "" and claim.done_at is None
    winner = claim.node
    loser = "b" if winner == "a" else "a"
    # within the lease nobody else takes it; the loser cannot finish it
    assert not await node_b.claim_report(DEALER, "day:2026-01-05", loser, T0 + LEASE / 2, LEASE)
    assert not await node_b.finish_report(DEALER, "day:2026-01-05", loser, "sent", T0)
    assert await node_a.finish_report(DEALER, "day:2026-01-05", winner, "sent", T0)
    done = await node_b.get_report_claim(DEALER, "day:2026-01-05")
    assert done is not None and done.outcome == "sent" and done.done_at == T0
    # a finished period is never claimed again, however late
    assert not await node_b.claim_report(DEALER, "day:2026-01-05", loser, T0 + LEASE * 10, LEASE)
    # other periods and dealers are separate
    assert await node_b.claim_report(DEALER, "day:2026-01-06", loser, T0, LEASE)
    assert await node_b.claim_report(DealerId("rival-motors"), "day:2026-01-05", "b", T0, LEASE)


async def test_an_abandoned_claim_is_taken_over_after_its_lease(store: Storage) -> None:
    assert await store.claim_report(DEALER, "week:2026-W02", "dead", T0, LEASE)
    assert not await store.claim_report(DEALER, "week:2026-W02", "live", T0 + LEASE / 2, LEASE)
    assert await store.claim_report(DEALER, "week:2026-W02", "live", T0 + LEASE, LEASE)
    assert not await store.finish_report(DEALER, "week:2026-W02", "dead", "sent", T0 + LEASE)
    assert await store.finish_report(DEALER, "week:2026-W02", "live", "skipped", T0 + LEASE)
    claim = await store.get_report_claim(DEALER, "week:2026-W02")
    assert claim is not None and (claim.node, claim.outcome) == ("live", "skipped")
    assert await store.get_report_claim(DEALER, "week:2026-W03") is None


async def test_contacts_opt_out_and_back_in(store: Storage) -> None:
    assert await store.report_optouts(DEALER) == frozenset()
    assert await store.set_report_optout(DEALER, "GM@Example-Motors.test", True, T0)
    assert not await store.set_report_optout(DEALER, "gm@example-motors.test", True, T0)
    assert await store.report_optouts(DEALER) == frozenset({"gm@example-motors.test"})
    assert await store.report_optouts(DealerId("rival-motors")) == frozenset()
    assert await store.set_report_optout(DEALER, "gm@example-motors.test", False, T0)
    assert not await store.set_report_optout(DEALER, "gm@example-motors.test", False, T0)
    assert await store.report_optouts(DEALER) == frozenset()
