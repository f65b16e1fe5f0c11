"""``mailgate held list|show|release|delete|expire``: the hold queue, offline on the store.

Held messages are kept with their findings and never delivered until released. ``list``,
``show``, ``release`` and ``delete`` are the operations of ``GET /api/held[/{id}]``,
``POST /api/held/{id}/release`` and ``DELETE /api/held/{id}`` (``gateway/cli/offline.py``):
each acts on held messages only, so a message that is queued or delivered cannot be
released or deleted by mistake, and ``delete`` needs a ``--reason`` as the API does (it is
logged with who deleted what). ``release`` makes a message due now (the delivery workers
of a running gateway pick it up). ``expire`` deletes those held longer than
``delivery.held_expiry``, as the gateway's housekeeping does (``gateway.delivery.held``).
With a gateway running, ``mailgate admin held …`` does the same through the API.

Exit codes: 0 done, 1 a message is not there or not held, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.admin import views
from gateway.admin.ops import AdminOps, check_reason
from gateway.cli import offline, render
from gateway.cli.common import EXIT_OK, EXIT_USAGE, operator_name, settings_for
from gateway.clock import parse_duration
from gateway.delivery.held import expire_held
from gateway.types import MessageState


def cmd_list(args: argparse.Namespace) -> int:
    """List held messages, newest first."""

    async def work(ops: AdminOps) -> int:
        rows = await ops.messages(MessageState.HELD, args.dealer, args.limit)
        print(render.messages([views.message_json(m) for m in rows]))
        return EXIT_OK

    return offline.run(args, work)


def cmd_show(args: argparse.Namespace) -> int:
    """Show one held message: why it is held, what to do, and its header."""

    async def work(ops: AdminOps) -> int:
        message = await ops.message(args.id, held=True)
        print(render.message(views.message_json(message, detail=True)))
        if args.raw:
            sys.stdout.flush()
            sys.stdout.buffer.write(b"\n" + message.data)
        return EXIT_OK

    return offline.run(args, work)


def cmd_release(args: argparse.Namespace) -> int:
    """Make held messages due for delivery now."""
    by = operator_name(args)

    async def work(ops: AdminOps) -> int:
        return await offline.each(args.ids, "released", lambda i: ops.release(i, by))

    return offline.run(args, work)


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete held messages for good, with the reason logged."""
    by = operator_name(args)

    async def work(ops: AdminOps) -> int:
        reason = check_reason(args.reason, "deleting a message")  # once, before any message
        return await offline.each(
            args.ids, "deleted", lambda i: ops.delete(i, reason, by, held=True)
        )

    return offline.run(args, work)


def cmd_expire(args: argparse.Namespace) -> int:
    """Delete held messages older than the expiry (or --older-than)."""
    if args.older_than is None:
        expiry = settings_for(args).delivery.held_expiry
    else:
        try:
            expiry = parse_duration(args.older_than)
        except ValueError as exc:
            print(f"--older-than: {exc}", file=sys.stderr)
            return EXIT_USAGE

    async def work(ops: AdminOps) -> int:
        count = await expire_held(ops.storage, ops.clock.now(), expiry)
        print(f"expired {count} held message(s) held longer than {expiry}")
        return EXIT_OK

    return offline.run(args, work)


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
    p.add_argument("--by", help="who (default: the login name)")
    p.set_defaults(func=cmd_release)
    p = held.add_parser("delete", help="delete held messages for good (with a reason)")
    p.add_argument("ids", nargs="+", metavar="id")
    p.add_argument("--reason", required=True, help="why (logged with the message and who)")
    p.add_argument("--by", help="who (default: the login name)")
    p.set_defaults(func=cmd_delete)
    p = held.add_parser("expire", help="delete messages held longer than delivery.held_expiry")
    p.add_argument("--older-than", help="override the expiry, e.g. 72h")
    p.set_defaults(func=cmd_expire)
