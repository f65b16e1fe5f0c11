"""``mailgate consent``: import a CRM's relationship data, and explain a recipient's standing.

* ``consent import FILE.csv [--dealer ID] [--encoding E] [--map 'CRM name=column']...
  [--ignore-unknown-columns]`` records interactions and opt-ins, in batches of one
  transaction each, with a progress bar on a terminal. The whole file is read once first:
  its encoding (``--encoding``; else a byte-order mark; else UTF-8; else Windows-1252, as
  Excel saves CSV, with a warning) and its header (unknown columns are refused by name,
  unless mapped or ignored), so a file that cannot be read writes nothing. Rows that cannot
  be recorded are counted and the first few shown with their line numbers; the others are
  imported. Importing a file again changes nothing (each event has a natural key: dealer,
  address, event, date, reference), so when the store fails part way the command says how
  many rows were committed and running it again finishes the import.
* ``consent show ADDRESS --dealer ID [--at DATE] [--json]`` lists the recipient's events,
  the window each opens under the dealer's rules, whether and until when commercial mail
  may go to it (suppressions included: the answer RCPT TO gives), and what would renew it.

CSV columns: a header row is required, names in any order; ``--dealer`` stands in for a
missing ``dealer`` column. Each row is read by ``gateway.consent.csvformat.parse_row``,
the same reader ``POST /api/dealers/{dealer}/consent`` uses, whose docstring lists the
columns.

Exit codes: 0 done, 1 nothing found or rows rejected, 2 usage error (or a file that cannot
be read: nothing imported), 3 the store failed part way (run the import again).
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import csv
import io
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from gateway.cli import store
from gateway.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Progress,
    add_json,
    config_path,
    emit,
    operator_name,
    settings_for,
)
from gateway.clock import SystemClock, parse_duration
from gateway.consent.crm import STATEMENT_FIELDS, statement_json
from gateway.consent.csvformat import (
    COLUMNS,
    COLUMNS_IGNORING_UNKNOWN,
    RowContext,
    RowError,
    map_header,
    parse_row,
)
from gateway.consent.erasure import Erasures
from gateway.consent.ops import ConsentOps, explanation_json
from gateway.consent.reports import (
    LEDGER_FIELDS,
    REFUSAL_FIELDS,
    STANDING_FIELDS,
    csv_text,
    ledger_json,
    refusal_json,
    standing_json,
)
from gateway.consent.rules import ConsentEvent, ConsentRules, Interaction, Preference
from gateway.datadir import load_or_create_key
from gateway.errors import StorageError
from gateway.mail.addresslists import CsvFormatError, RowProblem, read_rows
from gateway.policy.loader import load_policy_set

BATCH = 5000
SHOWN_PROBLEMS = 10
_NO_WINDOW = {
    Interaction.EXPRESS_CONSENT.value: "consent until withdrawn",
    Interaction.WITHDRAWN.value: "ends consent until it is given again",
}
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))  # fmt: skip
# What Excel on Windows writes for "CSV (Comma delimited)": the ANSI code page, in North
# America and Western Europe Windows-1252.
FALLBACK = "cp1252"


class UnreadableFile(Exception):
    """The file cannot be imported at all (encoding, header); nothing was written."""


@dataclass(frozen=True, slots=True)
class Scan:
    """What the first pass over a file found: how to read it and how many lines it has."""

    encoding: str
    lines: int  # data lines (the header not counted), for the progress bar
    warning: str = ""


def _decodes(path: Path, encoding: str) -> int:
    """Lines in ``path`` if every byte decodes in ``encoding``; else ``UnicodeError``."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    lines = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                # exc.start counts from bytes the decoder held back from the last chunk (a
                # partial character, never a line end), so the line is right.
                at = max(exc.start, 0)
                line = lines + chunk[:at].count(b"\n") + 1
                byte = chunk[at : at + 1].hex().upper() or "?"
                raise UnicodeError(f"line {line}: byte 0x{byte} is not {encoding}") from None
            lines += text.count("\n")
        decoder.decode(b"", final=True)
    return lines


