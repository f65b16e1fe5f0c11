"""Frozen records of the feedback and reputation state the store keeps (pure).

This module owns what the storage protocol's feedback section takes and returns:
``FeedbackEvent`` (one trusted complaint or bounce, unique on its replay key),
``Suppression`` (an address the gateway refuses to mail, per dealer or globally, lifted
only by an audited action), ``DayCounts`` (a dealer's volume and feedback on one UTC
day) and ``DealerStatus``/``StateChange`` (the dealer state machine and its history).
Nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from types import MappingProxyType

from gateway.types import DealerId, MessageId


class EventKind(enum.StrEnum):
    """What a trusted report said about one recipient of one message."""

    COMPLAINT = "complaint"  # abuse, fraud or virus feedback: counts against the rate
    UNSUBSCRIBE = "unsubscribe"  # opt-out feedback: suppresses, does not count
    HARD_BOUNCE = "hard-bounce"  # the address cannot receive mail
    SOFT_BOUNCE = "soft-bounce"  # this message failed for a reason that may pass


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One trusted report about one recipient; ``(message_id, kind, recipient)`` is unique.

    ``detail`` is the feedback type (``abuse``) or the bounce status and reason
    (``5.1.1 unknown-user``); ``subject`` is the original's, when the report returned it;
    ``source`` says how the report arrived (``smtp:<peer>``, ``import:<file>``).
    """

    dealer_id: DealerId
    kind: EventKind
    message_id: MessageId
    recipient: str  # lower case
    at: datetime
    detail: str = ""
    subject: str = ""
    source: str = ""


UNSUBSCRIBE_REASON = "unsubscribe request"


@dataclass(frozen=True, slots=True)
class Suppression:
    """An address not to be mailed: for one dealer, or for all (``dealer_id`` is ``None``).

    ``expires_at`` ends a temporary entry (repeated soft bounces); ``lifted_*`` record
    who lifted an entry by hand and why. A lifted or expired entry is kept, not deleted,
    so the list doubles as an audit log.
    """

    dealer_id: DealerId | None
    address: str  # lower case
    reason: str  # "spam complaint", "unsubscribe request", "hard bounce", ...
    source: str  # the report's message id, "admin", "import:<file>"
    created_at: datetime
    expires_at: datetime | None = None
    lifted_at: datetime | None = None
    lifted_by: str = ""
    lift_reason: str = ""
    id: int = 0  # assigned by the store

    @property
    def commercial_only(self) -> bool:
        """True when the entry blocks only commercial mail.

        An unsubscribe (RFC 8058 one-click, a mailto, a provider's opt-out report) withdraws
        marketing, not receipts, recalls or appointment confirmations (CAN-SPAM exempts
        transactional messages).
        """
        return self.reason == UNSUBSCRIBE_REASON

    def active(self, now: datetime) -> bool:
        """True while the entry blocks mail: not lifted and not expired."""
        if self.lifted_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now

    @property
    def scope(self) -> str:
        """The dealer id, or ``*`` for the global list (as shown and exported)."""
        return self.dealer_id or GLOBAL


GLOBAL = "*"  # the global list's name in listings, CSV files and metric labels


