"""The one duration parser shared by settings, policy files and command arguments."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.clock import parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("72h", timedelta(hours=72)),
        ("5d", timedelta(days=5)),
        ("2w", timedelta(weeks=2)),
        ("250ms", timedelta(milliseconds=250)),
        (" 1.5 h ", timedelta(minutes=90)),
        ("30", timedelta(seconds=30)),
        (45, timedelta(seconds=45)),
        (0.5, timedelta(milliseconds=500)),
        (timedelta(hours=1), timedelta(hours=1)),
    ],
    ids=repr,
)
def test_accepted(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5 minutes", "-5m", "5y", "h", True, None, [5]], ids=repr)
def test_refused_names_the_forms(text: object) -> None:
    with pytest.raises(ValueError, match=r"not a duration: .*\(use e\.g\. '30s'"):
        parse_duration(text)
