"""``mailgate dealers`` and ``mailgate suppress``: dealer suspensions and suppression lists.

This module owns the operator commands over the feedback state, run against the store
named by the settings (the running gateway sees their effect: MAIL FROM and RCPT TO read
the store, and the delivery worker reloads the suspended set every few seconds):

* ``dealers suspend ID --reason …  [--for 72h] [--by NAME]``, ``dealers resume ID --reason
  …``, ``dealers status [ID]``. A suspension or resume made here is a recorded transition
  (actor ``admin``) and queues the same alert e-mails as an automatic one;
* ``suppress add ADDRESS… --reason …``, ``suppress remove ADDRESS --reason …`` (lifting
  is recorded with who and why; nothing is deleted), ``suppress list``, and ``suppress
  import FILE.csv`` / ``suppress export [FILE.csv]`` with a progress bar on a terminal.
  ``--dealer ID`` picks a dealer's list, ``--global`` the list every dealer obeys.

Exit codes: 0 done, 1 nothing to do or not found, 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import getpass
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from gateway.addresslists import CsvFormatError, RowProblem
from gateway.clock import SystemClock
from gateway.durations import parse_duration
from gateway.mail import addresses
from gateway.metrics import Metrics
from gateway.policy.store import PolicyStore
from gateway.reputation.csvformat import CSV_FIELDS, suppression_row, suppression_rows
from gateway.reputation.records import GLOBAL, Suppression
from gateway.reputation.suspensions import Suspensions
from gateway.settings import Settings, load_settings
from gateway.storage.base import Storage, open_storage
from gateway.types import DealerId

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
BATCH = 1000


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()

    def advance(self, count: int = 1) -> None:
        """Count ``count`` more items and redraw."""
        self.done += count
        if self._tty and (self.done % 100 == 0 or self.done == self.total):
            self._draw()

    def _draw(self) -> None:
        if self.total:
            share = min(self.done / self.total, 1.0)
            bar = "#" * int(share * 30)
            self._stream.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total}")
        else:
            self._stream.write(f"\r{self.label} {self.done}")
        self._stream.flush()

    def finish(self) -> None:
        """End the bar's line."""
        if self._tty:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()


def operator_name(args: argparse.Namespace) -> str:
    """Who is acting: ``--by``, else the login name."""
    by: str | None = getattr(args, "by", None)
    if by:
        return by
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "operator"


def _settings(args: argparse.Namespace) -> Settings:
    path: Path | None = args.config
    if path is None and Path("mailgate.toml").exists():
        path = Path("mailgate.toml")
    return load_settings(path)


@dataclass
class Context:
    """What the commands need: the settings, the store and the dealer state machine."""

    settings: Settings
    storage: Storage
    policies: PolicyStore
    suspensions: Suspensions


@asynccontextmanager
async def context(args: argparse.Namespace) -> AsyncIterator[Context]:
    """Open the store and build ``Suspensions`` (with alerts) as ``serve`` would."""
    from gateway.alerts import Alerts
    from gateway.app import _read_secret

    settings = _settings(args)
    policies = PolicyStore(settings.server.policies_dir)
    storage = await open_storage(settings.storage_url)
    clock, metrics = SystemClock(), Metrics()
    alerts = Alerts(
        storage,
        clock,
        metrics,
        from_addr=settings.alerts.from_address or f"mailgate-alerts@{settings.server.hostname}",
        hostname=settings.server.hostname,
        operators=settings.alerts.operators,
        webhook_url=settings.alerts.webhook_url,
        webhook_secret=_read_secret(settings.alerts.webhook_secret_file),
    )
    suspensions = Suspensions(storage, policies, clock, metrics, notifier=alerts)
    try:
        yield Context(settings, storage, policies, suspensions)
        await alerts.drain()
    finally:
        await storage.close()


