"""Complaint and bounce rates against a dealer's thresholds (pure).

This module owns the decision, not its consequences: ``window_of`` sums a dealer's daily
counters over a rolling window (starting no earlier than a resume, see
``DealerStatus``), and ``evaluate(window, thresholds)`` says ``Warn``, ``Suspend`` or
nothing. Rates are ``complaints / delivered`` (a complaint needs a delivered message)
and ``hard bounces / sent`` (sent: every final outcome, delivered or failed). Below the
minimum volume nothing is decided: three complaints on the first day of a new dealer are
noise, not a rate.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from gateway.policy.model import RateThresholds
from gateway.reputation.records import DailyCounts, DayCounts, DealerStatus, Evidence
from gateway.types import DealerId


class Metric(enum.StrEnum):
    """Which rate a decision is about."""

    COMPLAINTS = "complaints"
    BOUNCES = "bounces"


@dataclass(frozen=True, slots=True)
class RateWindow:
    """A dealer's counts over ``since``..``until`` (UTC days, inclusive)."""

    dealer_id: DealerId
    since: date
    until: date
    counts: DayCounts

    def events(self, metric: Metric) -> int:
        """The numerator of ``metric``'s rate."""
        return self.counts.complaints if metric is Metric.COMPLAINTS else self.counts.hard_bounces

    def volume(self, metric: Metric) -> int:
        """The denominator of ``metric``'s rate."""
        return self.counts.delivered if metric is Metric.COMPLAINTS else self.counts.sent

    def rate(self, metric: Metric) -> float:
        """``events / volume``, 0.0 without volume."""
        volume = self.volume(metric)
        return self.events(metric) / volume if volume else 0.0


@dataclass(frozen=True, slots=True)
class RateAction:
    """A decision: which rate crossed which threshold, with the evidence."""

    metric: Metric
    rate: float
    threshold: float
    window: RateWindow

    def describe(self) -> str:
        """One sentence for logs, SMTP replies and alert subjects."""
        what = "complaint" if self.metric is Metric.COMPLAINTS else "hard-bounce"
        volume = "delivered" if self.metric is Metric.COMPLAINTS else "sent"
        return (
            f"{what} rate {self.rate:.2%} ({self.window.events(self.metric)} of "
            f"{self.window.volume(self.metric)} {volume}, {self.window.since} to "
            f"{self.window.until}) is at or above {self.threshold:.2%}"
        )


class Warn(RateAction):
    """The warning threshold is reached: tell the dealer, keep sending."""

    __slots__ = ()


class Suspend(RateAction):
    """The suspension threshold is reached: refuse and hold the dealer's mail."""

    __slots__ = ()


def has_volume(window: RateWindow, thresholds: RateThresholds, metric: Metric) -> bool:
    """True when ``window`` has the volume a decision on ``metric`` needs (``min_volume``)."""
    return window.volume(metric) >= max(thresholds.min_volume, 1)


def evaluate(window: RateWindow, thresholds: RateThresholds, metric: Metric) -> RateAction | None:
    """Decide on one rate: ``Suspend``, ``Warn`` or ``None`` (below, or too little volume)."""
    if not has_volume(window, thresholds, metric):
        return None
    rate = window.rate(metric)
    if rate >= thresholds.suspend_rate:
        return Suspend(metric, rate, thresholds.suspend_rate, window)
    if rate >= thresholds.warn_rate:
        return Warn(metric, rate, thresholds.warn_rate, window)
    return None


def strictest(*actions: RateAction | None) -> RateAction | None:
    """The most severe of several decisions (a suspension over a warning, then the first)."""
    found = [a for a in actions if a is not None]
    for action in found:
        if isinstance(action, Suspend):
            return action
    return found[0] if found else None


def window_days(now: datetime, window: timedelta) -> tuple[date, date]:
    """The first and last UTC day of a rolling window ending today (at least one day)."""
    days = max(window // timedelta(days=1), 1)
    today = now.date()
    return today - timedelta(days=days - 1), today


def window_of(
    dealer_id: DealerId,
    rows: Iterable[DailyCounts],
    since: date,
    until: date,
    status: DealerStatus | None = None,
) -> RateWindow:
    """Sum ``rows`` over ``since``..``until``, counting only from the dealer's last resume.

    On the day of the resume the counts at that moment (``status.baseline``) are taken
    off, so the reports that led to the suspension are not counted a second time.
    """
    start = since
    baseline_day: date | None = None
    if status is not None and status.counts_from is not None:
        resumed = status.counts_from.date()
        if resumed > start:
            start = resumed
        if since <= resumed <= until:
            baseline_day = resumed
    counts = DayCounts()
    for row in rows:
        if start <= row.day <= until:
            day_counts = row.counts
            if status is not None and row.day == baseline_day:
                day_counts = day_counts - status.baseline
            counts = counts + day_counts
    return RateWindow(dealer_id, start, until, counts)


def evidence(window: RateWindow, complaints: RateThresholds, bounces: RateThresholds) -> Evidence:
    """The record of what a transition was based on."""
    return Evidence(
        since=window.since,
        until=window.until,
        counts=window.counts,
        rates={
            "complaint_rate": window.rate(Metric.COMPLAINTS),
            "bounce_rate": window.rate(Metric.BOUNCES),
        },
        thresholds={
            "complaint_warn": complaints.warn_rate,
            "complaint_suspend": complaints.suspend_rate,
            "bounce_warn": bounces.warn_rate,
            "bounce_suspend": bounces.suspend_rate,
            "min_volume_complaints": float(complaints.min_volume),
            "min_volume_bounces": float(bounces.min_volume),
        },
    )
