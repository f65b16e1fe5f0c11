"""Which report period is due for a dealer (pure).

A day is a UTC calendar day; a week runs Monday to Sunday (ISO 8601). A period's report
is due from ``hour`` o'clock UTC on the day after it ends (late deferrals, bounces and
complaints have arrived by then) until the next period's is due; so a gateway that was
down at that hour sends it when it comes back, and only the latest period is ever sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

Every = Literal["day", "week", "off"]


@dataclass(frozen=True, slots=True)
class Period:
    """The days a report covers, ``first`` to ``last`` inclusive."""

    every: Literal["day", "week"]
    first: date
    last: date

    @property
    def key(self) -> str:
        """The period's name in the store: ``day:2026-01-05`` or ``week:2026-W02``."""
        if self.every == "day":
            return f"day:{self.first.isoformat()}"
        year, week, _ = self.first.isocalendar()
        return f"week:{year}-W{week:02d}"

    @property
    def since(self) -> datetime:
        """The first instant of the period (UTC)."""
        return datetime.combine(self.first, time.min, tzinfo=UTC)

    @property
    def until(self) -> datetime:
        """The first instant after the period (UTC)."""
        return datetime.combine(self.last + timedelta(days=1), time.min, tzinfo=UTC)

    def describe(self) -> str:
        """``Monday 5 January 2026`` or ``the week of 5 to 11 January 2026``."""
        if self.every == "day":
            return f"{self.first:%A} {self.first.day} {self.first:%B %Y}"
        if self.first.month == self.last.month:
            return f"the week of {self.first.day} to {self.last.day} {self.last:%B %Y}"
        return f"the week of {self.first.day} {self.first:%B} to {self.last.day} {self.last:%B %Y}"


def latest(every: Literal["day", "week"], now: datetime, hour: int) -> Period:
    """The latest period whose report is due at ``now``."""
    today = now.astimezone(UTC).date()
    if every == "day":
        end = today - timedelta(days=1)
        if now.astimezone(UTC).hour < hour:
            end -= timedelta(days=1)
        return Period("day", end, end)
    monday = today - timedelta(days=today.weekday())
    if today == monday and now.astimezone(UTC).hour < hour:
        monday -= timedelta(days=7)
    return Period("week", monday - timedelta(days=7), monday - timedelta(days=1))


def due(every: Every, now: datetime, hour: int) -> Period | None:
    """The period to report on at ``now``, or ``None`` when the dealer gets no report."""
    if every == "off":
        return None
    return latest(every, now, hour)