class _Refused(Exception):
    """A command cannot run as asked; carries the exit code (the message is printed)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _scope(args: argparse.Namespace, ctx: Context) -> DealerId | None:
    """The list named by ``--dealer``/``--global``; raises ``_Refused`` on misuse."""
    if getattr(args, "global_list", False):
        return None
    dealer = getattr(args, "dealer", None)
    if not dealer:
        print("say which list: --dealer ID or --global", file=sys.stderr)
        raise _Refused(EXIT_USAGE)
    if ctx.policies.current.dealer(dealer) is None:
        print(f"no dealer {dealer!r} in {ctx.settings.server.policies_dir}", file=sys.stderr)
        raise _Refused(EXIT_FAIL)
    return DealerId(dealer)


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else ""


# -- dealers ----------------------------------------------------------------------------


def cmd_dealers(args: argparse.Namespace) -> int:
    """``dealers suspend|resume|status``."""

    async def run() -> int:
        async with context(args) as ctx:
            if args.dealers_command == "status":
                return await _status(ctx, args.dealer)
            if ctx.policies.current.dealer(args.dealer) is None:
                print(f"no dealer {args.dealer!r}", file=sys.stderr)
                return EXIT_FAIL
            dealer = DealerId(args.dealer)
            by = operator_name(args)
            if args.dealers_command == "suspend":
                expires = None
                if args.duration:
                    expires = datetime.now(UTC) + parse_duration(args.duration)
                change = await ctx.suspensions.suspend(
                    dealer, args.reason, by=by, expires_at=expires
                )
                if change is None:
                    print(f"{dealer} is already suspended")
                    return EXIT_FAIL
            else:
                change = await ctx.suspensions.resume(dealer, args.reason, by=by)
                if change is None:
                    print(f"{dealer} is not suspended")
                    return EXIT_FAIL
            until = f" until {_when(change.expires_at)}" if change.expires_at else ""
            print(f"{dealer}: {change.previous.value} -> {change.state.value}{until}")
            return EXIT_OK

    return asyncio.run(run())


async def _status(ctx: Context, dealer: str | None) -> int:
    if dealer is None:
        statuses = {s.dealer_id: s for s in await ctx.storage.list_dealer_statuses()}
        for dealer_id in sorted(ctx.policies.current.dealers):
            status = statuses.get(dealer_id)
            state = status.state.value if status else "active"
            reason = status.reason if status else ""
            print(f"{dealer_id:<24} {state:<10} {reason}")
        return EXIT_OK
    for change in await ctx.storage.dealer_history(DealerId(dealer), limit=20):
        who = change.actor.value + (f" ({change.by})" if change.by else "")
        counts = change.evidence.counts
        print(
            f"{_when(change.at)}  {change.previous.value} -> {change.state.value}  by {who}: "
            f"{change.reason}  [sent {counts.sent}, delivered {counts.delivered}, "
            f"complaints {counts.complaints}, hard bounces {counts.hard_bounces}]"
        )
    return EXIT_OK


# -- suppress ---------------------------------------------------------------------------


def cmd_suppress(args: argparse.Namespace) -> int:
    """``suppress add|remove|list|import|export``."""

    async def run() -> int:
        async with context(args) as ctx:
            action = args.suppress_command
            if action == "list":
                return await _list(ctx, args, sys.stdout)
            if action == "export":
                if args.file in (None, "-"):
                    return await _list(ctx, args, sys.stdout, as_csv=True)
                with open(args.file, "w", newline="", encoding="utf-8") as out:
                    return await _list(ctx, args, out, as_csv=True)
            try:
                scope = _scope(args, ctx)
            except _Refused as refused:
                return refused.code
            now = datetime.now(UTC)
            if action == "add":
                return await _add(ctx, scope, args.addresses, args.reason, now)
            if action == "remove":
                address = addresses.parse(args.address)
                if address is None:
                    print(f"{args.address!r} is not an address", file=sys.stderr)
                    return EXIT_USAGE
                lifted = await ctx.storage.lift_suppression(
                    scope, address, operator_name(args), args.reason, now
                )
                print(f"lifted {address} ({scope or GLOBAL})" if lifted else "not suppressed")
                return EXIT_OK if lifted else EXIT_FAIL
            return await _import(ctx, scope, Path(args.file), args.reason, now)

    return asyncio.run(run())


async def _add(
    ctx: Context, scope: DealerId | None, items: list[str], reason: str, now: datetime
) -> int:
    status = EXIT_OK
    for item in items:
        address = addresses.parse(item)
        if address is None:
            print(f"{item!r} is not an address; skipped", file=sys.stderr)
            status = EXIT_USAGE
            continue
        added = await ctx.storage.add_suppression(Suppression(scope, address, reason, "admin", now))
        print(f"{address}: {'suppressed' if added else 'already suppressed'} ({scope or GLOBAL})")
    return status


def _rows(path: Path) -> Iterator[tuple[str, str] | RowProblem]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        yield from suppression_rows(handle)


async def _import(
    ctx: Context, scope: DealerId | None, path: Path, reason: str, now: datetime
) -> int:
    try:
        total = sum(1 for _ in _rows(path))
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAIL
    except CsvFormatError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    progress = Progress(f"importing {path.name}", total)
    added = skipped = bad = 0
    for row in _rows(path):
        if isinstance(row, RowProblem):
            print(f"{path}:{row.line}: {row.problem}", file=sys.stderr)
            bad += 1
        elif (address := addresses.parse(row[0])) is None:
            bad += 1
        else:
            entry = Suppression(scope, address, row[1] or reason, f"import:{path.name}", now)
            if await ctx.storage.add_suppression(entry):
                added += 1
            else:
                skipped += 1
        progress.advance()
    progress.finish()
    print(f"{added} added, {skipped} already suppressed, {bad} not addresses ({scope or GLOBAL})")
    return EXIT_OK


async def _list(
    ctx: Context, args: argparse.Namespace, out: TextIO, *, as_csv: bool = False
) -> int:
    scope: DealerId | None = None
    if getattr(args, "dealer", None):
        scope = DealerId(args.dealer)
    only_global = bool(getattr(args, "global_list", False))
    active_at = None if args.all else datetime.now(UTC)
    writer = csv.writer(out) if as_csv else None
    if writer is not None:
        writer.writerow(CSV_FIELDS)
    progress = Progress("exporting", None) if as_csv and out is not sys.stdout else None
    after = 0
    while True:
        page = await ctx.storage.list_suppressions(
            scope, global_only=only_global, active_at=active_at, after_id=after, limit=BATCH
        )
        for entry in page:
            fields = suppression_row(entry)
            if writer is not None:
                writer.writerow(fields)
            else:
                state = (
                    f"  lifted by {entry.lifted_by}: {entry.lift_reason}" if entry.lifted_at else ""
                )
                expires = f"  until {_when(entry.expires_at)}" if entry.expires_at else ""
                out.write(
                    f"{entry.scope:<20} {entry.address:<40} {_when(entry.created_at)}  "
                    f"{entry.reason}{expires}{state}\n"
                )
        if progress is not None:
            progress.advance(len(page))
        if len(page) < BATCH:
            break
        after = page[-1].id
    if progress is not None:
        progress.finish()
    return EXIT_OK


def _lists(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--dealer", help="the dealer's own list")
    group.add_argument(
        "--global", dest="global_list", action="store_true", help="the list every dealer obeys"
    )


def register(subparsers: Any) -> None:
    """Add ``dealers`` and ``suppress`` to the ``mailgate`` subcommands."""
    dealers = subparsers.add_parser("dealers", help="dealer suspensions").add_subparsers(
        dest="dealers_command", required=True
    )
    p = dealers.add_parser("suspend", help="refuse a dealer's mail and hold its queue")
    p.add_argument("dealer")
    p.add_argument("--reason", required=True)
    p.add_argument("--for", dest="duration", help="ends by itself after e.g. 72h")
    p.add_argument("--by", help="who (default: the login name)")
    p.set_defaults(func=cmd_dealers)
    p = dealers.add_parser("resume", help="end a suspension; held mail goes out")
    p.add_argument("dealer")
    p.add_argument("--reason", required=True)
    p.add_argument("--by", help="who (default: the login name)")
    p.set_defaults(func=cmd_dealers)
    p = dealers.add_parser("status", help="every dealer's state, or one dealer's history")
    p.add_argument("dealer", nargs="?")
    p.set_defaults(func=cmd_dealers)

    suppress = subparsers.add_parser("suppress", help="suppression lists").add_subparsers(
        dest="suppress_command", required=True
    )
    p = suppress.add_parser("add", help="suppress addresses")
    p.add_argument("addresses", nargs="+", metavar="ADDRESS")
    p.add_argument("--reason", required=True)
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
