"""``mailgate held list|show|release|delete|expire``: the hold queue, offline on the store.

Held messages are kept with their findings and never delivered until released. ``release``
makes a message due now (the delivery workers of a running gateway pick it up);
``delete`` removes it for good, with a log line; ``expire`` deletes those held longer
than ``delivery.held_expiry`` (see ``gateway.delivery.held``). Each command acts on held messages
only, so a message that is queued or delivered cannot be released or deleted by mistake.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.delivery.held import expire_held
from gateway.findings import CATALOGUE
from gateway.logs import configure_logging
from gateway.settings import Settings, load_settings, parse_duration
from gateway.storage.base import Storage, open_storage
from gateway.types import DealerId, MessageId, MessageState

log = logging.getLogger("gateway.delivery")
EXIT_OK, EXIT_FAIL = 0, 1
_HEADER_LINES = 40


def _settings(args: argparse.Namespace) -> Settings:
    path: Path | None = args.config
    if path is None and Path("mailgate.toml").exists():
        path = Path("mailgate.toml")
    return load_settings(path)


def _with_storage(
    args: argparse.Namespace, work: Callable[[Storage, Settings], Awaitable[int]]
) -> int:
    settings = _settings(args)
    configure_logging("info", settings.server.log_format)

    async def run() -> int:
        storage = await open_storage(settings.storage_url)
        try:
            return await work(storage, settings)
        finally:
            await storage.close()

    return asyncio.run(run())


def cmd_list(args: argparse.Namespace) -> int:
    """List held messages, newest first."""

    async def work(storage: Storage, _settings: Settings) -> int:
        dealer = DealerId(args.dealer) if args.dealer else None
        rows = await storage.list_messages(MessageState.HELD, dealer, args.limit)
        print(f"{'ID':<22} {'DEALER':<16} {'HELD SINCE':<16} {'FINDINGS':<28} RECIPIENT")
        for m in rows:
            print(f"{m.id:<22} {m.dealer_id:<16} {m.updated_at:%Y-%m-%d %H:%M} "
                  f"{','.join(m.findings) or '-':<28} {m.rcpt}")  # fmt: skip
        return EXIT_OK

    return _with_storage(args, work)


def cmd_show(args: argparse.Namespace) -> int:
    """Show one held message: why it is held, what to do, and its header."""

    async def work(storage: Storage, _settings: Settings) -> int:
        m = await storage.get(MessageId(args.id))
        if m is None:
            print(f"no message {args.id}", file=sys.stderr)
            return EXIT_FAIL
        print(f"id:        {m.id}\nstate:     {m.state.value}\ndealer:    {m.dealer_id}")
        print(f"from:      <{m.mail_from}>\nto:        <{m.rcpt}>")
        print(f"received:  {m.received_at:%Y-%m-%d %H:%M:%S %Z}\nsize:      {m.size} bytes")
        print(f"why held:  {m.note or '-'}")
        for code in m.findings:
            kind = CATALOGUE.get(code)
            print(f"finding:   {code}" + (f": {kind.summary}" if kind else ""))
            if kind is not None:
                print(f"           fix: {kind.advice}")
        if args.raw:
            sys.stdout.buffer.write(b"\n" + m.data)
        else:
            header = m.data.split(b"\r\n\r\n", 1)[0].splitlines()
            print()
            for line in header[:_HEADER_LINES]:
                print(line.decode("utf-8", "replace"))
            if len(header) > _HEADER_LINES:
                print(f"... ({len(header) - _HEADER_LINES} more header lines; --raw for all)")
        return EXIT_OK

    return _with_storage(args, work)


async def _held(storage: Storage, message_id: str) -> bool:
    m = await storage.get(MessageId(message_id))
    if m is None or m.state is not MessageState.HELD:
        state = "no such message" if m is None else f"it is {m.state.value}, not held"
        print(f"{message_id}: {state}", file=sys.stderr)
        return False
    return True


def cmd_release(args: argparse.Namespace) -> int:
    """Make held messages due for delivery now."""

    async def work(storage: Storage, _settings: Settings) -> int:
        failed = False
        for message_id in args.ids:
            if not await _held(storage, message_id):
                failed = True
                continue
            if await storage.requeue(MessageId(message_id), datetime.now(UTC)):
                log.info("released held message id=%s by operator", message_id)
                print(f"{message_id}: released")
            else:
                failed = True
                print(f"{message_id}: could not be released (body gone?)", file=sys.stderr)
        return EXIT_FAIL if failed else EXIT_OK

    return _with_storage(args, work)


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete held messages for good."""

    async def work(storage: Storage, _settings: Settings) -> int:
        failed = False
        for message_id in args.ids:
            if not await _held(storage, message_id):
                failed = True
                continue
            m = await storage.get(MessageId(message_id))
            if await storage.delete(MessageId(message_id)):
                log.warning(
                    "deleted held message id=%s dealer=%s by operator findings=%s",
                    message_id, m.dealer_id if m else "-",
                    ",".join(m.findings) if m else "-",
                )  # fmt: skip
                print(f"{message_id}: deleted")
            else:
                failed = True
        return EXIT_FAIL if failed else EXIT_OK

    return _with_storage(args, work)


def cmd_expire(args: argparse.Namespace) -> int:
    """Delete held messages older than the expiry (or --older-than)."""

    async def work(storage: Storage, settings: Settings) -> int:
        expiry = settings.delivery.held_expiry
        if args.older_than is not None:
            expiry = parse_duration(args.older_than)
        count = await expire_held(storage, datetime.now(UTC), expiry)
        print(f"expired {count} held message(s) held longer than {expiry}")
        return EXIT_OK

    return _with_storage(args, work)


def register(subparsers: Any) -> None:
    """Add ``held`` and its subcommands to the ``mailgate`` command."""
    held = subparsers.add_parser("held", help="messages held for an operator").add_subparsers(
        dest="held_command", required=True
    )
    p = held.add_parser("list", help="list held messages, newest first")
    p.add_argument("--dealer")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=cmd_list)
    p = held.add_parser("show", help="why a message is held, and its header")
    p.add_argument("id")
    p.add_argument("--raw", action="store_true", help="print the whole stored message")
    p.set_defaults(func=cmd_show)
    p = held.add_parser("release", help="deliver held messages")
    p.add_argument("ids", nargs="+", metavar="id")
    p.set_defaults(func=cmd_release)
    p = held.add_parser("delete", help="delete held messages for good")
    p.add_argument("ids", nargs="+", metavar="id")
    p.set_defaults(func=cmd_delete)
    p = held.add_parser("expire", help="delete messages held longer than delivery.held_expiry")
    p.add_argument("--older-than", help="override the expiry, e.g. 72h")
    p.set_defaults(func=cmd_expire)
