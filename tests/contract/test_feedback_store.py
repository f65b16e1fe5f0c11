"""The feedback part of the storage contract: events, suppressions, counters, dealer state."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import pytest

from gateway.reputation.records import (
    Actor,
    DayCounts,
    DealerState,
    EventKind,
    Evidence,
    FeedbackEvent,
    StateChange,
    Suppression,
)
from gateway.storage.base import Storage
from gateway.types import DealerId, MessageId
from tests.contract.conftest import Backend

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DEALER = DealerId("example-motors")
OTHER = DealerId("rival-motors")


def event(
    mid: str = "s1.1",
    rcpt: str = "john@customer.test",
    kind: EventKind = EventKind.COMPLAINT,
    at: datetime = T0,
    dealer: DealerId = DEALER,
) -> FeedbackEvent:
    return FeedbackEvent(dealer, kind, MessageId(mid), rcpt, at, "abuse", "Your deal", "smtp")


def entry(
    address: str = "john@customer.test",
    dealer: DealerId | None = DEALER,
    at: datetime = T0,
    expires: datetime | None = None,
    reason: str = "spam complaint",
) -> Suppression:
    return Suppression(dealer, address, reason, "s1.1", at, expires)


async def test_a_replayed_event_is_recorded_and_counted_once(store: Storage) -> None:
    first = await store.record_feedback(event(), entry())
    again = [await store.record_feedback(event(), entry()) for _ in range(4)]
    assert first is True and again == [False] * 4
    rows = await store.daily_counts(DEALER, T0.date(), T0.date())
    assert [r.counts for r in rows] == [DayCounts(complaints=1)]
    listed = await store.list_suppressions(DEALER)
    assert len(listed) == 1


async def test_the_replay_key_is_message_kind_and_recipient(store: Storage) -> None:
    assert await store.record_feedback(event(kind=EventKind.SOFT_BOUNCE))
    assert await store.record_feedback(event(kind=EventKind.HARD_BOUNCE))
    assert await store.record_feedback(event(mid="s1.2", kind=EventKind.SOFT_BOUNCE))
    assert await store.record_feedback(event(kind=EventKind.UNSUBSCRIBE))
    (row,) = await store.daily_counts(DEALER, T0.date(), T0.date())
    assert row.counts == DayCounts(hard_bounces=1, soft_bounces=2)


async def test_count_and_recent_events(store: Storage) -> None:
    for n in range(3):
        await store.record_feedback(
            event(f"s{n}.1", kind=EventKind.SOFT_BOUNCE, at=T0 + timedelta(days=n))
        )
    await store.record_feedback(event("c.1", at=T0 + timedelta(hours=1)))
    count = await store.count_events(DEALER, "john@customer.test", EventKind.SOFT_BOUNCE, T0)
    assert count == 3
    later = T0 + timedelta(days=1)
    assert await store.count_events(DEALER, "john@customer.test", EventKind.SOFT_BOUNCE, later) == 2
    recent = await store.recent_events(DEALER, frozenset({EventKind.COMPLAINT}), T0)
    assert [e.message_id for e in recent] == ["c.1"]
    assert recent[0].subject == "Your deal"
    both = await store.recent_events(
        DEALER, frozenset({EventKind.COMPLAINT, EventKind.SOFT_BOUNCE}), T0, limit=2
    )
    assert [e.message_id for e in both] == ["s2.1", "s1.1"]


async def test_suppression_per_dealer_and_global(store: Storage) -> None:
    assert await store.add_suppression(entry())
    assert not await store.add_suppression(entry())  # already active
    found = await store.find_suppression(DEALER, "John@Customer.test", T0)
    assert found is not None and found.reason == "spam complaint" and found.scope == DEALER
    assert await store.find_suppression(OTHER, "john@customer.test", T0) is None
    assert await store.add_suppression(entry("gone@customer.test", dealer=None, reason="manual"))
    hit = await store.find_suppression(OTHER, "gone@customer.test", T0)
    assert hit is not None and hit.dealer_id is None and hit.scope == "*"
    assert await store.count_suppressions(T0) == {DEALER: 1, "*": 1}


async def test_dealer_entry_is_preferred_over_global(store: Storage) -> None:
    await store.add_suppression(entry(dealer=None, reason="global"))
    await store.add_suppression(entry(reason="own"))
    found = await store.find_suppression(DEALER, "john@customer.test", T0)
    assert found is not None and found.reason == "own"


async def test_lifting_is_audited_and_keeps_the_row(store: Storage) -> None:
    await store.add_suppression(entry())
    later = T0 + timedelta(hours=2)
    assert await store.lift_suppression(DEALER, "john@customer.test", "ops", "by phone", later)
    assert not await store.lift_suppression(DEALER, "john@customer.test", "ops", "again", later)
    assert await store.find_suppression(DEALER, "john@customer.test", later) is None
    (row,) = await store.list_suppressions(DEALER)
    assert row.lifted_at == later and row.lifted_by == "ops" and row.lift_reason == "by phone"
    assert await store.list_suppressions(DEALER, active_at=later) == []
    # A new complaint suppresses again, as a new row.
    assert await store.add_suppression(entry(at=later))
    assert len(await store.list_suppressions(DEALER)) == 2


async def test_temporary_entries_expire_and_are_extended(store: Storage) -> None:
    end = T0 + timedelta(days=7)
    await store.add_suppression(entry(expires=end, reason="soft bounces"))
    assert await store.find_suppression(DEALER, "john@customer.test", end - timedelta(seconds=1))
    assert await store.find_suppression(DEALER, "john@customer.test", end) is None
    # Extended by a longer (here: permanent) entry while active.
    assert await store.add_suppression(entry(at=T0 + timedelta(days=1), reason="hard bounce"))
    found = await store.find_suppression(DEALER, "john@customer.test", end + timedelta(days=30))
    assert found is not None and found.expires_at is None and found.reason == "hard bounce"


async def test_an_expired_entry_is_closed_when_a_new_one_comes(store: Storage) -> None:
    end = T0 + timedelta(days=7)
    await store.add_suppression(entry(expires=end))
    assert await store.add_suppression(entry(at=end + timedelta(days=1)))
    rows = await store.list_suppressions(DEALER)
    assert [r.lifted_by for r in rows] == ["expiry", ""]


async def test_concurrent_suppressions_from_two_nodes_leave_one_open_entry(
    backend: Backend,
) -> None:
    nodes = [await backend.open(), await backend.open()]
    addresses = [f"r{n}@customer.test" for n in range(12)]
    calls = []
    for n, address in enumerate(addresses):
        soft = entry(address, expires=T0 + timedelta(days=n + 1), reason="soft bounces")
        hard = entry(address, reason="hard bounce")
        # Both nodes find no entry and race to open one; half the time the temporary one
        # is asked for first.
        pair = [nodes[0].add_suppression(soft), nodes[1].add_suppression(hard)]
        calls.extend(pair if n % 2 else pair[::-1])
    results = await asyncio.gather(*calls)
    assert results.count(True) >= len(addresses)
    # Whatever the order, the permanent entry ends up open: it extends a temporary one,
    # and a temporary one coming after it changes nothing.
    rows = await nodes[0].list_suppressions(DEALER)
    assert sorted(r.address for r in rows) == sorted(addresses)
    for row in rows:
        assert row.lifted_at is None and row.expires_at is None and row.reason == "hard bounce"


async def test_list_pages_by_id_and_filters(store: Storage) -> None:
    for n in range(5):
        await store.add_suppression(entry(f"a{n}@customer.test"))
    await store.add_suppression(entry("g@customer.test", dealer=None))
    page = await store.list_suppressions(DEALER, limit=2)
    rest = await store.list_suppressions(DEALER, after_id=page[-1].id)
    assert [r.address for r in page + rest] == [f"a{n}@customer.test" for n in range(5)]
    assert [r.address for r in await store.list_suppressions(global_only=True)] == [
        "g@customer.test"
    ]
    assert len(await store.list_suppressions()) == 6


async def test_daily_counters_add_up(store: Storage) -> None:
    day = date(2026, 1, 5)
    await store.add_counts(DEALER, day, DayCounts(sent=1, delivered=1))
    await store.add_counts(DEALER, day, DayCounts(sent=1))
    await store.add_counts(DEALER, day + timedelta(days=1), DayCounts(sent=3, delivered=3))
    await store.add_counts(OTHER, day, DayCounts(sent=9))
    rows = await store.daily_counts(DEALER, day, day + timedelta(days=1))
    assert [(r.day, r.counts) for r in rows] == [
        (day, DayCounts(sent=2, delivered=1)),
        (day + timedelta(days=1), DayCounts(sent=3, delivered=3)),
    ]
    assert await store.daily_counts(DEALER, day + timedelta(days=2), day + timedelta(days=9)) == []


def change(
    state: DealerState, previous: DealerState, at: datetime = T0, reason: str = "rate"
) -> StateChange:
    return StateChange(
        dealer_id=DEALER,
        state=state,
        previous=previous,
        reason=reason,
        actor=Actor.AUTO,
        at=at,
        evidence=Evidence(T0.date(), T0.date(), DayCounts(delivered=5000, complaints=10)),
        expires_at=at + timedelta(hours=72) if state is DealerState.SUSPENDED else None,
    )


async def test_dealer_state_machine_with_history(store: Storage) -> None:
    assert await store.get_dealer_status(DEALER) is None
    warned = await store.change_dealer_state(change(DealerState.WARNED, DealerState.ACTIVE))
    assert warned is not None and warned.id > 0
    # Compare-and-set: a change from a state the dealer is no longer in does nothing.
    assert await store.change_dealer_state(change(DealerState.WARNED, DealerState.ACTIVE)) is None
    t1 = T0 + timedelta(hours=1)
    suspended = await store.change_dealer_state(
        change(DealerState.SUSPENDED, DealerState.WARNED, t1)
    )
    assert suspended is not None
    status = await store.get_dealer_status(DEALER)
    assert status is not None and status.suspended and status.change_id == suspended.id
    assert status.expires_at == t1 + timedelta(hours=72)
    t2 = T0 + timedelta(hours=2)
    resumed = await store.change_dealer_state(
        change(DealerState.RESUMED, DealerState.SUSPENDED, t2, "fixed"), DayCounts(complaints=10)
    )
    assert resumed is not None
    status = await store.get_dealer_status(DEALER)
    assert status is not None and status.state is DealerState.RESUMED
    assert status.counts_from == t2 and status.baseline == DayCounts(complaints=10)
    history = await store.dealer_history(DEALER)
    assert [h.state for h in history] == [
        DealerState.RESUMED,
        DealerState.SUSPENDED,
        DealerState.WARNED,
    ]
    assert history[1].evidence.counts == DayCounts(delivered=5000, complaints=10)
    assert [s.dealer_id for s in await store.list_dealer_statuses()] == [DEALER]


async def test_the_internal_note_is_kept_apart_from_the_reason(store: Storage) -> None:
    from dataclasses import replace

    manual = replace(
        change(DealerState.SUSPENDED, DealerState.ACTIVE, reason="Paused: purchased list"),
        actor=Actor.ADMIN,
        by="ops-jane",
        note="ticket 4411; call Bob first",
    )
    recorded = await store.change_dealer_state(manual)
    assert recorded is not None and recorded.note == "ticket 4411; call Bob first"
    status = await store.get_dealer_status(DEALER)
    assert status is not None and status.reason == "Paused: purchased list"
    (shown,) = await store.dealer_history(DEALER)
    assert (shown.reason, shown.by, shown.note) == (
        "Paused: purchased list",
        "ops-jane",
        "ticket 4411; call Bob first",
    )


async def test_concurrent_transitions_make_one_change(store: Storage) -> None:
    results = await asyncio.gather(
        *(
            store.change_dealer_state(change(DealerState.SUSPENDED, DealerState.ACTIVE))
            for _ in range(5)
        )
    )
    assert sum(r is not None for r in results) == 1
    assert len(await store.dealer_history(DEALER)) == 1


async def test_a_transition_outside_the_machine_is_refused(store: Storage) -> None:
    with pytest.raises(ValueError, match="no transition"):
        await store.change_dealer_state(change(DealerState.RESUMED, DealerState.ACTIVE))
    assert await store.get_dealer_status(DEALER) is None
    assert await store.dealer_history(DEALER) == []


async def test_complete_counts_dealer_messages_once(store: Storage) -> None:
    from gateway.types import NewMessage, OutcomeKind, RcptOutcome

    def new(mid: str, system: bool = False) -> NewMessage:
        return NewMessage(
            MessageId(mid), DEALER, "s@example-motors.test", "r@x.example", b"x", T0,
            system=system,
        )  # fmt: skip

    await store.enqueue([new("m.1"), new("m.2"), new("m.3", system=True)])
    claimed = await store.claim("n1", 10, T0, timedelta(minutes=5))
    assert len(claimed) == 3
    ok = RcptOutcome(OutcomeKind.DELIVERED, 250, "2.0.0", "ok")
    failed = RcptOutcome(OutcomeKind.FAILED, 550, "5.1.1", "unknown")
    assert await store.complete(MessageId("m.1"), "n1", ok, T0)
    assert not await store.complete(MessageId("m.1"), "n1", ok, T0)  # fenced: no lease
    assert await store.complete(MessageId("m.2"), "n1", failed, T0)
    assert await store.complete(MessageId("m.3"), "n1", ok, T0)  # a system message
    (row,) = await store.daily_counts(DEALER, T0.date(), T0.date())
    assert row.counts == DayCounts(sent=2, delivered=1)
