"""The dealer state machine at run time: evaluate, suspend, resume, expire.

``Suspensions`` owns every transition of a dealer's state (active → warned → suspended →
resumed). A transition is a compare-and-set in the store (``change_dealer_state``), so
when two nodes evaluate the same report only one makes the change and only that one
raises the alert: an alert is never repeated for the same state.

It also keeps the set of suspended dealers that the delivery worker reads on every claim
(``suspended()``, synchronous and cheap): refreshed from the store every few seconds
(so a suspension made on another node or by the CLI takes effect here) and at once after
a local transition. MAIL FROM does not use that cache: it asks the store (``status``),
so a suspension is refused from the next transaction on.

Automatic suspensions end by themselves at ``expires_at`` (``refresh`` resumes them);
an operator resumes earlier with ``mailgate dealers resume``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway.clock import Clock
from gateway.errors import StorageError
from gateway.metrics import Metrics
from gateway.policy.model import DEFAULT_BOUNCES, DEFAULT_COMPLAINTS, DealerPolicy
from gateway.policy.store import PolicyStore
from gateway.reputation.rates import (
    Metric,
    RateWindow,
    Suspend,
    evaluate,
    evidence,
    strictest,
    window_days,
    window_of,
)
from gateway.reputation.records import (
    Actor,
    DayCounts,
    DealerState,
    DealerStatus,
    StateChange,
    Suppression,
)
from gateway.storage.base import Storage
from gateway.types import DealerId

log = logging.getLogger("gateway.reputation")


class Notifier(Protocol):
    """Told about every transition that was made (alerts.py)."""

    async def on_change(self, change: StateChange, dealer: DealerPolicy | None) -> None:
        """React to ``change``; must not raise (failures are logged by the notifier)."""
        ...


@dataclass(frozen=True, slots=True)
class Windows:
    """A dealer's complaint and bounce windows at one moment."""

    complaints: RateWindow
    bounces: RateWindow


