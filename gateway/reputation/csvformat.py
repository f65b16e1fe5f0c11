"""The suppression list's CSV export format, shared by the CLI and the admin API.

One header and one row layout, so a file exported through either can be read back
through either (``address`` and ``reason`` are what an import reads).
"""

from __future__ import annotations

from datetime import datetime

from gateway.reputation.records import Suppression

CSV_FIELDS = (
    "list",
    "address",
    "reason",
    "source",
    "created_at",
    "expires_at",
    "lifted_at",
    "lifted_by",
    "lift_reason",
)


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else ""


def suppression_row(entry: Suppression) -> tuple[str, ...]:
    """One exported row, in the order of ``CSV_FIELDS``."""
    return (
        entry.scope,
        entry.address,
        entry.reason,
        entry.source,
        _when(entry.created_at),
        _when(entry.expires_at),
        _when(entry.lifted_at),
        entry.lifted_by,
        entry.lift_reason,
    )
