from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.delivery.backoff import RetryPolicy, next_attempt, retry_interval
from gateway.delivery.worker import retry_policy
from gateway.settings import DeliverySettings

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
POLICY = RetryPolicy(
    first_retry=timedelta(minutes=5),
    max_interval=timedelta(hours=1),
    factor=2.0,
    max_age=timedelta(days=5),
)
MID = 0.5  # jitter 0.5 -> factor exactly 1.0


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        pytest.param(0, timedelta(minutes=5), id="no-attempt-yet"),
        pytest.param(1, timedelta(minutes=5), id="first-failure"),
        pytest.param(2, timedelta(minutes=10), id="second"),
        pytest.param(3, timedelta(minutes=20), id="third"),
        pytest.param(4, timedelta(minutes=40), id="fourth"),
        pytest.param(5, timedelta(hours=1), id="capped"),
        pytest.param(50, timedelta(hours=1), id="long-outage"),
        pytest.param(100_000, timedelta(hours=1), id="no-float-overflow"),
    ],
)
def test_interval_table(attempts: int, expected: timedelta) -> None:
    assert retry_interval(attempts, POLICY, MID) == expected


@pytest.mark.parametrize(
    ("attempts", "jitter", "low", "high"),
    [
        pytest.param(1, 0.0, timedelta(minutes=4.5), timedelta(minutes=4.5), id="min-jitter"),
        pytest.param(1, 0.999, timedelta(minutes=5.49), timedelta(minutes=5.5), id="max-jitter"),
        pytest.param(9, 0.999, timedelta(hours=1), timedelta(hours=1), id="cap-never-exceeded"),
        pytest.param(9, 0.0, timedelta(minutes=54), timedelta(minutes=54), id="cap-shortened"),
    ],
)
def test_jitter_stays_within_ten_percent_and_cap(
    attempts: int, jitter: float, low: timedelta, high: timedelta
) -> None:
    interval = retry_interval(attempts, POLICY, jitter)
    assert low <= interval <= high


@pytest.mark.parametrize("jitter", [-0.1, 1.0, 2.0])
def test_jitter_out_of_range_is_a_bug(jitter: float) -> None:
    with pytest.raises(ValueError):
        retry_interval(1, POLICY, jitter)


@pytest.mark.parametrize(
    ("age", "attempts", "expected"),
    [
        pytest.param(timedelta(0), 1, T0 + timedelta(minutes=5), id="fresh"),
        pytest.param(timedelta(hours=2), 3, T0 + timedelta(hours=2, minutes=20), id="third"),
        pytest.param(
            timedelta(days=5) - timedelta(minutes=10),
            40,
            T0 + timedelta(days=5),
            id="clamped-to-deadline",
        ),
        pytest.param(timedelta(days=5), 40, None, id="exactly-max-age"),
        pytest.param(timedelta(days=9), 40, None, id="older"),
    ],
)
def test_next_attempt_table(age: timedelta, attempts: int, expected: datetime | None) -> None:
    now = T0 + age
    assert next_attempt(attempts, T0, now, POLICY, MID) == expected


def test_clock_step_back_does_not_starve_retries() -> None:
    # F18: received "tomorrow" from the point of view of a clock that stepped back a day.
    now = T0
    received = T0 + timedelta(days=1)
    when = next_attempt(30, received, now, POLICY, 0.999)
    assert when is not None
    assert when - now <= POLICY.max_interval


def test_retry_policy_from_settings() -> None:
    s = DeliverySettings.model_validate(
        {"first_retry": "1m", "max_retry_interval": "10m", "backoff_factor": 3, "max_age": "1d"}
    )
    assert retry_policy(s) == RetryPolicy(
        timedelta(minutes=1), timedelta(minutes=10), 3.0, timedelta(days=1)
    )


def test_invalid_policy() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(timedelta(0), timedelta(hours=1), 2.0, timedelta(days=1))
