"""Address-list CSV files (pure): the one reader behind every import of addresses.

The suppression imports (``mailgate suppress import``, ``mailgate suppressions import``
through the admin API, and the API's own ``text/csv`` body) and the consent import read
their files here; each describes its file with a ``Columns`` record and gets rows back.
Text goes in (a string or the lines of a file opened with ``newline=""``), rows or
problems come out; no file is opened here.

The rules, the same for every import:

* Columns are mapped by the name in the header row, in any order; names are compared
  trimmed and in lower case (``Address`` is ``address``). A format that allows it
  (``headerless``) may also be given without a header: its first columns are then taken
  in the format's order (``address,reason``), and the first row is read as a header
  exactly when it names a required column.
* A header is checked as a whole before any row is read, and ``CsvFormatError`` names
  every problem at once: a required column missing, a known column named twice, and each
  unknown column by name (a misspelt ``adress`` would otherwise import every row without
  its address), with the columns the format knows.
* Columns without a name are allowed (spreadsheets pad the header) but must stay empty:
  a row with a value there, or beyond the last column, is a ``RowProblem`` (an unquoted
  comma in a reason would otherwise silently cut it short). A short row has empty values
  for its missing cells; an empty line is skipped. Line numbers are the file's physical
  lines, so a problem can be found in an editor.
* A format with ``unknown="ignore"`` (the consent import, whose CRM exports carry many
  other columns) accepts unknown, unnamed and extra columns and reads past them.
"""

from __future__ import annotations

import csv
import difflib
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from gateway.errors import GatewayError

__all__ = ["Columns", "CsvFormatError", "Row", "RowProblem", "read_rows"]


class CsvFormatError(GatewayError):
    """The header row cannot be used; the message names every problem and the columns."""


@dataclass(frozen=True, slots=True)
class Columns:
    """The columns of one kind of file.

    ``names`` are every column the format knows, in lower case; a file without a header
    holds the first ``headerless`` of them, in this order (0: a header is required).
    ``unknown`` says what a header naming another column gets: ``refuse`` (an error) or
    ``ignore`` (its values are not read).
    """

    names: tuple[str, ...]
    required: frozenset[str]
    headerless: int = 0
    unknown: Literal["refuse", "ignore"] = "refuse"

    def __post_init__(self) -> None:
        if not self.required <= set(self.names) or self.headerless > len(self.names):
            raise ValueError("required and header-less columns must be among the names")


@dataclass(frozen=True, slots=True)
class Row:
    """One row: its line number and the value of each known column the file has."""

    line: int
    values: Mapping[str, str]

    def get(self, name: str) -> str:
        """The value of column ``name``; empty when the file has no such column or cell."""
        return self.values.get(name, "")


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A row that cannot be read, and why, in words for the operator."""

    line: int
    problem: str


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _header_problems(header: list[str], columns: Columns) -> list[str]:
    problems: list[str] = []
    named = [name for name in header if name]
    missing = [n for n in columns.names if n in columns.required and n not in named]
    if missing:
        required = _quoted(n for n in columns.names if n in columns.required)
        problems.append(f"no {_quoted(missing)} column (required: {required})")
    twice = list(dict.fromkeys(n for n in named if n in columns.names and named.count(n) > 1))
    if twice:
        problems.append(f"column {_quoted(twice)} is named more than once")
    unknown = [] if columns.unknown == "ignore" else [n for n in named if n not in columns.names]
    for name in dict.fromkeys(unknown):
        match = difflib.get_close_matches(name, columns.names, n=1, cutoff=0.6)
        hint = f" (did you mean {match[0]!r}?)" if match else ""
        problems.append(f"unknown column {name!r}{hint}")
    if unknown:
        problems.append(f"the known columns are {_quoted(columns.names)}")
    return problems


def read_rows(text: str | Iterable[str], columns: Columns) -> Iterator[Row | RowProblem]:
    """Read the rows of a CSV ``text`` (or its lines, with their line endings).

    Raises ``CsvFormatError`` for a header that cannot be used, before the first row;
    yields a ``RowProblem`` for a row that cannot be read and goes on with the next.
    """
    lines = io.StringIO(text, newline="") if isinstance(text, str) else text
    reader = csv.reader(lines)
    first = next(reader, None)
    if first is None:
        if not columns.headerless:
            required = _quoted(n for n in columns.names if n in columns.required)
            raise CsvFormatError(f"the file is empty; its first row must name {required}")
        return
    header = [cell.strip().lower() for cell in first]
    if columns.headerless and not columns.required & set(header):
        header = list(columns.names[: columns.headerless])
        row = _row(reader.line_num, first, header, columns)
        if row is not None:
            yield row
    else:
        problems = _header_problems(header, columns)
        if problems:
            raise CsvFormatError("; ".join(problems))
    for cells in reader:
        row = _row(reader.line_num, cells, header, columns)
        if row is not None:
            yield row


def _row(
    line: int, cells: list[str], header: list[str], columns: Columns
) -> Row | RowProblem | None:
    if not cells:
        return None  # an empty line
    if columns.unknown == "refuse":
        # Ignored columns are read past; otherwise a value needs a column named to hold it.
        stray = [
            str(i + 1)
            for i, cell in enumerate(cells)
            if cell.strip() and (i >= len(header) or not header[i])
        ]
        if stray:
            return RowProblem(line, f"a value in column {', '.join(stray)}, which has no name")
    values = {
        name: cells[i] if i < len(cells) else ""
        for i, name in enumerate(header)
        if name in columns.names
    }
    return Row(line, MappingProxyType(values))