def scan(path: Path, encoding: str | None) -> Scan:
    """Find how to read ``path``: ``encoding`` if given, a BOM, UTF-8, else Windows-1252.

    Reads the whole file once (streaming) so that an encoding problem stops the import
    before a single row is written. Raises ``UnreadableFile`` saying where a byte does not
    decode when no encoding fits.
    """
    with path.open("rb") as handle:
        head = handle.read(4)
    if encoding is None:
        encoding = next((name for bom, name in _BOMS if head.startswith(bom)), None)
    if encoding is not None:
        try:
            codecs.lookup(encoding)
            lines = _decodes(path, encoding)
        except LookupError:
            raise UnreadableFile(
                f"--encoding {encoding!r} is not an encoding Python knows"
            ) from None
        except UnicodeError as exc:
            raise UnreadableFile(f"{exc}; nothing was imported") from None
        return Scan(encoding, max(lines - 1, 0))
    try:
        lines = _decodes(path, "utf-8")
        return Scan("utf-8", max(lines - 1, 0))
    except UnicodeError as utf8_problem:
        try:
            lines = _decodes(path, FALLBACK)
        except UnicodeError as exc:
            raise UnreadableFile(
                f"the file is neither UTF-8 ({utf8_problem}) nor Windows-1252 ({exc}); "
                "say which it is with --encoding; nothing was imported"
            ) from None
        warning = (
            f"not UTF-8 ({utf8_problem}): read as Windows-1252, as Excel saves CSV on "
            "Windows; pass --encoding to choose another"
        )
        return Scan(FALLBACK, max(lines - 1, 0), warning)


@dataclass(slots=True)
class ImportResult:
    """What an import did: rows read, rows new or changed, rows rejected (the first shown)."""

    read: int = 0
    changed: int = 0
    committed: int = 0  # rows in batches committed so far
    rejected: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)
    encoding: str = "utf-8"
    warning: str = ""
    line: int = 0  # the last line read


