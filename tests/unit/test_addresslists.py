"""The one CSV reader of every address import: header mapping, refusals, row problems."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from gateway.consent.csvformat import COLUMNS as CONSENT_CSV
from gateway.mail.addresslists import Columns, CsvFormatError, Row, RowProblem, read_rows
from gateway.reputation.csvformat import (
    CSV_FIELDS,
    SUPPRESSION_IMPORT,
    import_rows,
    suppression_row,
)
from gateway.reputation.records import Suppression

LIST = Columns(("address", "reason", "source"), frozenset({"address"}), headerless=2)


def rows(text: str, columns: Columns = LIST) -> list[tuple[int, dict[str, str]] | str]:
    out: list[tuple[int, dict[str, str]] | str] = []
    for row in read_rows(text, columns):
        out.append(
            f"{row.line}: {row.problem}"
            if isinstance(row, RowProblem)
            else (row.line, dict(row.values))
        )
    return out


READ = [
    (
        "header",
        "address,reason\na@x.example,spam\n",
        [(2, {"address": "a@x.example", "reason": "spam"})],
    ),
    (
        "any order and case",
        " Reason , ADDRESS\nspam,a@x.example\n",
        [(2, {"reason": "spam", "address": "a@x.example"})],
    ),
    ("crlf line endings", "address\r\na@x.example\r\n", [(2, {"address": "a@x.example"})]),
    (
        "no header",
        "a@x.example,spam\nb@x.example\n",
        [
            (1, {"address": "a@x.example", "reason": "spam"}),
            (2, {"address": "b@x.example", "reason": ""}),
        ],
    ),
    (
        "short row",
        "address,reason,source\na@x.example\n",
        [(2, {"address": "a@x.example", "reason": "", "source": ""})],
    ),
    ("empty lines skipped", "address\n\na@x.example\n\n", [(3, {"address": "a@x.example"})]),
    (
        "quoted newline keeps physical lines",
        'address,reason\na@x.example,"two\nlines"\nb@x.example,x\n',
        [
            (3, {"address": "a@x.example", "reason": "two\nlines"}),
            (4, {"address": "b@x.example", "reason": "x"}),
        ],
    ),
    (
        "padded header, empty cells",
        "address,reason,,\na@x.example,spam,,\n",
        [(2, {"address": "a@x.example", "reason": "spam"})],
    ),
    (
        "value in an unnamed column",
        "address,reason\na@x.example,spam, by phone\n",
        ["2: a value in column 3, which has no name"],
    ),
    (
        "value past a header-less row",
        "a@x.example,spam,extra\n",
        ["1: a value in column 3, which has no name"],
    ),
    ("empty file", "", []),
]


@pytest.mark.parametrize(("text", "expected"), [r[1:] for r in READ], ids=[r[0] for r in READ])
def test_read(text: str, expected: list[object]) -> None:
    assert rows(text) == expected


REFUSED = [
    (
        "unknown column by name",
        "address,reson\n",
        "unknown column 'reson' (did you mean 'reason'?); "
        "the known columns are 'address', 'reason', 'source'",
    ),
    (
        "every problem at once",
        "address,address,email\n",
        "column 'address' is named more than once; unknown column 'email'",
    ),
    ("required column missing", "reason,source\n", "no 'address' column (required: 'address')"),
]


@pytest.mark.parametrize(("text", "message"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_header_refused(text: str, message: str) -> None:
    columns = Columns(("address", "reason", "source"), frozenset({"address"}))  # header required
    with pytest.raises(CsvFormatError) as caught:
        rows(text, columns)
    assert message in str(caught.value)


def test_header_is_refused_before_any_row() -> None:
    lines = iter(["adress\n", "a@x.example\n"])
    reader = read_rows(lines, Columns(("address",), frozenset({"address"})))
    with pytest.raises(CsvFormatError, match="unknown column 'adress'"):
        next(reader)
    assert next(lines) == "a@x.example\n"  # nothing past the header was read


def test_a_file_that_needs_a_header_may_not_be_empty() -> None:
    with pytest.raises(CsvFormatError, match="the file is empty"):
        rows("", Columns(("address",), frozenset({"address"})))


def test_ignore_format_reads_past_other_columns() -> None:
    text = "Dealer,Address,Event,Date,Notes,,\nd,a@x.example,inquiry,2025-01-01,call back,x,y,z\n"
    got = list(read_rows(text, CONSENT_CSV))
    assert got == [
        Row(2, {"dealer": "d", "address": "a@x.example", "event": "inquiry", "date": "2025-01-01"})
    ]
    with pytest.raises(CsvFormatError, match="no 'event', 'date' column"):
        list(read_rows("address,notes\n", CONSENT_CSV))


def test_columns_must_be_consistent() -> None:
    with pytest.raises(ValueError):
        Columns(("address",), frozenset({"email"}))
    with pytest.raises(ValueError):
        Columns(("address",), frozenset(), headerless=2)


def test_a_suppression_export_imports_as_it_is() -> None:
    entry = Suppression(
        None, "a@x.example", "spam complaint", "auto", datetime(2026, 1, 5, tzinfo=UTC)
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    writer.writerow(suppression_row(entry))
    assert list(import_rows(out.getvalue())) == [("a@x.example", "spam complaint")]
    assert set(SUPPRESSION_IMPORT.names) == set(CSV_FIELDS)


def test_suppression_import_without_header_and_with_a_typo() -> None:
    assert list(import_rows("a@x.example,old list\nb@x.example\n")) == [
        ("a@x.example", "old list"),
        ("b@x.example", ""),
    ]
    with pytest.raises(
        CsvFormatError, match="unknown column 'resaon' \\(did you mean 'reason'\\?\\)"
    ):
        list(import_rows("address,resaon\na@x.example,x\n"))