class Suspensions:
    """Evaluates rates after each event and makes the dealer state transitions."""

    def __init__(
        self,
        storage: Storage,
        policies: PolicyStore,
        clock: Clock,
        metrics: Metrics,
        notifier: Notifier | None = None,
    ) -> None:
        self._storage = storage
        self._policies = policies
        self._clock = clock
        self._metrics = metrics
        self._notifier = notifier
        self._suspended: frozenset[DealerId] = frozenset()
        self._locks: dict[DealerId, asyncio.Lock] = {}
        self._scopes: set[str] = set()

    # -- reads --------------------------------------------------------------------------

    def suspended(self) -> frozenset[DealerId]:
        """Dealers whose mail is held (the delivery worker's ``suspended`` callable)."""
        return self._suspended

    async def status(self, dealer_id: DealerId) -> DealerStatus | None:
        """The dealer's current state from the store (raises ``StorageError``)."""
        return await self._storage.get_dealer_status(dealer_id)

    async def suppression(self, dealer_id: DealerId, address: str) -> Suppression | None:
        """The active suppression of ``address`` for the dealer (raises ``StorageError``)."""
        return await self._storage.find_suppression(dealer_id, address, self._clock.now())

    async def windows(self, dealer_id: DealerId, status: DealerStatus | None = None) -> Windows:
        """The dealer's complaint and bounce windows now (since its last resume)."""
        dealer = self._policies.current.dealer(dealer_id)
        complaints = dealer.complaints if dealer else DEFAULT_COMPLAINTS
        bounces = dealer.bounces if dealer else DEFAULT_BOUNCES
        now = self._clock.now()
        longest = max(complaints.window, bounces.window)
        rows = await self._storage.daily_counts(dealer_id, *window_days(now, longest))
        return Windows(
            window_of(dealer_id, rows, *window_days(now, complaints.window), status),
            window_of(dealer_id, rows, *window_days(now, bounces.window), status),
        )

    # -- the background refresh ---------------------------------------------------------

    async def refresh(self) -> None:
        """Reload the suspended set and resume suspensions that have run out."""
        now = self._clock.now()
        statuses = await self._storage.list_dealer_statuses()
        for status in statuses:
            if status.suspended and status.expires_at is not None and status.expires_at <= now:
                await self.resume(
                    status.dealer_id,
                    f"the suspension ended at {status.expires_at:%Y-%m-%d %H:%M} UTC",
                    actor=Actor.AUTO,
                )
        statuses = await self._storage.list_dealer_statuses()
        self._suspended = frozenset(s.dealer_id for s in statuses if s.suspended)
        for status in statuses:
            self._show(status.dealer_id, status.state)

    async def count_suppressions(self) -> None:
        """Set the suppression-list size gauges from the store."""
        counts = await self._storage.count_suppressions(self._clock.now())
        for scope in self._scopes - counts.keys():
            self._metrics.suppressions.labels(scope).set(0)
        for scope, count in counts.items():
            self._metrics.suppressions.labels(scope).set(count)
        self._scopes = set(counts)

    async def run(self, interval: float, count_every: int = 15) -> None:
        """Refresh every ``interval`` seconds until cancelled; store failures are logged.

        The suppression gauges are recounted every ``count_every`` rounds (and after
        each report that suppressed someone, by the ingest).
        """
        rounds = 0
        while True:
            try:
                await self.refresh()
                if rounds % count_every == 0:
                    await self.count_suppressions()
            except StorageError as exc:
                log.warning("reputation: refresh failed, keeping the last known set: %s", exc)
            rounds += 1
            await asyncio.sleep(interval)

    # -- transitions --------------------------------------------------------------------

    async def evaluate(self, dealer_id: DealerId) -> StateChange | None:
        """Apply the dealer's thresholds to its windows; warn or suspend when crossed.

        Returns the transition made, or ``None``. A warned dealer is not warned again; a
        suspended one is not evaluated.
        """
        dealer = self._policies.current.dealer(dealer_id)
        if dealer is None:
            return None
        async with self._lock(dealer_id):
            status = await self._storage.get_dealer_status(dealer_id)
            current = status.state if status else DealerState.ACTIVE
            win = await self.windows(dealer_id, status)
            self._metrics.complaint_rate.labels(dealer_id).set(
                win.complaints.rate(Metric.COMPLAINTS)
            )
            self._metrics.bounce_rate.labels(dealer_id).set(win.bounces.rate(Metric.BOUNCES))
            action = strictest(
                evaluate(win.complaints, dealer.complaints, Metric.COMPLAINTS),
                evaluate(win.bounces, dealer.bounces, Metric.BOUNCES),
            )
            if action is None or current is DealerState.SUSPENDED:
                return None
            suspend = isinstance(action, Suspend)
            if not suspend and current is DealerState.WARNED:
                return None
            now = self._clock.now()
            limits = dealer.complaints if action.metric is Metric.COMPLAINTS else dealer.bounces
            change = StateChange(
                dealer_id=dealer_id,
                state=DealerState.SUSPENDED if suspend else DealerState.WARNED,
                previous=current,
                reason=action.describe(),
                actor=Actor.AUTO,
                at=now,
                evidence=evidence(action.window, dealer.complaints, dealer.bounces),
                expires_at=now + limits.suspend_for if suspend else None,
            )
            return await self._apply(change, dealer)

    async def suspend(
        self,
        dealer_id: DealerId,
        reason: str,
        *,
        by: str = "",
        expires_at: datetime | None = None,
        note: str = "",
    ) -> StateChange | None:
        """Suspend by hand (``None`` if already suspended). The evidence is the current window.

        ``reason`` is what the dealer is told; ``note`` is for operators only.
        """
        if not reason.strip():
            raise ValueError("a suspension needs a reason")
        dealer = self._policies.current.dealer(dealer_id)
        async with self._lock(dealer_id):
            status = await self._storage.get_dealer_status(dealer_id)
            current = status.state if status else DealerState.ACTIVE
            if current is DealerState.SUSPENDED:
                return None
            win = await self.windows(dealer_id, status)
            change = StateChange(
                dealer_id=dealer_id,
                state=DealerState.SUSPENDED,
                previous=current,
                reason=reason,
                actor=Actor.ADMIN,
                at=self._clock.now(),
                evidence=evidence(
                    win.complaints,
                    dealer.complaints if dealer else DEFAULT_COMPLAINTS,
                    dealer.bounces if dealer else DEFAULT_BOUNCES,
                ),
                expires_at=expires_at,
                by=by,
                note=note,
            )
            return await self._apply(change, dealer)

    async def resume(
        self,
        dealer_id: DealerId,
        reason: str,
        *,
        by: str = "",
        actor: Actor = Actor.ADMIN,
        note: str = "",
    ) -> StateChange | None:
        """End a suspension (``None`` if the dealer is not suspended).

        Counting restarts now: the day's counters at this moment become the baseline.
        ``reason`` is what the dealer is told; ``note`` is for operators only.
        """
        if not reason.strip():
            raise ValueError("a resume needs a reason")
        dealer = self._policies.current.dealer(dealer_id)
        async with self._lock(dealer_id):
            status = await self._storage.get_dealer_status(dealer_id)
            if status is None or not status.suspended:
                return None
            now = self._clock.now()
            today = await self._storage.daily_counts(dealer_id, now.date(), now.date())
            baseline = today[0].counts if today else DayCounts()
            win = await self.windows(dealer_id, status)
            change = StateChange(
                dealer_id=dealer_id,
                state=DealerState.RESUMED,
                previous=DealerState.SUSPENDED,
                reason=reason,
                actor=actor,
                at=now,
                evidence=evidence(
                    win.complaints,
                    dealer.complaints if dealer else DEFAULT_COMPLAINTS,
                    dealer.bounces if dealer else DEFAULT_BOUNCES,
                ),
                by=by,
                note=note,
            )
            return await self._apply(change, dealer, baseline)

    async def _apply(
        self, change: StateChange, dealer: DealerPolicy | None, baseline: DayCounts | None = None
    ) -> StateChange | None:
        recorded = await self._storage.change_dealer_state(change, baseline)
        if recorded is None:
            log.info(
                "dealer %s: %s -> %s not made, another node changed the state first",
                change.dealer_id,
                change.previous.value,
                change.state.value,
            )
            return None
        if recorded.state is DealerState.SUSPENDED:
            self._suspended = self._suspended | {recorded.dealer_id}
        else:
            self._suspended = self._suspended - {recorded.dealer_id}
        self._show(recorded.dealer_id, recorded.state)
        log.warning(
            "dealer %s: %s -> %s by %s%s: %s%s",
            recorded.dealer_id,
            recorded.previous.value,
            recorded.state.value,
            recorded.actor.value,
            f" ({recorded.by})" if recorded.by else "",
            recorded.reason,
            f" (note: {recorded.note})" if recorded.note else "",
            extra={"dealer_id": recorded.dealer_id},
        )
        if self._notifier is not None:
            await self._notifier.on_change(recorded, dealer)
        return recorded

    def _show(self, dealer_id: DealerId, state: DealerState) -> None:
        for each in DealerState:
            self._metrics.dealer_state.labels(dealer_id, each.value).set(1 if each is state else 0)
        self._metrics.dealer_suspended.labels(dealer_id).set(
            1 if state is DealerState.SUSPENDED else 0
        )

    def _lock(self, dealer_id: DealerId) -> asyncio.Lock:
        # Serialises this node's evaluations of one dealer; other nodes are fenced by the
        # store's compare-and-set.
        return self._locks.setdefault(dealer_id, asyncio.Lock())
