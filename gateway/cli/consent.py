"""``mailgate consent``: import a CRM's relationship data, and explain a recipient's standing.

* ``consent import FILE.csv [--dealer ID]`` records interactions and opt-ins, in batches of
  one transaction each, with a progress bar on a terminal. Importing a file again changes
  nothing (each event has a natural key: dealer, address, event, date, reference), so an
  interrupted import is simply run again. Rows that cannot be read are counted and the
  first few are shown with their line numbers; the others are imported.
* ``consent show ADDRESS --dealer ID [--at DATE] [--json]`` lists the recipient's events,
  the window each opens under the dealer's rules, whether and until when commercial mail
  may go to it, and what would renew it.

CSV columns: a header row is required, names in any order; ``--dealer`` stands in for a
missing ``dealer`` column. Each row is read by ``gateway.consent.csvformat.parse_row``,
the same reader ``POST /api/dealers/{dealer}/consent`` uses, whose docstring lists the
columns.

Exit codes: 0 done, 1 nothing found or rows rejected, 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from gateway.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, Progress, settings_for
from gateway.clock import SystemClock
from gateway.consent.csvformat import COLUMNS, RowError, parse_row
from gateway.consent.ops import ConsentOps, explanation_json
from gateway.consent.rules import ConsentEvent, Interaction, Preference
from gateway.mail.addresslists import CsvFormatError, Row, read_rows
from gateway.policy.loader import load_policy_set
from gateway.storage.base import open_storage

BATCH = 5000
SHOWN_PROBLEMS = 10
_NO_WINDOW = {
    Interaction.EXPRESS_CONSENT.value: "consent until withdrawn",
    Interaction.WITHDRAWN.value: "ends consent until it is given again",
}


def _count_lines(path: Path) -> int:
    lines = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            lines += chunk.count(b"\n")
    return max(lines - 1, 0)  # the header


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        try:
            for row in read_rows(handle, COLUMNS):
                assert isinstance(row, Row)  # an "ignore" format has no row problems
                yield row.line, dict(row.values)
        except CsvFormatError as exc:
            raise RowError(str(exc)) from None


async def import_file(
    ops: ConsentOps,
    path: Path,
    dealer: str | None,
    dealers: frozenset[str] | None,
    *,
    batch: int = BATCH,
    progress: Any = None,
) -> tuple[int, int, list[tuple[int, str]]]:
    """Import ``path``; return rows read, rows new or changed, and the rejected rows."""
    read = changed = 0
    rejected: list[tuple[int, str]] = []
    events: list[ConsentEvent] = []
    prefs: list[Preference] = []

    async def flush() -> None:
        nonlocal changed
        if events or prefs:
            changed += await ops.record(events, prefs)
            if progress is not None:
                progress.advance(len(events) + len(prefs))
            events.clear()
            prefs.clear()

    for line, row in _rows(path):
        read += 1
        try:
            item = parse_row(row, dealer, dealers)
        except RowError as exc:
            rejected.append((line, str(exc)))
            if progress is not None:
                progress.advance()
            continue
        if isinstance(item, Preference):
            prefs.append(item)
        else:
            events.append(item)
        if len(events) + len(prefs) >= batch:
            await flush()
    await flush()
    return read, changed, rejected


def cmd_consent_import(args: argparse.Namespace) -> int:
    """``mailgate consent import FILE.csv``."""
    settings = settings_for(args)
    path: Path = args.file
    try:
        total = _count_lines(path)
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAIL
    policies = load_policy_set(settings.server.policies_dir)
    dealers = frozenset(policies.dealers)
    if args.dealer and args.dealer not in dealers:
        print(f"no dealer {args.dealer!r} in {settings.server.policies_dir}", file=sys.stderr)
        return EXIT_USAGE

    async def run() -> int:
        storage = await open_storage(settings.storage_url)
        progress = Progress(f"importing {path.name}", total)
        try:
            read, changed, rejected = await import_file(
                ConsentOps(storage, SystemClock()),
                path,
                args.dealer,
                dealers,
                batch=args.batch,
                progress=progress,
            )
        except RowError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        finally:
            progress.finish()
            await storage.close()
        for line, problem in rejected[:SHOWN_PROBLEMS]:
            print(f"{path}:{line}: {problem}", file=sys.stderr)
        if len(rejected) > SHOWN_PROBLEMS:
            print(f"... and {len(rejected) - SHOWN_PROBLEMS} more", file=sys.stderr)
        unchanged = read - changed - len(rejected)
        print(
            f"{read} rows: {changed} new or changed, {unchanged} already recorded, "
            f"{len(rejected)} rejected"
        )
        return EXIT_FAIL if rejected else EXIT_OK

    return asyncio.run(run())


def render(data: dict[str, Any]) -> str:
    """The human form of ``explanation_json`` output."""
    rules = data["rules"]
    out = [f"{data['address']}  rules: {rules['name'] or 'none'}"]
    if not rules["enforce"]:
        out.append("  the dealer's policy enforces no consent rules")
    out.append("events:")
    for e in data["events"] or []:
        paid = f" last payment {e['last_payment']}" if e["last_payment"] else ""
        ref = f" [{e['ref']}]" if e["ref"] else ""
        if e["window"]:
            window = f"opens {e['window']}, ends {e['window_ends']}"
        else:
            window = _NO_WINDOW.get(e["kind"], "opens no window under these rules")
        via = f" via {e['source']}" if e["source"] else ""
        proof = f" proof: {e['proof']}" if e["proof"] else ""
        out.append(f"  {e['on']}  {e['kind']}{paid}{ref}{via}{proof}: {window}")
    if not data["events"]:
        out.append("  (none)")
    if data["preferences"]:
        out.append("preferences:")
        for p in data["preferences"]:
            state = "opt-in" if p["granted"] else "opt-out"
            via = f" via {p['source']}" if p["source"] else ""
            out.append(f"  {p['at'][:10]}  {p['channel']} {p['topic']}: {state}{via}")
    out.append("commercial email:")
    for topic, e in data["eligibility"].items():
        verdict = "eligible" if e["eligible"] else "LOCKED"
        until = f" until {e['until']}" if e["until"] else ""
        out.append(f"  {topic:<18} {verdict}{until}: {e['reason']}")
    out.append(f"renewed by: {data['renewal']}")
    return "\n".join(out)


def cmd_consent_show(args: argparse.Namespace) -> int:
    """``mailgate consent show ADDRESS --dealer ID``."""
    settings = settings_for(args)
    policy = load_policy_set(settings.server.policies_dir).dealer(args.dealer)
    if policy is None:
        print(f"no dealer {args.dealer!r} in {settings.server.policies_dir}", file=sys.stderr)
        return EXIT_USAGE
    at = None
    if args.at:
        try:
            at = datetime.combine(date.fromisoformat(args.at), time(12), UTC)
        except ValueError:
            print(f"--at {args.at!r} is not a date (YYYY-MM-DD)", file=sys.stderr)
            return EXIT_USAGE

    async def run() -> int:
        storage = await open_storage(settings.storage_url)
        try:
            shown = await ConsentOps(storage, SystemClock()).explain(policy, args.address, at)
        finally:
            await storage.close()
        data = explanation_json(shown)
        print(json.dumps(data, indent=2) if args.json else render(data))
        return EXIT_OK if shown.events or shown.preferences else EXIT_FAIL

    return asyncio.run(run())


def register(subparsers: Any) -> None:
    """Add ``consent import`` and ``consent show`` to the ``mailgate`` subcommands."""
    consent = subparsers.add_parser(
        "consent", help="customers' interactions and opt-ins; eligibility windows"
    ).add_subparsers(dest="consent_command", required=True)
    p = consent.add_parser("import", help="record interactions and opt-ins from a CSV file")
    p.add_argument("file", type=Path, metavar="FILE.csv")
    p.add_argument("--dealer", help="the dealer of rows without a dealer column")
    p.add_argument("--batch", type=int, default=BATCH, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_consent_import)
    p = consent.add_parser("show", help="explain whether a dealer may email an address")
    p.add_argument("address")
    p.add_argument("--dealer", required=True)
    p.add_argument("--at", help="evaluate on this day (YYYY-MM-DD) instead of today")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_consent_show)
