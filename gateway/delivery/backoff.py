"""The retry schedule for deferred deliveries (pure: no clock, no randomness of its own).

Owns one decision: after a temporary failure, when is the next attempt, or is the message
too old to try again? The caller passes ``now`` and the jitter so tests can pin both, and
the schedule as a frozen ``RetryPolicy`` (``delivery.worker.retry_policy`` builds it from
the ``[delivery]`` settings), so this module knows nothing about configuration files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

# Spread retries by up to ±10% so that messages deferred together (an upstream outage)
# do not all come back in the same second when it recovers.
JITTER_SPAN = 0.10


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff from ``first_retry``, capped at ``max_interval``, for ``max_age``."""

    first_retry: timedelta
    max_interval: timedelta
    factor: float
    max_age: timedelta

    def __post_init__(self) -> None:
        if self.first_retry <= timedelta(0) or self.max_interval <= timedelta(0):
            raise ValueError("retry intervals must be positive")
        if self.factor < 1.0:
            raise ValueError("backoff factor must be at least 1")


def retry_interval(attempts: int, policy: RetryPolicy, jitter: float) -> timedelta:
    """Return the wait after the ``attempts``-th failed attempt (1 for the first failure).

    ``jitter`` in ``[0, 1)`` maps to a factor in ``[0.9, 1.1)``. The result never exceeds
    ``policy.max_interval``, so jitter only ever shortens a capped interval.
    """
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
    first = policy.first_retry.total_seconds()
    cap = policy.max_interval.total_seconds()
    exponent = max(attempts - 1, 0)
    # Compare in log space: factor**exponent overflows a float for a message retried
    # thousands of times (a long outage with a short first_retry).
    if first >= cap or exponent * math.log(policy.factor) >= math.log(cap / first):
        seconds = cap
    else:
        seconds = first * policy.factor**exponent
    seconds *= 1.0 + JITTER_SPAN * (2.0 * jitter - 1.0)
    return timedelta(seconds=min(seconds, cap))


def next_attempt(
    attempts: int,
    received_at: datetime,
    now: datetime,
    policy: RetryPolicy,
    jitter: float,
) -> datetime | None:
    """When to try again after ``attempts`` failed attempts, or ``None`` to give up.

    ``None`` means the message has been queued for ``policy.max_age`` or longer: the caller
    fails it permanently and reports it (RFC 5321 §4.5.4.1 gives up "after 4-5 days").
    Otherwise the next attempt is ``now`` plus the backoff interval, brought forward to the
    moment the message reaches ``max_age`` so that the last try happens at the deadline
    rather than after it. The result is always within ``max_interval`` of ``now``, measured
    from the caller's clock: if the clock stepped back, the wait is not stretched by the
    step (reliability F18).
    """
    if now - received_at >= policy.max_age:
        return None
    when = now + retry_interval(attempts, policy, jitter)
    return min(when, received_at + policy.max_age)
