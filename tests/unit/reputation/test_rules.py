"""``reputation.rules``: opening or extending a suppression; the dealer-state compare-and-set."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gateway.reputation.records import (
    Actor,
    DayCounts,
    DealerState,
    DealerStatus,
    StateChange,
    Suppression,
    initial_status,
)
from gateway.reputation.rules import (
    ALLOWED,
    EXPIRED_BY,
    EXPIRED_REASON,
    SuppressionPlan,
    Transition,
    plan_suppression,
    plan_transition,
)
from gateway.types import DealerId

D = DealerId("example-motors")
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def open_entry(expires: datetime | None, reason: str = "soft bounces") -> Suppression:
    """An open entry as the store holds it (lower-case address, an id)."""
    return Suppression(D, "john@customer.test", reason, "s0.1", T0, expires, id=41)


def new_entry(
    expires: datetime | None, at: datetime = T0 + DAY, reason: str = "new"
) -> Suppression:
    return Suppression(D, "John@Customer.TEST", reason, "s9.1", at, expires)


# (id, the open entry or None, the new entry's expiry, what happens). What happens:
# "open" (a new entry), "extend" (the open one takes the new expiry, reason and source) or
# "keep" (nothing changes), with a leading "close+" when the open entry ran out first.
# The new entry comes at T0 + 1 day.
SUPPRESSION_CASES = [
    ("nothing open: a temporary entry opens", None, T0 + 9 * DAY, "open"),
    ("nothing open: a permanent entry opens", None, None, "open"),
    ("permanent stands against permanent", open_entry(None), None, "keep"),
    ("permanent stands against temporary", open_entry(None), T0 + 99 * DAY, "keep"),
    ("temporary is extended by a later end", open_entry(T0 + 7 * DAY), T0 + 9 * DAY, "extend"),
    ("temporary is extended by a permanent one", open_entry(T0 + 7 * DAY), None, "extend"),
    ("temporary stands against an earlier end", open_entry(T0 + 7 * DAY), T0 + 3 * DAY, "keep"),
    ("temporary stands against the same end", open_entry(T0 + 7 * DAY), T0 + 7 * DAY, "keep"),
    ("ran out just now: closed, then a new one", open_entry(T0 + DAY), T0 + 3 * DAY, "close+open"),
    ("ran out before: closed, then a permanent one", open_entry(T0 + HOUR), None, "close+open"),
    ("runs out a moment later: extended", open_entry(T0 + DAY + HOUR), T0 + 3 * DAY, "extend"),
    ("runs out a moment later: kept", open_entry(T0 + DAY + HOUR), T0 + DAY, "keep"),
]


@pytest.mark.parametrize(
    ("current", "new_expires", "outcome"),
    [pytest.param(c, n, w, id=i) for i, c, n, w in SUPPRESSION_CASES],
)
def test_plan_suppression(
    current: Suppression | None, new_expires: datetime | None, outcome: str
) -> None:
    entry = new_entry(new_expires)
    plan = plan_suppression(current, entry)
    closes, _, what = outcome.rpartition("+")
    if closes:
        assert current is not None and current.expires_at is not None
        assert plan.closed == replace(
            current, lifted_at=current.expires_at, lifted_by=EXPIRED_BY, lift_reason=EXPIRED_REASON
        )
    else:
        assert plan.closed is None
    if what == "open":
        assert plan.opened == Suppression(
            D, "john@customer.test", "new", "s9.1", entry.created_at, new_expires
        )
        assert plan.extended is None and plan.changed
    elif what == "extend":
        assert current is not None
        assert plan.extended == replace(
            current, expires_at=new_expires, reason="new", source="s9.1"
        )
        assert plan.extended.id == 41 and plan.extended.created_at == T0
        assert plan.opened is None and plan.changed
    else:
        assert plan == SuppressionPlan() and not plan.changed


def test_a_global_entry_is_planned_on_its_own_list() -> None:
    entry = Suppression(None, "X@Y.test", "manual", "admin", T0)
    plan = plan_suppression(None, entry)
    assert plan.opened is not None and plan.opened.dealer_id is None
    assert plan.opened.address == "x@y.test"
    # An empty dealer id is the global list too, as the stores keep it.
    stored = replace(plan.opened, id=5)
    again = Suppression(DealerId(""), "x@y.test", "manual", "admin", T0)
    assert plan_suppression(stored, again) == SuppressionPlan()


@pytest.mark.parametrize(
    "current",
    [
        pytest.param(replace(open_entry(None), lifted_at=T0 + HOUR), id="lifted"),
        pytest.param(replace(open_entry(None), dealer_id=None), id="other-list"),
        pytest.param(replace(open_entry(None), address="jane@customer.test"), id="other-address"),
    ],
)
def test_plan_suppression_refuses_a_row_that_is_not_the_open_entry(current: Suppression) -> None:
    with pytest.raises(ValueError):
        plan_suppression(current, new_entry(None))


def change(state: DealerState, previous: DealerState, at: datetime = T0 + DAY) -> StateChange:
    return StateChange(
        dealer_id=D,
        state=state,
        previous=previous,
        reason="rate",
        actor=Actor.AUTO,
        at=at,
        expires_at=at + 72 * HOUR if state is DealerState.SUSPENDED else None,
        id=99,  # whatever the caller set: the store numbers the row
    )


def status(state: DealerState) -> DealerStatus:
    return DealerStatus(
        D, state, "earlier", Actor.ADMIN, T0, counts_from=T0 - DAY, baseline=DayCounts(sent=4)
    )


A, W, S, R = DealerState.ACTIVE, DealerState.WARNED, DealerState.SUSPENDED, DealerState.RESUMED
EVERY_PAIR = [(p, s) for p in DealerState for s in DealerState]
MACHINE = {(A, W), (A, S), (W, S), (S, R), (R, W), (R, S)}


def test_the_machine_is_the_documented_one() -> None:
    assert {(p, s) for p in ALLOWED for s in ALLOWED[p]} == MACHINE


@pytest.mark.parametrize(
    ("previous", "state"),
    [
        pytest.param(p, s, id=f"{p.value}->{s.value}")
        for p, s in EVERY_PAIR
        if (p, s) not in MACHINE
    ],
)
def test_a_transition_outside_the_machine_is_refused(
    previous: DealerState, state: DealerState
) -> None:
    with pytest.raises(ValueError, match="no transition"):
        plan_transition(status(previous), change(state, previous))


# (id, recorded state or None for none recorded, change previous -> state, applies?)
CAS_CASES = [
    ("first warning of a dealer never seen", None, A, W, True),
    ("first suspension of a dealer never seen", None, A, S, True),
    ("a dealer never seen is not warned", None, W, S, False),
    ("warned is suspended", W, W, S, True),
    ("warned again: the state moved on", W, A, W, False),
    ("suspended is resumed", S, S, R, True),
    ("resumed twice: the state moved on", R, S, R, False),
    ("resumed is warned", R, R, W, True),
    ("resumed is suspended", R, R, S, True),
    ("suspended meanwhile by another node", S, W, S, False),
]


@pytest.mark.parametrize(
    ("recorded", "previous", "state", "applies"),
    [pytest.param(r, p, s, ok, id=i) for i, r, p, s, ok in CAS_CASES],
)
def test_plan_transition_compare_and_set(
    recorded: DealerState | None, previous: DealerState, state: DealerState, applies: bool
) -> None:
    current = None if recorded is None else status(recorded)
    wanted = change(state, previous)
    plan = plan_transition(current, wanted, DayCounts(complaints=3))
    if not applies:
        assert plan is None
        return
    assert plan is not None
    assert plan.first is (current is None)
    assert plan.change == replace(wanted, id=0)
    before = current or initial_status(D, wanted.at)
    assert plan.status.state is state and plan.status.since == wanted.at
    assert plan.status.reason == "rate" and plan.status.actor is Actor.AUTO
    assert plan.status.expires_at == wanted.expires_at
    if state is R:  # counting restarts at the resume, from the day's counters then
        assert plan.status.counts_from == wanted.at
        assert plan.status.baseline == DayCounts(complaints=3)
    else:
        assert plan.status.counts_from == before.counts_from
        assert plan.status.baseline == before.baseline


def test_numbering_sets_the_history_id_on_both_rows() -> None:
    plan = plan_transition(None, change(W, A))
    assert plan is not None and plan.change.id == 0 and plan.status.change_id == 0
    numbered = plan.numbered(7)
    assert numbered == Transition(
        replace(plan.change, id=7), replace(plan.status, change_id=7), first=True
    )


def test_plan_transition_refuses_another_dealers_status() -> None:
    with pytest.raises(ValueError):
        plan_transition(replace(status(A), dealer_id=DealerId("rival-motors")), change(W, A))
