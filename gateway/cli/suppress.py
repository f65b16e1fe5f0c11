"""``mailgate suppress add|remove|list|import|export``: suppression lists, offline on the store.

The same operations as ``POST``/``DELETE /api/suppressions``, ``…/import`` and ``…/export``
(``gateway/cli/offline.py``): an address added here is recorded with source
``admin:<operator>`` (``--by``, else the login name), exactly as the API records
``admin:<by>``; lifting is recorded with who and why, nothing is deleted. ``--dealer ID``
picks a dealer's list, ``--global`` the list every dealer obeys. Imports go in batches of
``BATCH`` with a progress bar on a terminal. With a gateway running, ``mailgate admin
suppressions …`` does the same through the API.

Exit codes: 0 done, 1 not found, 2 usage error (no list named, an invalid address).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any, TextIO

from gateway.admin import views
from gateway.admin.ops import MAX_LIMIT, AdminOps
from gateway.cli import offline, render
from gateway.cli.common import EXIT_OK, EXIT_USAGE, Progress, operator_name
from gateway.mail.addresslists import CsvFormatError, RowProblem
from gateway.reputation.csvformat import CSV_FIELDS, import_rows, suppression_row
from gateway.reputation.records import GLOBAL

BATCH = 1000  # rows per import call, as ``mailgate admin suppressions import`` sends them


def _list_name(args: argparse.Namespace) -> str | None:
    """The list ``--dealer``/``--global`` name, as the API names it (``*``: global)."""
    if getattr(args, "global_list", False):
        return GLOBAL
    dealer: str | None = getattr(args, "dealer", None)
    return dealer or None


def read_rows(path: Path) -> tuple[list[tuple[str, str]], int]:
    """The ``(address, reason)`` rows of a CSV file, and how many rows could not be read.

    ``reputation.csvformat.import_rows`` reads it; each unreadable row is shown on stderr
    with its line number (and counted as not an address), and a header that cannot be
    used raises ``CsvFormatError``.
    """
    with path.open(newline="", encoding="utf-8-sig") as handle:
        entries = list(import_rows(handle))
    rows = [e for e in entries if not isinstance(e, RowProblem)]
    for problem in (e for e in entries if isinstance(e, RowProblem)):
        print(f"{path}:{problem.line}: {problem.problem}", file=sys.stderr)
    return rows, len(entries) - len(rows)


def cmd_suppress(args: argparse.Namespace) -> int:
    """``suppress add|remove|list|import|export``."""
    action = args.suppress_command
    list_name = _list_name(args)
    if action in ("add", "remove", "import") and list_name is None:
        print("say which list: --dealer ID or --global", file=sys.stderr)
        return EXIT_USAGE
    rows: list[tuple[str, str]] = []
    unreadable = 0
    if action == "import":
        try:
            rows, unreadable = read_rows(Path(args.file))
        except (OSError, UnicodeDecodeError) as exc:
            print(f"{args.file}: cannot read: {getattr(exc, 'strerror', None) or exc}",
                  file=sys.stderr)  # fmt: skip
            return EXIT_USAGE
        except CsvFormatError as exc:
            print(f"{args.file}: {exc}", file=sys.stderr)
            return EXIT_USAGE

    async def work(ops: AdminOps) -> int:
        if list_name is not None:
            ops.suppression_list(list_name)  # an unknown dealer is refused before any output
        if action == "list":
            entries = [views.suppression_json(e) async for p in ops.export(list_name, args.all)
                       for e in p]  # fmt: skip
            print(render.entries(entries))
            return EXIT_OK
        if action == "export":
            if args.file in (None, "-"):
                return await _export(ops, list_name, args.all, sys.stdout, None)
            with open(args.file, "w", newline="", encoding="utf-8") as out:
                return await _export(ops, list_name, args.all, out, args.file)
        if action == "add":
            return await _add(ops, list_name, args.addresses, args.reason, operator_name(args))
        if action == "remove":
            address = await ops.lift(list_name, args.address, args.reason, operator_name(args))
            print(f"lifted {address} ({list_name})")
            return EXIT_OK
        return await _import(ops, list_name, rows, unreadable, args.reason, Path(args.file).name)

    return offline.run(args, work)


async def _add(ops: AdminOps, list_name: str | None, items: list[str], reason: str, by: str) -> int:
    results: list[dict[str, str]] = []
    for start in range(0, len(items), MAX_LIMIT):
        chunk = items[start : start + MAX_LIMIT]
        results += [views.outcome_json(o) for o in await ops.suppress(list_name, chunk, reason, by)]
    print(render.outcomes(results))
    return EXIT_USAGE if any(r["result"] == "invalid" for r in results) else EXIT_OK


async def _import(
    ops: AdminOps,
    list_name: str | None,
    rows: list[tuple[str, str]],
    unreadable: int,
    reason: str,
    name: str,
) -> int:
    progress = Progress(f"importing {name}", len(rows))
    totals = {"added": 0, "skipped": 0, "invalid": unreadable}
    for start in range(0, len(rows), BATCH):
        chunk = rows[start : start + BATCH]
        result = views.import_json(
            await ops.import_entries(list_name, chunk, reason, f"import:{name}")
        )
        for key in totals:
            totals[key] += result[key]
        progress.advance(len(chunk))
    progress.finish()
    print(render.imported(totals, list_name or GLOBAL))
    return EXIT_OK


async def _export(
    ops: AdminOps, list_name: str | None, include_all: bool, out: TextIO, path: str | None
) -> int:
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    progress = Progress("exporting", None) if path is not None else None
    written = 0
    async for page in ops.export(list_name, include_all):
        for entry in page:
            writer.writerow(suppression_row(entry))
        written += len(page)
        if progress is not None:
            progress.advance(len(page))
    if progress is not None:
        progress.finish()
        print(f"wrote {written} entries to {path}", file=sys.stderr)
    return EXIT_OK


def _lists(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--dealer", help="the dealer's own list")
    group.add_argument(
        "--global", dest="global_list", action="store_true", help="the list every dealer obeys"
    )


def register(subparsers: Any) -> None:
    """Add ``suppress`` to the ``mailgate`` subcommands."""
    suppress = subparsers.add_parser("suppress", help="suppression lists").add_subparsers(
        dest="suppress_command", required=True
    )
    p = suppress.add_parser("add", help="suppress addresses")
    p.add_argument("addresses", nargs="+", metavar="ADDRESS")
    p.add_argument("--reason", required=True)
    p.add_argument("--by", help="who (default: the login name)")
    _lists(p)
    p.set_defaults(func=cmd_suppress)
    p = suppress.add_parser("remove", help="lift a suppression (recorded, not deleted)")
    p.add_argument("address")
    p.add_argument("--reason", required=True)
    p.add_argument("--by", help="who (default: the login name)")
    _lists(p)
    p.set_defaults(func=cmd_suppress)
    p = suppress.add_parser("list", help="active entries (--all: lifted and expired too)")
    p.add_argument("--all", action="store_true")
    _lists(p)
    p.set_defaults(func=cmd_suppress)
    p = suppress.add_parser("import", help="add every address of a CSV file")
    p.add_argument("file")
    p.add_argument("--reason", default="imported")
    _lists(p)
    p.set_defaults(func=cmd_suppress)
    p = suppress.add_parser("export", help="write entries as CSV (stdout or FILE)")
    p.add_argument("file", nargs="?")
    p.add_argument("--all", action="store_true")
    _lists(p)
    p.set_defaults(func=cmd_suppress)
