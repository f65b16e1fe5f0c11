"""The operations behind the admin API: dealers, suppressions, held mail, queue, policies.

``AdminOps`` is the one place operator actions are carried out. The API's handlers
(``admin/handlers.py``) only translate requests in and records out; ``mailgate admin``
reaches these through the API, and the offline commands (``mailgate dealers``,
``suppress``, ``held``, ``queue ls``) call the same operations on an ``AdminOps`` built
over the store (``gateway.app.offline_admin``) when no gateway runs. Every operation
validates its input and raises an ``AdminError`` (``NotFound``, ``InvalidRequest``,
``Conflict``) whose ``status`` the API answers with and the CLI turns into its exit code;
store failures stay ``StorageError`` (503). Every change is logged with who made it (the
token's name or ``by``; offline, the operator's name).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from gateway.clock import Clock
from gateway.errors import GatewayError, StorageError
from gateway.intake.backpressure import SpoolGuard
from gateway.mail import addresses
from gateway.metrics import Metrics
from gateway.policy.model import DealerPolicy, RateThresholds
from gateway.policy.store import PolicyStore, ReloadResult
from gateway.reputation.rates import (
    Metric,
    RateAction,
    RateWindow,
    Suspend,
    Warn,
    evaluate,
    has_volume,
    window_days,
)
from gateway.reputation.records import (
    GLOBAL,
    DailyCounts,
    DealerState,
    DealerStatus,
    EventKind,
    FeedbackEvent,
    StateChange,
    Suppression,
)
from gateway.reputation.suspensions import Suspensions
from gateway.storage.base import Storage
from gateway.types import DealerId, MessageId, MessageState, QueuedMessage, QueueStats

log = logging.getLogger("gateway.admin")

GAUGE_INTERVAL = 15.0  # seconds between recomputations of store-derived gauges at scrapes
HELD_COUNT_SCAN = 10_000
MAX_LIMIT = 1000
MAX_IMPORT = 10_000  # entries per import request; the CLI sends larger files in batches
SEARCH_SCAN = 100_000  # suppression entries scanned at most by one substring search


class AdminError(GatewayError):
    """An operation cannot be done as asked; the message says why and what to do."""

    status = 400


class InvalidRequest(AdminError):
    """The request is malformed or a value is out of range."""

    status = 400


class NotFound(AdminError):
    """The dealer, message or entry does not exist."""

    status = 404


class Conflict(AdminError):
    """The object is not in a state that allows the operation."""

    status = 409


@dataclass(frozen=True, slots=True)
class RateReport:
    """One rate of a dealer against its thresholds."""

    metric: Metric
    window: RateWindow
    thresholds: RateThresholds

    @property
    def rate(self) -> float:
        """Events over volume, 0.0 without volume."""
        return self.window.rate(self.metric)

    @property
    def decision(self) -> RateAction | None:
        """What ``rates.evaluate`` decides on this rate: the one place thresholds are applied."""
        return evaluate(self.window, self.thresholds, self.metric)

    @property
    def level(self) -> str:
        """``suspend`` or ``warn`` as ``decision`` says; else ``ok``, or ``low-volume``.

        ``low-volume``: the window is below the policy's minimum volume, so no decision is
        made however high the rate is.
        """
        decision = self.decision
        if isinstance(decision, Suspend):
            return "suspend"
        if isinstance(decision, Warn):
            return "warn"
        return "ok" if has_volume(self.window, self.thresholds, self.metric) else "low-volume"


@dataclass(frozen=True, slots=True)
class DealerReport:
    """What the API shows about one dealer."""

    policy: DealerPolicy
    status: DealerStatus | None
    complaints: RateReport
    bounces: RateReport
    today: DailyCounts | None
    history: tuple[StateChange, ...]

    @property
    def state(self) -> DealerState:
        """The current state (``active`` when nothing was ever recorded)."""
        return self.status.state if self.status else DealerState.ACTIVE


@dataclass(frozen=True, slots=True)
class Health:
    """The gateway's view of itself."""

    node: str
    storage_error: str
    spool_full: bool
    dealers: int
    stats: QueueStats | None

    @property
    def ok(self) -> bool:
        """True when the store answers and the spool takes mail."""
        return not self.storage_error and not self.spool_full


@dataclass(frozen=True, slots=True)
class SuppressOutcome:
    """What adding one address did: ``suppressed``, ``already`` or ``invalid``."""

    address: str
    result: str


@dataclass(frozen=True, slots=True)
class ImportResult:
    """Counts of one import batch."""

    added: int
    skipped: int
    invalid: int


