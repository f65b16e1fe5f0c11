"""Time: the clock, injected, and durations as operators write them (pure).

The system clock runs in production and a settable clock in tests. ``parse_duration`` is
the one parser of ``"90s"``, ``"5m"``, ``"72h"``, ``"5d"`` for ``mailgate.toml``
(``settings``), the policy files (``policy.loader``, which turns every duration into a
``timedelta`` at load time) and the command-line and admin API arguments that take a
duration, so the same text means the same time everywhere.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Source of wall-clock time (always timezone-aware UTC)."""

    def now(self) -> datetime:
        """Return the current time in UTC."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """Return the current time in UTC."""
        return datetime.now(UTC)


class FakeClock:
    """A clock that moves only when told to; for tests and simulations."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        """Return the current fake time."""
        return self._now

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward by ``delta``."""
        self._now += delta

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (which may be in the past, to model a clock step back)."""
        self._now = when


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> timedelta:
    """Parse ``"90s"``, ``"5m"``, ``"72h"``, ``"5d"``, ``"2w"`` or a number of seconds.

    A ``timedelta`` is returned as it is. Anything else raises ``ValueError`` whose
    message shows the accepted forms (it is shown to operators as it stands).
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2) or "s"])
    raise ValueError(f"not a duration: {value!r} (use e.g. '30s', '5m', '72h', '5d')")
