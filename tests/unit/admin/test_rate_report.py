"""``admin.ops.RateReport.level``: the level the API shows is what ``rates.evaluate`` decides."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from gateway.admin.ops import RateReport
from gateway.policy.model import DEFAULT_BOUNCES, DEFAULT_COMPLAINTS, RateThresholds
from gateway.reputation.rates import Metric, RateWindow, Suspend, Warn, evaluate
from gateway.reputation.records import DayCounts
from gateway.types import DealerId

DAY = date(2026, 1, 5)


def report(metric: Metric, thresholds: RateThresholds, **counts: int) -> RateReport:
    window = RateWindow(DealerId("example-motors"), DAY, DAY, DayCounts(**counts))
    return RateReport(metric, window, thresholds)


CASES = [
    (Metric.COMPLAINTS, DEFAULT_COMPLAINTS, {"delivered": 5000, "complaints": 4}, "ok"),
    (Metric.COMPLAINTS, DEFAULT_COMPLAINTS, {"delivered": 5000, "complaints": 5}, "warn"),
    (Metric.COMPLAINTS, DEFAULT_COMPLAINTS, {"delivered": 5000, "complaints": 10}, "suspend"),
    (Metric.COMPLAINTS, DEFAULT_COMPLAINTS, {"delivered": 999, "complaints": 50}, "low-volume"),
    (Metric.COMPLAINTS, DEFAULT_COMPLAINTS, {}, "low-volume"),
    (Metric.BOUNCES, DEFAULT_BOUNCES, {"sent": 2000, "hard_bounces": 99}, "ok"),
    (Metric.BOUNCES, DEFAULT_BOUNCES, {"sent": 2000, "hard_bounces": 100}, "warn"),
    (Metric.BOUNCES, DEFAULT_BOUNCES, {"sent": 2000, "hard_bounces": 200}, "suspend"),
    # min_volume 0 still needs one message: a rate over nothing decides nothing
    (Metric.BOUNCES, replace(DEFAULT_BOUNCES, min_volume=0), {}, "low-volume"),
    # a policy whose warn rate is above its suspend rate: evaluate suspends, so does the level
    (
        Metric.COMPLAINTS,
        replace(DEFAULT_COMPLAINTS, warn_rate=0.5, suspend_rate=0.1),
        {"delivered": 5000, "complaints": 1000},
        "suspend",
    ),
]


@pytest.mark.parametrize(
    ("metric", "thresholds", "counts", "expected"),
    CASES,
    ids=[f"{m.value}-{level}-{n}" for n, (m, _t, _c, level) in enumerate(CASES)],
)
def test_level_is_the_decision_of_evaluate(
    metric: Metric, thresholds: RateThresholds, counts: dict[str, int], expected: str
) -> None:
    got = report(metric, thresholds, **counts)
    assert got.level == expected
    decision = evaluate(got.window, thresholds, metric)
    assert got.decision == decision
    assert (got.level == "suspend") is isinstance(decision, Suspend)
    assert (got.level == "warn") is isinstance(decision, Warn)
