"""``reputation.rates``: windows, thresholds and minimum volume (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from gateway.policy.model import DEFAULT_BOUNCES, DEFAULT_COMPLAINTS
from gateway.reputation.rates import (
    Metric,
    RateWindow,
    Suspend,
    Warn,
    evaluate,
    strictest,
    window_days,
    window_of,
)
from gateway.reputation.records import (
    Actor,
    DailyCounts,
    DayCounts,
    DealerState,
    DealerStatus,
)
from gateway.types import DealerId

D = DealerId("example-motors")
DAY = date(2026, 1, 5)


def window(**counts: int) -> RateWindow:
    return RateWindow(D, DAY, DAY, DayCounts(**counts))


@pytest.mark.parametrize(
    ("delivered", "complaints", "expected"),
    [
        (5000, 4, None),
        (5000, 5, Warn),  # 0.1%
        (5000, 9, Warn),
        (5000, 10, Suspend),  # 0.2%: 10 per 5,000
        (999, 50, None),  # below the minimum volume: no decision at all
        (1000, 2, Suspend),
    ],
)
def test_complaint_thresholds(delivered: int, complaints: int, expected: type | None) -> None:
    got = evaluate(
        window(delivered=delivered, complaints=complaints), DEFAULT_COMPLAINTS, Metric.COMPLAINTS
    )
    assert (type(got) if got else None) is expected


@pytest.mark.parametrize(
    ("sent", "hard", "expected"),
    [(2000, 99, None), (2000, 100, Warn), (2000, 200, Suspend)],
)
def test_bounce_thresholds(sent: int, hard: int, expected: type | None) -> None:
    got = evaluate(window(sent=sent, hard_bounces=hard), DEFAULT_BOUNCES, Metric.BOUNCES)
    assert (type(got) if got else None) is expected


def test_suspend_wins_over_warn_and_describes_the_evidence() -> None:
    w = window(sent=5000, delivered=5000, complaints=10, hard_bounces=300)
    warn = evaluate(w, DEFAULT_BOUNCES, Metric.BOUNCES)
    suspend = evaluate(w, DEFAULT_COMPLAINTS, Metric.COMPLAINTS)
    assert isinstance(warn, Warn) and isinstance(suspend, Suspend)
    assert strictest(warn, suspend) is suspend
    assert strictest(None, None) is None
    assert suspend.describe() == (
        "complaint rate 0.20% (10 of 5000 delivered, 2026-01-05 to 2026-01-05) is at or above 0.20%"
    )


def test_window_days_and_the_resume_baseline() -> None:
    now = datetime(2026, 1, 7, 12, 0, tzinfo=UTC)
    since, until = window_days(now, timedelta(days=7))
    assert (since, until) == (date(2026, 1, 1), date(2026, 1, 7))
    rows = [
        DailyCounts(D, date(2026, 1, 5), DayCounts(delivered=4000, complaints=9)),
        DailyCounts(D, date(2026, 1, 7), DayCounts(delivered=1000, complaints=3)),
    ]
    assert window_of(D, rows, since, until).counts == DayCounts(delivered=5000, complaints=12)
    resumed = DealerStatus(
        D,
        DealerState.RESUMED,
        "fixed",
        Actor.ADMIN,
        now,
        counts_from=now - timedelta(hours=2),
        baseline=DayCounts(delivered=600, complaints=3),
    )
    # Only what happened since the resume counts: the suspension's complaints are gone.
    after = window_of(D, rows, since, until, resumed)
    assert after.since == date(2026, 1, 7)
    assert after.counts == DayCounts(delivered=400, complaints=0)
