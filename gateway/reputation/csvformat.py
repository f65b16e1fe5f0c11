"""The suppression list's CSV format, shared by the CLI and the admin API.

One header and one row layout for exports, and one import format read by
``gateway.mail.addresslists``, so a file exported through either can be read back through
either. An import reads ``address`` and ``reason``; the other exported columns are known
(so an export can be imported as it is) and not read. A file may also have no header:
then its rows are ``address[,reason]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from gateway.mail.addresslists import Columns, RowProblem, read_rows
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


SUPPRESSION_IMPORT = Columns(
    names=(
        "address",
        "reason",
        *(name for name in CSV_FIELDS if name not in ("address", "reason")),
    ),
    required=frozenset({"address"}),
    headerless=2,
)


def import_rows(text: str | Iterable[str]) -> Iterator[tuple[str, str] | RowProblem]:
    """``(address, reason)`` as written in each row of an import, or the row's problem.

    The address is not checked here (the import counts what ``addresses.parse`` refuses);
    ``CsvFormatError`` is raised for a header that cannot be used.
    """
    for row in read_rows(text, SUPPRESSION_IMPORT):
        yield row if isinstance(row, RowProblem) else (row.get("address"), row.get("reason"))


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
