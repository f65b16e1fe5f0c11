"""What the store writes when a suppression is added or a dealer's state moves (pure).

This module owns two rules that every storage backend applies inside one transaction:

* ``plan_suppression``: a list (one dealer's, or the global one) holds at most one open
  entry per address. What adding an entry does depends on that open entry: an entry that
  has run out is closed as expired first; then the new one is opened, or the open one is
  extended, or nothing changes.
* ``plan_transition``: the dealer state machine (``ALLOWED``) and its compare-and-set. A
  change applies only while the dealer is still in ``change.previous``, so two nodes that
  evaluate the same report make one transition (and send one alert), not two.

Theory of operation
-------------------
A backend reads the current row under its own lock (SQLite: the ``BEGIN IMMEDIATE`` write
transaction; PostgreSQL: ``SELECT … FOR UPDATE``), passes it here, and writes what comes
back in the same transaction: the read-modify-write is atomic in SQL, the decision is
made here once for both backends. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from gateway.mail.addresses import normalise
from gateway.reputation.records import (
    DayCounts,
    DealerState,
    DealerStatus,
    StateChange,
    Suppression,
    initial_status,
)

# How an entry that ran out is closed: lifted at its own expiry, by "expiry", for this reason.
EXPIRED_BY = "expiry"
EXPIRED_REASON = "expired"


@dataclass(frozen=True, slots=True)
class SuppressionPlan:
    """What adding one suppression writes.

    ``closed`` is the open entry, closed because it had run out when the new one came
    (``lifted_at`` is its own expiry); ``None`` when nothing ran out. ``opened`` is a new
    open entry to insert (its ``id`` is 0 until the store assigns one); ``extended`` is the
    open entry with the new expiry, reason and source, to update in place. At most one of
    ``opened`` and ``extended`` is set; neither when the open entry already covers the new
    one.
    """

    closed: Suppression | None = None
    opened: Suppression | None = None
    extended: Suppression | None = None

    @property
    def changed(self) -> bool:
        """True when an entry was opened or extended (what ``add_suppression`` returns)."""
        return self.opened is not None or self.extended is not None


def plan_suppression(current: Suppression | None, entry: Suppression) -> SuppressionPlan:
    """What adding ``entry`` does, given ``current``, the open entry of its list and address.

    ``current`` is the entry of the same list (``dealer_id``) and address that is not
    lifted, or ``None`` when there is none; ``entry.created_at`` is the time of the call.

    1. An open entry that expires at or before ``entry.created_at`` is closed as expired,
       and the rest goes on as if there were none.
    2. With no open entry, ``entry`` is opened (its address in the normal form of
       ``mail.addresses.normalise``, never lifted).
    3. A temporary open entry is extended when ``entry`` ends later or never: it takes
       ``entry``'s expiry, reason and source, and keeps its id and creation time.
    4. Otherwise (a permanent open entry, or one that lasts at least as long) nothing
       changes: the earlier reason stands.

    Raises ``ValueError`` when ``current`` is lifted or belongs to another list or address.
    """
    address = normalise(entry.address)
    closed: Suppression | None = None
    if current is not None:
        if current.lifted_at is not None:
            raise ValueError(f"suppression {current.id} is lifted, not open")
        # An empty dealer id names the global list, as None does (the stores keep it as "").
        same_list = (current.dealer_id or None) == (entry.dealer_id or None)
        if not same_list or normalise(current.address) != address:
            raise ValueError(
                f"suppression {current.id} is for {current.scope} {current.address},"
                f" not {entry.scope} {entry.address}"
            )
        if current.expires_at is not None and current.expires_at <= entry.created_at:
            closed = replace(
                current,
                lifted_at=current.expires_at,
                lifted_by=EXPIRED_BY,
                lift_reason=EXPIRED_REASON,
            )
            current = None
    if current is None:
        opened = Suppression(
            dealer_id=entry.dealer_id or None,
            address=address,
            reason=entry.reason,
            source=entry.source,
            created_at=entry.created_at,
            expires_at=entry.expires_at,
        )
        return SuppressionPlan(closed=closed, opened=opened)
    if current.expires_at is not None and (
        entry.expires_at is None or entry.expires_at > current.expires_at
    ):
        extended = replace(
            current, expires_at=entry.expires_at, reason=entry.reason, source=entry.source
        )
        return SuppressionPlan(extended=extended)
    return SuppressionPlan()


# The dealer state machine: from each state, the states a change may lead to. ACTIVE is
# only where a dealer starts, nothing leads back to it; a warned dealer can only be
# suspended; only a suspension is resumed (by an operator, or by itself at its expiry);
# a resumed dealer is watched again like an active one.
ALLOWED: Mapping[DealerState, frozenset[DealerState]] = MappingProxyType(
    {
        DealerState.ACTIVE: frozenset({DealerState.WARNED, DealerState.SUSPENDED}),
        DealerState.WARNED: frozenset({DealerState.SUSPENDED}),
        DealerState.SUSPENDED: frozenset({DealerState.RESUMED}),
        DealerState.RESUMED: frozenset({DealerState.WARNED, DealerState.SUSPENDED}),
    }
)


@dataclass(frozen=True, slots=True)
class Transition:
    """What one dealer-state change writes: a history row and the new current status.

    ``first`` is True when the dealer had no recorded status (the store inserts the
    status row instead of updating it). ``change.id`` and ``status.change_id`` are 0 until
    the store has numbered the history row (``numbered``).
    """

    change: StateChange
    status: DealerStatus
    first: bool

    def numbered(self, change_id: int) -> Transition:
        """The same transition once the store gave its history row ``change_id``."""
        return Transition(
            change=replace(self.change, id=change_id),
            status=replace(self.status, change_id=change_id),
            first=self.first,
        )


def plan_transition(
    current: DealerStatus | None, change: StateChange, baseline: DayCounts | None = None
) -> Transition | None:
    """Apply ``change`` to the dealer's ``current`` status (``None``: nothing recorded yet).

    A dealer without a recorded status is ``ACTIVE``. Returns ``None`` when the dealer is
    no longer in ``change.previous`` (another node or an operator moved it first: nothing
    is to be written). ``baseline`` (on resume) is the day's counters at that moment,
    from which the rates count again.

    Raises ``ValueError`` for a change the state machine does not have (``ALLOWED``) or a
    ``current`` status of another dealer.
    """
    if change.state not in ALLOWED[change.previous]:
        raise ValueError(
            f"dealer {change.dealer_id}: no transition from {change.previous.value}"
            f" to {change.state.value}"
        )
    if current is not None and current.dealer_id != change.dealer_id:
        raise ValueError(f"status of {current.dealer_id} given for {change.dealer_id}")
    before = current or initial_status(change.dealer_id, change.at)
    if before.state is not change.previous:
        return None
    recorded = replace(change, id=0)
    return Transition(recorded, before.after(recorded, baseline), first=current is None)
