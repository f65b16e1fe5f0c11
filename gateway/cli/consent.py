"""``mailgate consent``: import a CRM's relationship data, and explain a recipient's standing.

* ``consent import FILE.csv [--dealer ID]`` records interactions and opt-ins, in batches of
  one transaction each, with a progress bar on a terminal. Importing a file again changes
  nothing (each event has a natural key: dealer, address, event, date, reference), so an
  interrupted import is simply run again. Rows that cannot be read are counted and the
  first few are shown with their line numbers; the others are imported.
* ``consent show ADDRESS --dealer ID [--at DATE] [--json]`` lists the recipient's events,
  the window each opens under the dealer's rules, whether and until when commercial mail
  may go to it, and what would renew it.

CSV columns (a header row is required; names in any order, unknown columns ignored):
``dealer`` (or ``--dealer``), ``address``, ``event`` (inquiry, sale-cash, sale-finance,
service-repair-order, showroom-visit, email-reply, express-consent, consent-withdrawn,
opt-in, opt-out), ``date`` (YYYY-MM-DD; opt-in/opt-out may carry a time), and optionally
``last_payment`` (finance or lease), ``reference``, ``source``, ``proof`` (express consent)
and ``topic`` (opt-in/opt-out: dealer-marketing, service-follow-up, third-party;
``channel`` defaults to email).

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

from gateway.addresslists import Columns, CsvFormatError, Row, read_rows
from gateway.clock import SystemClock
from gateway.consent.ops import ConsentOps, explanation_json
from gateway.consent.rules import (
    ConsentEvent,
    Interaction,
    Preference,
    Topic,
    normalise_address,
)
from gateway.policy.loader import load_policy_set
from gateway.settings import Settings, load_settings
from gateway.storage.base import open_storage
from gateway.types import DealerId

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
BATCH = 5000
SHOWN_PROBLEMS = 10
PREFERENCE_EVENTS = {"opt-in": True, "opt-out": False}
_NO_WINDOW = {
    Interaction.EXPRESS_CONSENT.value: "consent until withdrawn",
    Interaction.WITHDRAWN.value: "ends consent until it is given again",
}


class RowError(ValueError):
    """A CSV row that cannot be recorded; the message says why."""


def _settings(args: argparse.Namespace) -> Settings:
    path: Path | None = args.config
    if path is None and Path("mailgate.toml").exists():
        path = Path("mailgate.toml")
    return load_settings(path)


def _day(text: str, column: str) -> date:
    try:
        return date.fromisoformat(text.strip()[:10])
    except ValueError:
        raise RowError(f"{column} {text!r} is not a date (YYYY-MM-DD)") from None


def _moment(text: str) -> datetime:
    text = text.strip()
    try:
        when = datetime.fromisoformat(text) if len(text) > 10 else None
    except ValueError:
        raise RowError(f"date {text!r} is not a date or time (ISO 8601)") from None
    if when is None:
        return datetime.combine(_day(text, "date"), time(), UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_row(
    row: dict[str, str], dealer: str | None, dealers: frozenset[str] | None
) -> ConsentEvent | Preference:
    """One CSV row as an event or a preference; raises ``RowError`` saying what is wrong."""
    dealer_id = (row.get("dealer") or dealer or "").strip()
    if not dealer_id:
        raise RowError("no dealer (a dealer column or --dealer)")
    if dealers is not None and dealer_id not in dealers:
        raise RowError(f"dealer {dealer_id!r} has no policy file")
    address = normalise_address(row.get("address") or "")
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in address):
        raise RowError(f"address {row.get('address')!r} is not an e-mail address")
    event = (row.get("event") or "").strip().lower()
    when = row.get("date") or ""
    if not when.strip():
        raise RowError("no date")
    source = (row.get("source") or "").strip()
    if event in PREFERENCE_EVENTS:
        topic_text = (row.get("topic") or Topic.DEALER_MARKETING.value).strip().lower()
        try:
            topic = Topic(topic_text)
        except ValueError:
            raise RowError(f"topic {topic_text!r} is not one of {', '.join(Topic)}") from None
        return Preference(
            DealerId(dealer_id),
            address,
            topic,
            PREFERENCE_EVENTS[event],
            _moment(when),
            source,
            (row.get("channel") or "email").strip().lower(),
        )
    try:
        kind = Interaction(event)
    except ValueError:
        known = ", ".join([*Interaction, *PREFERENCE_EVENTS])
        raise RowError(f"event {event!r} is not one of {known}") from None
    paid = row.get("last_payment") or ""
    return ConsentEvent(
        DealerId(dealer_id),
        address,
        kind,
        _day(when, "date"),
        _day(paid, "last_payment") if paid.strip() else None,
        (row.get("reference") or "").strip(),
        source,
        (row.get("proof") or "").strip(),
    )


def _count_lines(path: Path) -> int:
    lines = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            lines += chunk.count(b"\n")
    return max(lines - 1, 0)  # the header


# Unknown columns are ignored: a CRM export carries many the import does not read.
CONSENT_CSV = Columns(
    names=(
        "dealer",
        "address",
        "event",
        "date",
        "last_payment",
        "reference",
        "source",
        "proof",
        "topic",
        "channel",
    ),
    required=frozenset({"address", "event", "date"}),
    unknown="ignore",
)


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        try:
            for row in read_rows(handle, CONSENT_CSV):
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
    from gateway.cli.reputation import Progress

    settings = _settings(args)
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
    settings = _settings(args)
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
