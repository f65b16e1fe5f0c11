"""The suppression list's CSV format, shared by the CLI and the admin API.

One header and one row layout for exports, so a file exported through either can be read
back through either; ``import_rows`` is the one reader of an import (``address`` and
``reason`` are what it reads).
"""

from __future__ import annotations

import csv
import io
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


def import_rows(text: str) -> list[tuple[str, str]]:
    """``(address, reason)`` rows of a CSV text, with or without a header line.

    With a header (a first row naming an ``address`` column) the columns are found by
    name, so an export can be imported as it is; without one the first column is the
    address and the second, if any, the reason. Addresses are not checked here.
    """
    reader = csv.reader(io.StringIO(text))
    first = next(reader, [])
    header = [c.strip().lower() for c in first]
    if "address" in header:
        a = header.index("address")
        r = header.index("reason") if "reason" in header else -1
        return [(row[a], row[r] if 0 <= r < len(row) else "") for row in reader if len(row) > a]
    return [(row[0], row[1] if len(row) > 1 else "") for row in (first, *reader) if row]