@dataclass(frozen=True, slots=True)
class DayCounts:
    """A dealer's counters for one UTC day (or a sum of days)."""

    sent: int = 0  # final delivery outcomes (delivered or failed)
    delivered: int = 0
    complaints: int = 0
    hard_bounces: int = 0
    soft_bounces: int = 0

    def __add__(self, other: DayCounts) -> DayCounts:
        return DayCounts(
            self.sent + other.sent,
            self.delivered + other.delivered,
            self.complaints + other.complaints,
            self.hard_bounces + other.hard_bounces,
            self.soft_bounces + other.soft_bounces,
        )

    def __sub__(self, other: DayCounts) -> DayCounts:
        return DayCounts(
            max(self.sent - other.sent, 0),
            max(self.delivered - other.delivered, 0),
            max(self.complaints - other.complaints, 0),
            max(self.hard_bounces - other.hard_bounces, 0),
            max(self.soft_bounces - other.soft_bounces, 0),
        )

    def as_dict(self) -> dict[str, int]:
        """The counts by name (for evidence records and JSON)."""
        return {
            "sent": self.sent,
            "delivered": self.delivered,
            "complaints": self.complaints,
            "hard_bounces": self.hard_bounces,
            "soft_bounces": self.soft_bounces,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> DayCounts:
        """Read ``as_dict()`` output back; unknown or missing keys are ignored or 0."""

        def value(name: str) -> int:
            raw = data.get(name, 0)
            return raw if isinstance(raw, int) else 0

        return cls(
            value("sent"),
            value("delivered"),
            value("complaints"),
            value("hard_bounces"),
            value("soft_bounces"),
        )


def total(days: Iterable[DayCounts]) -> DayCounts:
    """The sum of several days' counts."""
    result = DayCounts()
    for counts in days:
        result = result + counts
    return result


def event_counts(kind: EventKind) -> DayCounts:
    """What one recorded event adds to its day's counters (an unsubscribe adds nothing)."""
    if kind is EventKind.COMPLAINT:
        return DayCounts(complaints=1)
    if kind is EventKind.HARD_BOUNCE:
        return DayCounts(hard_bounces=1)
    if kind is EventKind.SOFT_BOUNCE:
        return DayCounts(soft_bounces=1)
    return DayCounts()


@dataclass(frozen=True, slots=True)
class DailyCounts:
    """One stored counter row."""

    dealer_id: DealerId
    day: date
    counts: DayCounts


class DealerState(enum.StrEnum):
    """The dealer state machine: active → warned → suspended → resumed (→ warned ...)."""

    ACTIVE = "active"
    WARNED = "warned"
    SUSPENDED = "suspended"
    RESUMED = "resumed"


class Actor(enum.StrEnum):
    """Who made a transition."""

    AUTO = "auto"  # the rate evaluation or an expiry
    ADMIN = "admin"  # an operator (CLI or admin API)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a transition was based on: the counts over the window and the rates."""

    since: date | None = None
    until: date | None = None
    counts: DayCounts = DayCounts()
    rates: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    thresholds: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready rendering (stored with the transition)."""
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "counts": self.counts.as_dict(),
            "rates": dict(self.rates),
            "thresholds": dict(self.thresholds),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Evidence:
        """Read ``as_dict()`` output back, tolerating missing keys."""
        since, until = data.get("since"), data.get("until")
        counts, rates, thresholds = data.get("counts"), data.get("rates"), data.get("thresholds")
        return cls(
            since=date.fromisoformat(since) if isinstance(since, str) else None,
            until=date.fromisoformat(until) if isinstance(until, str) else None,
            counts=DayCounts.from_dict(counts) if isinstance(counts, Mapping) else DayCounts(),
            rates=MappingProxyType(
                {str(k): float(v) for k, v in rates.items() if isinstance(v, int | float)}
                if isinstance(rates, Mapping)
                else {}
            ),
            thresholds=MappingProxyType(
                {str(k): float(v) for k, v in thresholds.items() if isinstance(v, int | float)}
                if isinstance(thresholds, Mapping)
                else {}
            ),
        )


@dataclass(frozen=True, slots=True)
class StateChange:
    """One transition of a dealer's state, as recorded in its history."""

    dealer_id: DealerId
    state: DealerState
    previous: DealerState
    reason: str
    actor: Actor
    at: datetime
    evidence: Evidence = Evidence()
    expires_at: datetime | None = None  # when a suspension ends by itself
    by: str = ""  # the operator's name for admin changes
    id: int = 0  # assigned by the store; alerts use it as their identity
    # The operator's internal note: kept in the history and shown to operators (API, CLI,
    # webhook, the operators' copy of an alert), never to the dealer, who sees ``reason``.
    note: str = ""


@dataclass(frozen=True, slots=True)
class DealerStatus:
    """A dealer's current state: the last transition, plus the counting baseline.

    After a resume, rates are computed from ``counts_from`` on: the complaints that
    caused the suspension must not suspend the dealer again at the next report.
    ``baseline`` holds that day's counters at the moment of the resume, subtracted from
    the day's totals.
    """

    dealer_id: DealerId
    state: DealerState
    reason: str
    actor: Actor
    since: datetime
    expires_at: datetime | None = None
    counts_from: datetime | None = None
    baseline: DayCounts = DayCounts()
    change_id: int = 0

    @property
    def suspended(self) -> bool:
        """True while the dealer's mail is refused and held."""
        return self.state is DealerState.SUSPENDED

    def after(self, change: StateChange, baseline: DayCounts | None = None) -> DealerStatus:
        """The status once ``change`` is applied (``baseline`` given on resume)."""
        resumed = change.state is DealerState.RESUMED
        return replace(
            self,
            state=change.state,
            reason=change.reason,
            actor=change.actor,
            since=change.at,
            expires_at=change.expires_at,
            counts_from=change.at if resumed else self.counts_from,
            baseline=(baseline or DayCounts()) if resumed else self.baseline,
            change_id=change.id,
        )


def initial_status(dealer_id: DealerId, at: datetime) -> DealerStatus:
    """The status of a dealer nothing has happened to yet."""
    return DealerStatus(dealer_id, DealerState.ACTIVE, "", Actor.AUTO, at)
