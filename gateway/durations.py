"""Durations as operators write them: ``"90s"``, ``"5m"``, ``"72h"``, ``"5d"`` (pure).

One parser for ``mailgate.toml`` (``settings``), the policy files (``policy.loader``, which
turns every duration into a ``timedelta`` at load time) and the command-line and admin
API arguments that take a duration, so the same text means the same time everywhere.
"""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["parse_duration"]

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