class ImportInterrupted(Exception):
    """The store failed part way: the batches before are committed, the rest is not."""

    def __init__(self, result: ImportResult, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.result = result


def _with_header(lines: Iterator[str], mapping: Mapping[str, str]) -> Iterator[str]:
    """``lines`` with the header row's names mapped (``--map``); line numbers unchanged."""
    header = next(lines, None)
    if header is None:
        return
    if mapping:
        cells = next(csv.reader([header]))
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerow(map_header(cells, mapping))
        header = out.getvalue()
    yield header
    yield from lines


def _rows(
    path: Path, encoding: str, mapping: Mapping[str, str], ignore_unknown: bool
) -> Iterator[tuple[int, dict[str, str] | str]]:
    """(line, row) for each data row; a row is a problem text when its cells do not fit."""
    columns = COLUMNS_IGNORING_UNKNOWN if ignore_unknown else COLUMNS
    with path.open(newline="", encoding=encoding) as handle:
        try:
            for row in read_rows(_with_header(iter(handle), mapping), columns):
                if isinstance(row, RowProblem):
                    yield row.line, row.problem
                else:
                    yield row.line, dict(row.values)
        except CsvFormatError as exc:
            hint = ""
            if "unknown column" in str(exc):
                hint = (
                    ". Map a CRM's own column onto one of these (--map 'Last Payment="
                    "last_payment') or leave such columns out (--ignore-unknown-columns)"
                )
            raise RowError(f"{exc}{hint}; nothing was imported") from None


async def import_file(
    ops: ConsentOps,
    path: Path,
    context: RowContext,
    *,
    encoding: str | None = None,
    mapping: Mapping[str, str] | None = None,
    ignore_unknown: bool = False,
    batch: int = BATCH,
    progress: Any = None,
) -> ImportResult:
    """Import ``path`` in batches of ``batch`` rows, one transaction each.

    The first pass reads the whole file for its encoding (``scan``) and the header for its
    columns, so that a file that cannot be read stops before anything is written
    (``UnreadableFile``). Rows that cannot be recorded are counted (the first
    ``SHOWN_PROBLEMS`` kept with their line) and the others imported. A store failure part
    way raises ``ImportInterrupted`` with what was committed: every row is recorded under
    its natural key, so running the same import again completes it and changes nothing
    that is already there.
    """
    found = scan(path, encoding)
    result = ImportResult(encoding=found.encoding, warning=found.warning)
    if progress is not None:
        progress.total = found.lines
    events: list[ConsentEvent] = []
    prefs: list[Preference] = []

    async def flush() -> None:
        if events or prefs:
            try:
                result.changed += await ops.record(events, prefs)
            except StorageError as exc:
                raise ImportInterrupted(result, exc) from exc
            result.committed += len(events) + len(prefs)
            if progress is not None:
                progress.advance(len(events) + len(prefs))
            events.clear()
            prefs.clear()

    try:
        for line, row in _rows(path, found.encoding, mapping or {}, ignore_unknown):
            result.read += 1
            result.line = line
            try:
                if isinstance(row, str):
                    raise RowError(row)
                item = parse_row(row, context)
            except RowError as exc:
                result.rejected += 1
                if len(result.problems) < SHOWN_PROBLEMS:
                    result.problems.append((line, str(exc)))
                if progress is not None:
                    progress.advance()
                continue
            if isinstance(item, Preference):
                prefs.append(item)
            else:
                events.append(item)
            if len(events) + len(prefs) >= batch:
                await flush()
    except (csv.Error, UnicodeError, OSError) as exc:
        if result.committed == 0 and result.read == 0:
            raise UnreadableFile(f"cannot read the file: {exc}; nothing was imported") from exc
        raise ImportInterrupted(result, exc) from exc
    except RowError as exc:  # the header: before any row
        raise UnreadableFile(str(exc)) from None
    await flush()
    return result


def _mapping(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        source, equals, target = pair.rpartition("=")
        if not equals or not source.strip() or not target.strip():
            raise ValueError(f"--map {pair!r}: write it as 'CRM column=column'")
        out[source] = target
    return out


def cmd_consent_import(args: argparse.Namespace) -> int:
    """``mailgate consent import FILE.csv``."""
    settings = settings_for(args)
    path: Path = args.file
    if not path.is_file():
        print(f"mailgate: {path}: no such file", file=sys.stderr)
        return EXIT_USAGE
    try:
        mapping = _mapping(args.map or ())
    except ValueError as exc:
        print(f"mailgate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    policies = load_policy_set(settings.server.policies_dir)
    rules: dict[str, ConsentRules] = {d: policy.consent for d, policy in policies.dealers.items()}
    if args.dealer and args.dealer not in rules:
        print(
            f"mailgate: no dealer {args.dealer!r} in {settings.server.policies_dir}",
            file=sys.stderr,
        )
        return EXIT_USAGE

    async def run() -> int:
        storage = await store.open_existing(settings, config_path(args))
        clock = SystemClock()
        progress = Progress(f"importing {path.name}", None)
        try:
            result = await import_file(
                ConsentOps(storage, clock),
                path,
                RowContext(clock.now(), args.dealer, rules),
                encoding=args.encoding,
                mapping=mapping,
                ignore_unknown=args.ignore_unknown_columns,
                batch=args.batch,
                progress=progress,
            )
        except UnreadableFile as exc:
            progress.finish()
            print(f"mailgate: {path}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except ImportInterrupted as exc:
            progress.finish()
            done = exc.result
            print(
                f"mailgate: {path}: the import stopped at line {done.line}: {exc}. "
                f"{done.committed} rows were committed (in batches of {args.batch}), the rest "
                "of the file was not. "
                "Run the same command again to finish: rows already recorded are skipped.",
                file=sys.stderr,
            )
            return EXIT_UNAVAILABLE
        finally:
            await storage.close()
        progress.finish()
        if result.warning:
            print(f"{path}: warning: {result.warning}", file=sys.stderr)
        for line, problem in result.problems:
            print(f"{path}:{line}: {problem}", file=sys.stderr)
        if result.rejected > len(result.problems):
            print(f"... and {result.rejected - len(result.problems)} more", file=sys.stderr)
        unchanged = result.read - result.changed - result.rejected
        data = {
            "read": result.read,
            "changed": result.changed,
            "unchanged": unchanged,
            "rejected": result.rejected,
            "problems": [{"line": line, "problem": text} for line, text in result.problems],
            "encoding": result.encoding,
            "warning": result.warning or None,
        }
        emit(
            args,
            data,
            lambda _d: (
                f"{result.read} rows: {result.changed} new or changed, {unchanged} already "
                f"recorded, {result.rejected} rejected"
            ),
        )
        return EXIT_FAIL if result.rejected else EXIT_OK

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
        elif e["void"]:
            window = e["void"]
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
    if data["suppression"]:
        s = data["suppression"]
        what = "commercial mail" if s["commercial_only"] else "all mail"
        out.append(f"suppressed: {s['since'][:10]} {s['reason']} ({s['source']}): {what} refused")
    out.append("commercial email:")
    for topic, e in data["eligibility"].items():
        verdict = "eligible" if e["eligible"] else "LOCKED"
        until = f" until {e['until']}" if e["until"] else ""
        out.append(f"  {topic:<18} {verdict}{until}: {e['reason']}")
    t = data["transactional"]
    out.append(f"transactional email: {'eligible' if t['eligible'] else 'LOCKED'}: {t['reason']}")
    out.append(f"renewed by: {data['renewal']}")
    return "\n".join(out)


def cmd_consent_show(args: argparse.Namespace) -> int:
    """``mailgate consent show ADDRESS --dealer ID``."""
    settings = settings_for(args)
    policy = load_policy_set(settings.server.policies_dir).dealer(args.dealer)
    if policy is None:
        print(
            f"mailgate: no dealer {args.dealer!r} in {settings.server.policies_dir}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    at = None
    if args.at:
        try:
            # Noon of that day on the dealer's calendar (consent.time_zone).
            at = datetime.combine(date.fromisoformat(args.at), time(12), policy.consent.zone)
        except ValueError:
            print(f"mailgate: --at {args.at!r} is not a date (YYYY-MM-DD)", file=sys.stderr)
            return EXIT_USAGE

    async def run() -> int:
        storage = await store.open_existing(settings, config_path(args))
        try:
            shown = await ConsentOps(storage, SystemClock()).explain(policy, args.address, at)
        finally:
            await storage.close()
        data = explanation_json(shown)
        print(json.dumps(data, indent=2) if args.json else render(data))
        return EXIT_OK if shown.events or shown.preferences else EXIT_FAIL

    return asyncio.run(run())


def _policy_or_usage(args: argparse.Namespace) -> tuple[Any, Any] | None:
    settings = settings_for(args)
    policy = load_policy_set(settings.server.policies_dir).dealer(args.dealer)
    if policy is None:
        print(
            f"mailgate: no dealer {args.dealer!r} in {settings.server.policies_dir}",
            file=sys.stderr,
        )
        return None
    return settings, policy


def _day_arg(text: str | None, name: str, zone: Any) -> datetime | None:
    """The start of day ``text`` (YYYY-MM-DD) in the dealer's zone, or an ISO time."""
    if not text:
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), zone)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a date (YYYY-MM-DD) or an ISO time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def _emit(
    pages: Any,
    fields: tuple[str, ...],
    as_json: Callable[[Any], dict[str, Any]],
    args: Any,
    line: Callable[[dict[str, Any]], str],
) -> Callable[[], Any]:
    """Print ``pages`` as CSV (``--csv``), JSON Lines (``--json``) or one line each."""

    async def run() -> int:
        count = 0
        header = True
        async for page in pages:
            rows = [as_json(item) for item in page]
            count += len(rows)
            if args.csv:
                sys.stdout.write("".join(csv_text(fields, rows, header)))
                header = False
            else:
                for row in rows:
                    print(json.dumps(row) if args.json else line(row))
        if args.csv and header:
            sys.stdout.write("".join(csv_text(fields, ())))
        return count

    return run


def _offline(args: argparse.Namespace, report: Callable[[ConsentOps, Any], Any]) -> int:
    found = _policy_or_usage(args)
    if found is None:
        return EXIT_USAGE
    settings, policy = found

    async def run() -> int:
        storage = await store.open_existing(settings, config_path(args))
        try:
            count = await report(ConsentOps(storage, SystemClock()), policy)()
        finally:
            await storage.close()
        if not (args.csv or args.json):
            print(f"{count} recipient(s)" if count != 1 else "1 recipient", file=sys.stderr)
        return EXIT_OK if count else EXIT_FAIL

    try:
        return asyncio.run(run())
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE


def _standing_line(row: dict[str, Any]) -> str:
    until = f" until {row['until']} ({row['days_left']} days)" if row["until"] else ""
    state = "eligible" if row["eligible"] else "LOCKED"
    return f"{row['address']}  {state}{until}: {row['reason']}"


def cmd_consent_expiring(args: argparse.Namespace) -> int:
    """``mailgate consent expiring --dealer ID --within 30d``."""
    try:
        within = parse_duration(args.within)
    except (ValueError, OverflowError):
        print(f"mailgate: --within {args.within!r} is not a duration (30d, 8w)", file=sys.stderr)
        return EXIT_USAGE
    return _offline(
        args,
        lambda ops, policy: _emit(
            ops.expiring(policy, within), STANDING_FIELDS, standing_json, args, _standing_line
        ),
    )


def cmd_consent_locked(args: argparse.Namespace) -> int:
    """``mailgate consent locked --dealer ID``."""
    return _offline(
        args,
        lambda ops, policy: _emit(
            ops.locked(policy), STANDING_FIELDS, standing_json, args, _standing_line
        ),
    )


def cmd_consent_review(args: argparse.Namespace) -> int:
    """``mailgate consent review --dealer ID``: consent older than ``review_after``."""
    return _offline(
        args,
        lambda ops, policy: _emit(
            ops.review(policy), STANDING_FIELDS, standing_json, args, _standing_line
        ),
    )


def _ledger_line(row: dict[str, Any]) -> str:
    basis = row["basis"]
    if row["event"]:
        basis = f"{row['event']} of {row['event_on']}"
        basis += f" [{row['reference']}]" if row["reference"] else ""
        basis += f" via {row['source']}" if row["source"] else ""
        basis += f" proof: {row['proof']}" if row["proof"] else ""
    rules = row["rules"] or "no rules"
    return (
        f"{row['at']}  {row['message_id']}  {row['recipient']}  {row['category']}/{row['topic']}"
        f"  {rules}: {basis}: {row['reason']}"
    )


def cmd_consent_evidence(args: argparse.Namespace) -> int:
    """``mailgate consent evidence [ADDRESS] --dealer ID [--since D] [--until D]``."""

    def report(ops: ConsentOps, policy: Any) -> Any:
        zone = policy.consent.zone
        since = _day_arg(args.since, "--since", zone)
        until = _day_arg(args.until, "--until", zone)
        pages = ops.evidence(policy, args.address, since, until)
        return _emit(pages, LEDGER_FIELDS, ledger_json, args, _ledger_line)

    return _offline(args, report)


def cmd_consent_refused(args: argparse.Namespace) -> int:
    """``mailgate consent refused --dealer ID [--since D]``."""

    def report(ops: ConsentOps, policy: Any) -> Any:
        since = _day_arg(args.since, "--since", policy.consent.zone)

        async def pages() -> Any:
            yield await ops.refusals(policy, since, args.limit)

        def line(row: dict[str, Any]) -> str:
            dsn = f" (DSN {row['dsn']})" if row["dsn"] else ""
            what = f"{row['code']} {row['action']}{dsn}"
            return f"{row['at']}  {row['recipient']}  {what}: {row['detail']}"

        return _emit(pages(), REFUSAL_FIELDS, refusal_json, args, line)

    return _offline(args, report)


def cmd_consent_statements(args: argparse.Namespace) -> int:
    """``mailgate consent statements --dealer ID [--since D]``: what the CRM is told."""

    def report(ops: ConsentOps, policy: Any) -> Any:
        since = _day_arg(args.since, "--since", policy.consent.zone)
        vocabulary = policy.consent.crm_vocabulary

        def as_json(statement: Any) -> dict[str, Any]:
            return statement_json(statement, vocabulary)

        def line(row: dict[str, Any]) -> str:
            return f"{row['at']}  {row['address']}  {row['status']}  ({row['source'] or '-'})"

        return _emit(ops.statements(policy, since), STATEMENT_FIELDS, as_json, args, line)

    return _offline(args, report)


def cmd_consent_erase(args: argparse.Namespace) -> int:
    """``mailgate consent erase ADDRESS --dealer ID --reason TEXT``: GDPR Art. 17."""
    found = _policy_or_usage(args)
    if found is None:
        return EXIT_USAGE
    settings, policy = found
    erasures = Erasures(load_or_create_key(settings.ref_key_file))

    async def run() -> int:
        storage = await store.open_existing(settings, config_path(args))
        try:
            done = await ConsentOps(storage, SystemClock()).erase(
                policy, args.address, erasures, operator_name(args), args.reason
            )
        finally:
            await storage.close()
        listed = ", ".join(f"{table} {n}" for table, n in done.items() if n) or "nothing stored"
        data = {
            "address": args.address,
            "dealer": policy.dealer_id,
            "suppressed_as": erasures.suppressed_as(policy.dealer_id, args.address),
            "changed": done,
        }
        emit(
            args,
            data,
            lambda d: (
                f"erased {d['address']} for {d['dealer']} ({listed}); it stays suppressed as "
                f"{d['suppressed_as']}"
            ),
        )
        return EXIT_OK

    return asyncio.run(run())


def _output_flags(p: Any) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--csv", action="store_true", help="CSV (RFC 4180) on standard output")
    group.add_argument("--json", action="store_true", help="one JSON object per line")


def register(subparsers: Any) -> None:
    """Add the ``consent`` commands to the ``mailgate`` subcommands."""
    consent = subparsers.add_parser(
        "consent", help="customers' interactions and opt-ins; eligibility windows"
    ).add_subparsers(dest="consent_command", required=True)
    p = consent.add_parser("import", help="record interactions and opt-ins from a CSV file")
    p.add_argument("file", type=Path, metavar="FILE.csv", help="the CRM export (header row first)")
    p.add_argument("--dealer", help="the dealer of rows without a dealer column")
    p.add_argument(
        "--encoding", help="the file's encoding (default: a BOM, else UTF-8, else Windows-1252)"
    )
    p.add_argument(
        "--map",
        action="append",
        metavar="'CRM COLUMN=COLUMN'",
        help="read a CRM's own column as one of ours, e.g. 'Last Payment=last_payment'",
    )
    p.add_argument(
        "--ignore-unknown-columns",
        action="store_true",
        help="leave out columns the import does not know instead of refusing the file",
    )
    p.add_argument("--batch", type=int, default=BATCH, help=argparse.SUPPRESS)
    add_json(p, "the counts and the rejected rows")
    p.set_defaults(func=cmd_consent_import)
    p = consent.add_parser("show", help="explain whether a dealer may email an address")
    p.add_argument("address", help="the recipient's address")
    p.add_argument("--dealer", required=True, help="the dealer id")
    p.add_argument("--at", help="evaluate on this day (YYYY-MM-DD) instead of today")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_consent_show)
    p = consent.add_parser("expiring", help="who loses implied consent soon: ask them first")
    p.add_argument("--dealer", required=True, help="the dealer id")
    p.add_argument("--within", default="30d", help="a duration: 30d (default), 8w, 90d")
    _output_flags(p)
    p.set_defaults(func=cmd_consent_expiring)
    p = consent.add_parser("review", help="opt-ins older than the rules' review_after (GDPR)")
    p.add_argument("--dealer", required=True, help="the dealer id")
    _output_flags(p)
    p.set_defaults(func=cmd_consent_review)
    p = consent.add_parser("locked", help="who may not get commercial mail, and why")
    p.add_argument("--dealer", required=True, help="the dealer id")
    _output_flags(p)
    p.set_defaults(func=cmd_consent_locked)
    p = consent.add_parser(
        "evidence", help="the consent each commercial message relied on (one customer or a period)"
    )
    p.add_argument("address", nargs="?", help="one customer's messages (default: all)")
    p.add_argument("--dealer", required=True, help="the dealer id")
    p.add_argument("--since", help="from this day on (YYYY-MM-DD, the dealer's day)")
    p.add_argument("--until", help="before this day (YYYY-MM-DD)")
    _output_flags(p)
    p.set_defaults(func=cmd_consent_evidence)
    p = consent.add_parser(
        "statements", help="unsubscribes, complaints and withdrawals, in the CRM's words"
    )
    p.add_argument("--dealer", required=True, help="the dealer id")
    p.add_argument("--since", help="from this day on (YYYY-MM-DD)")
    _output_flags(p)
    p.set_defaults(func=cmd_consent_statements)
    p = consent.add_parser(
        "erase", help="erase a person's data for a dealer (GDPR Art. 17); they stay suppressed"
    )
    p.add_argument("address", help="the recipient's address")
    p.add_argument("--dealer", required=True, help="the dealer id")
    p.add_argument("--reason", required=True, help="why (recorded): e.g. the request's reference")
    p.add_argument("--by", help="who asks (default: your login name)")
    add_json(p, "what was erased")
    p.set_defaults(func=cmd_consent_erase)
    p = consent.add_parser("refused", help="recipients left out of a message for want of consent")
    p.add_argument("--dealer", required=True, help="the dealer id")
    p.add_argument("--since", help="from this day on (YYYY-MM-DD)")
    p.add_argument("--limit", type=int, default=100, help="how many at most (newest first)")
    _output_flags(p)
    p.set_defaults(func=cmd_consent_refused)