def check_note(note: str | None) -> str:
    """An operator's internal note, stripped (may be empty); ``InvalidRequest`` when too long."""
    text = (note or "").strip()
    if len(text) > 1000:
        raise InvalidRequest("note: at most 1000 characters")
    return text


def check_reason(reason: str | None, what: str) -> str:
    """``reason`` stripped; raises ``InvalidRequest`` when it is missing."""
    text = (reason or "").strip()
    if not text:
        raise InvalidRequest(f"{what} needs a reason: give a non-empty 'reason'")
    if len(text) > 500:
        raise InvalidRequest("reason: at most 500 characters")
    return text


def check_limit(limit: int) -> int:
    """``limit`` if it is within 1..MAX_LIMIT."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


class AdminOps:
    """Runtime operator actions over the running gateway's components."""

    def __init__(
        self,
        *,
        storage: Storage,
        policies: PolicyStore,
        suspensions: Suspensions,
        clock: Clock,
        node: str,
        guard: SpoolGuard | None = None,
        wake_delivery: Callable[[], None] | None = None,
        on_policies: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
        status_link: Callable[[str], str] | None = None,
    ) -> None:
        self.storage = storage
        self.policies = policies
        self.suspensions = suspensions
        self.clock = clock
        self.node = node
        self._guard = guard
        self._wake = wake_delivery
        self._on_policies = on_policies
        self._reload_lock = asyncio.Lock()
        self._metrics = metrics
        self._status_link = status_link
        self._refreshed = -GAUGE_INTERVAL

    # -- health --------------------------------------------------------------------------

    async def health(self) -> Health:
        """Whether the store answers, the spool takes mail, and the queue counts."""
        error, stats = "", None
        try:
            await self.storage.ping()
            stats = await self.storage.stats()
        except StorageError as exc:
            error = str(exc) or type(exc).__name__
        return Health(
            node=self.node,
            storage_error=error,
            spool_full=self._guard.full() if self._guard else False,
            dealers=len(self.policies.current.dealers),
            stats=stats,
        )

    async def refresh_gauges(self) -> None:
        """Recompute the store-derived gauges (rates, thresholds, held counts); never raises.

        Called before each ``/metrics`` scrape and throttled to once per
        ``GAUGE_INTERVAL``: the rates also move when nothing is reported (days leave the
        window, messages are delivered), so the gauges set after each report are not enough.
        """
        metrics = self._metrics
        started = time.monotonic()
        if metrics is None or started - self._refreshed < GAUGE_INTERVAL:
            return
        self._refreshed = started
        try:
            reports = await self.dealers()
            held = await self.storage.list_messages(MessageState.HELD, limit=HELD_COUNT_SCAN)
        except StorageError as exc:
            log.warning("metrics: could not refresh dealer gauges: %s", exc)
            return
        held_by = collections.Counter(m.dealer_id for m in held)
        for report in reports:
            dealer = report.policy.dealer_id
            for rate, gauge in (
                (report.complaints, metrics.complaint_rate_threshold),
                (report.bounces, metrics.bounce_rate_threshold),
            ):
                gauge.labels(dealer, "warn").set(rate.thresholds.warn_rate)
                gauge.labels(dealer, "suspend").set(rate.thresholds.suspend_rate)
                name = rate.metric.value
                metrics.rate_volume.labels(dealer, name).set(rate.window.volume(rate.metric))
                metrics.rate_min_volume.labels(dealer, name).set(rate.thresholds.min_volume)
            metrics.complaint_rate.labels(dealer).set(report.complaints.rate)
            metrics.bounce_rate.labels(dealer).set(report.bounces.rate)
            for state in DealerState:
                metrics.dealer_state.labels(dealer, state.value).set(
                    1 if state is report.state else 0
                )
            metrics.dealer_suspended.labels(dealer).set(
                1 if report.state is DealerState.SUSPENDED else 0
            )
            metrics.held_messages.labels(dealer).set(held_by.get(dealer, 0))

    # -- dealers -------------------------------------------------------------------------

    def consent_tally(self, dealer_id: str) -> tuple[int, int] | None:
        """Eligible and locked recipients of ``dealer_id`` as last counted, if counted."""
        if self._metrics is None:
            return None
        sample = self._metrics.registry.get_sample_value
        eligible = sample("mailgate_consent_recipients", {"dealer": dealer_id, "state": "eligible"})
        locked = sample("mailgate_consent_recipients", {"dealer": dealer_id, "state": "locked"})
        if eligible is None or locked is None:
            return None
        return int(eligible), int(locked)

    def dealer_policy(self, dealer_id: str) -> DealerPolicy:
        """The dealer's policy; raises ``NotFound``."""
        policy = self.policies.current.dealer(dealer_id)
        if policy is None:
            raise NotFound(
                f"no dealer {dealer_id!r}: dealers are the files in "
                f"{self.policies.directory}/dealers/ (GET /api/dealers lists them)"
            )
        return policy

    async def dealers(self) -> list[DealerReport]:
        """Every dealer of the policy set with its state and rates, by id."""
        statuses = {s.dealer_id: s for s in await self.storage.list_dealer_statuses()}
        return [
            await self._report(policy, statuses.get(dealer_id), history=0)
            for dealer_id, policy in sorted(self.policies.current.dealers.items())
        ]

    async def dealer(self, dealer_id: str, history: int = 20) -> DealerReport:
        """One dealer with its state, rates against thresholds, today's counts, history."""
        policy = self.dealer_policy(dealer_id)
        status = await self.storage.get_dealer_status(policy.dealer_id)
        return await self._report(policy, status, history=history)

    async def _report(
        self, policy: DealerPolicy, status: DealerStatus | None, history: int
    ) -> DealerReport:
        windows = await self.suspensions.windows(policy.dealer_id, status)
        today = self.clock.now().date()
        rows = await self.storage.daily_counts(policy.dealer_id, today, today)
        changes = await self.storage.dealer_history(policy.dealer_id, history) if history else []
        return DealerReport(
            policy=policy,
            status=status,
            complaints=RateReport(Metric.COMPLAINTS, windows.complaints, policy.complaints),
            bounces=RateReport(Metric.BOUNCES, windows.bounces, policy.bounces),
            today=rows[0] if rows else None,
            history=tuple(changes),
        )

    async def daily(self, dealer_id: str, days: int) -> list[DailyCounts]:
        """The dealer's counter rows of the last ``days`` days (oldest first)."""
        policy = self.dealer_policy(dealer_id)
        since, until = window_days(self.clock.now(), timedelta(days=days))
        return await self.storage.daily_counts(policy.dealer_id, since, until)

    def status_link(self, dealer_id: str) -> str:
        """The dealer's status-page link (for alert e-mails and the operator)."""
        policy = self.dealer_policy(dealer_id)
        if self._status_link is None:
            raise NotFound("status pages are not served by this gateway")
        return self._status_link(policy.dealer_id)

    async def suspend(
        self,
        dealer_id: str,
        reason: str | None,
        by: str,
        duration: timedelta | None = None,
        note: str | None = None,
    ) -> StateChange:
        """Suspend a dealer by hand; ``Conflict`` when it is suspended already.

        ``reason`` is shown to the dealer (the 554 reply to its CRM, its status page, the
        alert e-mail); ``note`` and ``by`` stay with the operators (history, logs, webhook).
        """
        policy = self.dealer_policy(dealer_id)
        text = check_reason(reason, "a suspension")
        internal = check_note(note)
        if duration is not None and duration <= timedelta(0):
            raise InvalidRequest("'for' must be a positive duration such as 72h")
        expires = self.clock.now() + duration if duration is not None else None
        change = await self.suspensions.suspend(
            policy.dealer_id, text, by=by, expires_at=expires, note=internal
        )
        if change is None:
            raise Conflict(f"{dealer_id} is already suspended; resume it first to change it")
        return change

    async def resume(
        self, dealer_id: str, reason: str | None, by: str, note: str | None = None
    ) -> StateChange:
        """End a dealer's suspension; ``Conflict`` when it is not suspended.

        ``reason`` is shown to the dealer, ``note`` to operators only (as for ``suspend``).
        """
        policy = self.dealer_policy(dealer_id)
        text = check_reason(reason, "a resume")
        internal = check_note(note)
        change = await self.suspensions.resume(policy.dealer_id, text, by=by, note=internal)
        if change is None:
            raise Conflict(f"{dealer_id} is not suspended")
        if self._wake is not None:
            self._wake()  # its queued mail is due again
        return change

    async def events(
        self,
        dealer_id: str,
        kinds: frozenset[EventKind],
        since: datetime | None,
        limit: int,
    ) -> tuple[list[FeedbackEvent], list[StateChange]]:
        """The dealer's feedback events (newest first) and its state transitions."""
        policy = self.dealer_policy(dealer_id)
        check_limit(limit)
        start = since or self.clock.now() - timedelta(days=30)
        events = await self.storage.recent_events(
            policy.dealer_id, kinds or frozenset(EventKind), start, limit
        )
        changes = await self.storage.dealer_history(policy.dealer_id, limit)
        return events, [c for c in changes if c.at >= start]

    # -- suppressions --------------------------------------------------------------------

    def suppression_list(self, name: str | None) -> DealerId | None:
        """The list named ``name``: a dealer id, or ``*`` for the global list."""
        if name is None or not name.strip():
            raise InvalidRequest("say which list: 'list' is a dealer id or '*' (global)")
        if name == GLOBAL:
            return None
        return self.dealer_policy(name).dealer_id

    async def suppressions(
        self,
        list_name: str | None,
        *,
        query: str = "",
        include_inactive: bool = False,
        after: int = 0,
        limit: int = 100,
    ) -> list[Suppression]:
        """Entries in id order after ``after``; ``query`` keeps addresses containing it.

        Without ``list_name`` every list is searched.
        """
        check_limit(limit)
        if after < 0:
            raise InvalidRequest("after must be 0 or a positive entry id")
        scope: DealerId | None = None
        only_global = False
        if list_name:
            scope = self.suppression_list(list_name)
            only_global = scope is None
        active_at = None if include_inactive else self.clock.now()
        needle = query.strip().lower()
        found: list[Suppression] = []
        scanned = 0
        while len(found) < limit and scanned < SEARCH_SCAN:
            page = await self.storage.list_suppressions(
                scope,
                global_only=only_global,
                active_at=active_at,
                after_id=after,
                limit=MAX_LIMIT if needle else limit - len(found),
            )
            scanned += len(page)
            found.extend(e for e in page if needle in e.address)
            if not page or not needle:
                break
            after = page[-1].id
        return found[:limit]

    async def export(
        self, list_name: str | None, include_inactive: bool
    ) -> AsyncIterator[list[Suppression]]:
        """Every matching entry, a page at a time."""
        scope = self.suppression_list(list_name) if list_name else None
        only_global = bool(list_name) and scope is None
        active_at = None if include_inactive else self.clock.now()
        after = 0
        while True:
            page = await self.storage.list_suppressions(
                scope,
                global_only=only_global,
                active_at=active_at,
                after_id=after,
                limit=MAX_LIMIT,
            )
            if page:
                yield page
            if len(page) < MAX_LIMIT:
                return
            after = page[-1].id

    async def suppress(
        self,
        list_name: str | None,
        items: Sequence[str],
        reason: str | None,
        by: str,
        expires_at: datetime | None = None,
    ) -> list[SuppressOutcome]:
        """Suppress each address on one list; an invalid address is reported, not fatal."""
        scope = self.suppression_list(list_name)
        text = check_reason(reason, "a suppression")
        if not items:
            raise InvalidRequest("'addresses' must list at least one address")
        if len(items) > MAX_LIMIT:
            raise InvalidRequest(f"at most {MAX_LIMIT} addresses per request; use import")
        now = self.clock.now()
        if expires_at is not None and expires_at <= now:
            raise InvalidRequest("expires_at is in the past")
        outcomes = []
        for item in items:
            address = addresses.parse(item)
            if address is None:
                outcomes.append(SuppressOutcome(item, "invalid"))
                continue
            entry = Suppression(scope, address, text, f"admin:{by}", now, expires_at)
            added = await self.storage.add_suppression(entry)
            outcomes.append(SuppressOutcome(address, "suppressed" if added else "already"))
        log.info(
            "suppression: %d address(es) added to %s by %s: %s",
            sum(o.result == "suppressed" for o in outcomes), scope or GLOBAL, by, text,
        )  # fmt: skip
        return outcomes

    async def lift(self, list_name: str | None, item: str, reason: str | None, by: str) -> str:
        """Lift the active entry of one address (recorded with who and why)."""
        scope = self.suppression_list(list_name)
        text = check_reason(reason, "lifting a suppression")
        address = addresses.parse(item)
        if address is None:
            raise InvalidRequest(f"{item!r} is not an e-mail address")
        lifted = await self.storage.lift_suppression(scope, address, by, text, self.clock.now())
        if not lifted:
            raise NotFound(f"{address} is not suppressed on list {scope or GLOBAL}")
        log.info("suppression of %s on %s lifted by %s: %s", address, scope or GLOBAL, by, text)
        return address

    async def import_entries(
        self,
        list_name: str | None,
        rows: Sequence[tuple[str, str]],
        reason: str | None,
        source: str,
    ) -> ImportResult:
        """Add ``(address, reason)`` rows (an empty row reason takes ``reason``)."""
        scope = self.suppression_list(list_name)
        default = check_reason(reason, "an import")
        if len(rows) > MAX_IMPORT:
            raise InvalidRequest(f"at most {MAX_IMPORT} entries per request; send batches")
        now = self.clock.now()
        added = skipped = invalid = 0
        for raw, row_reason in rows:
            address = addresses.parse(raw)
            if address is None:
                invalid += 1
                continue
            entry = Suppression(scope, address, row_reason.strip() or default, source, now)
            if await self.storage.add_suppression(entry):
                added += 1
            else:
                skipped += 1
        log.info(
            "suppression import into %s from %s: %d added, %d already, %d invalid",
            scope or GLOBAL, source, added, skipped, invalid,
        )  # fmt: skip
        return ImportResult(added, skipped, invalid)

    # -- messages: held and queued -------------------------------------------------------

    async def messages(
        self, state: MessageState | None, dealer_id: str | None, limit: int
    ) -> list[QueuedMessage]:
        """Stored messages, newest first (without bodies)."""
        check_limit(limit)
        dealer = self.dealer_policy(dealer_id).dealer_id if dealer_id else None
        return await self.storage.list_messages(state=state, dealer_id=dealer, limit=limit)

    async def message(self, message_id: str, held: bool = False) -> QueuedMessage:
        """One message with its body; ``held`` requires it to be held."""
        message = await self.storage.get(MessageId(message_id))
        if message is None:
            raise NotFound(f"no message {message_id!r} (it may have expired or been deleted)")
        if held and message.state is not MessageState.HELD:
            raise NotFound(
                f"message {message_id} is {message.state.value}, not held "
                f"(GET /api/queue/{message_id} shows it)"
            )
        return message

    async def release(self, message_id: str, by: str) -> QueuedMessage:
        """Make a held message due now."""
        message = await self.message(message_id, held=True)
        return await self._requeue(message, by, "released held message")

    async def retry(self, message_id: str, by: str) -> QueuedMessage:
        """Make a queued or failed message due now (held ones are released instead)."""
        message = await self.message(message_id)
        if message.state is MessageState.HELD:
            raise Conflict(
                f"message {message_id} is held: release it (POST /api/held/{message_id}/release)"
            )
        if message.state not in (MessageState.QUEUED, MessageState.FAILED):
            raise Conflict(f"message {message_id} is {message.state.value}; nothing to retry")
        return await self._requeue(message, by, "retry now")

    async def _requeue(self, message: QueuedMessage, by: str, what: str) -> QueuedMessage:
        if not await self.storage.requeue(message.id, self.clock.now()):
            raise Conflict(
                f"message {message.id} cannot be requeued: it changed meanwhile or its body "
                "was discarded after a final outcome"
            )
        if self._wake is not None:
            self._wake()
        log.info(
            "%s id=%s dealer=%s by %s", what, message.id, message.dealer_id, by,
            extra={"dealer_id": message.dealer_id},
        )  # fmt: skip
        return await self.message(message.id)

    async def delete(
        self, message_id: str, reason: str | None, by: str, held: bool = False
    ) -> QueuedMessage:
        """Delete a message for good with a logged reason (``held``: only a held one)."""
        message = await self.message(message_id, held=held)
        text = check_reason(reason, "deleting a message")
        if not await self.storage.delete(message.id):
            raise NotFound(f"message {message_id} was deleted meanwhile")
        log.warning(
            "deleted %s message id=%s dealer=%s by %s findings=%s reason=%s",
            message.state.value, message.id, message.dealer_id, by,
            ",".join(message.findings) or "-", text,
            extra={"dealer_id": message.dealer_id},
        )  # fmt: skip
        return message

    # -- policies ------------------------------------------------------------------------

    async def reload(self, by: str) -> ReloadResult:
        """Validate the policy directory and swap the set in only if it is all valid."""
        async with self._reload_lock:
            result = await asyncio.to_thread(self.policies.reload)
        log.info("policy reload requested by %s: %s", by, "applied" if result.ok else "refused")
        if result.ok and self._on_policies is not None:
            self._on_policies()
        return result


def parse_day(text: str) -> date:
    """A ``YYYY-MM-DD`` date; raises ``InvalidRequest``."""
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise InvalidRequest(f"not a date: {text!r} (use YYYY-MM-DD)") from exc
