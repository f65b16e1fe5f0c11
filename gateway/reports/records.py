"""The store's answers behind the deliverability report and the status page (pure records).

Each tally is one group of a count over the store as it is (the sent log, feedback events,
duplicate drops), for one dealer and a time range; ``domain`` is the recipient's domain,
lower-cased, as stored. Times are UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from gateway.types import MessageState


@dataclass(frozen=True, slots=True)
class DeliveryTally:
    """Messages (one per recipient) the dealer submitted on ``day``, by domain and state.

    ``retried``: at least one attempt was deferred (a 4xx) before the outcome (a queued
    message with attempts, a finished one with more than one).
    """

    day: date
    domain: str
    state: MessageState
    retried: bool
    messages: int


@dataclass(frozen=True, slots=True)
class EventTally:
    """Feedback events (``kind``: complaint, hard-bounce, ...) on ``day``, by domain."""

    day: date
    domain: str
    kind: str
    events: int


@dataclass(frozen=True, slots=True)
class DropTally:
    """Recipients left out as duplicates or by a cap (``kind``: exact, near, cap), by subject."""

    kind: str
    subject: str
    drops: int


@dataclass(frozen=True, slots=True)
class FindingTally:
    """Stored messages with one set of finding codes, in one state."""

    findings: tuple[str, ...]
    state: MessageState
    messages: int


@dataclass(frozen=True, slots=True)
class ReportClaim:
    """Who took on one dealer's report for one period, and what came of it.

    ``outcome`` is empty while the claim is open (a node is building it), then ``sent``,
    ``skipped`` (no traffic) or ``no-recipients``.
    """

    dealer_id: str
    period: str
    node: str
    claimed_at: datetime
    outcome: str = ""
    done_at: datetime | None = None
