"""``mailgate queue ls``: stored messages, newest first, offline on the store.

The same operation as ``GET /api/queue`` (``gateway/cli/offline.py``), printed as
``mailgate admin queue list`` prints it. To retry or delete a message, use ``mailgate admin
queue retry|delete`` (a running gateway), or ``mailgate held`` for held ones.
"""

from __future__ import annotations

import argparse
from typing import Any

from gateway.admin import views
from gateway.admin.ops import AdminOps
from gateway.cli import offline, render
from gateway.cli.common import EXIT_OK, add_json, emit
from gateway.types import MessageState


def cmd_queue_ls(args: argparse.Namespace) -> int:
    """List stored messages, newest first."""

    async def work(ops: AdminOps) -> int:
        state = MessageState(args.state) if args.state else None
        rows = await ops.messages(state, args.dealer, args.limit)
        data = {"messages": [views.message_json(m) for m in rows]}
        emit(args, data, lambda d: render.messages(d["messages"]))
        return EXIT_OK

    return offline.run(args, work)


def register(subparsers: Any) -> None:
    """Add ``queue ls`` to the ``mailgate`` subcommands."""
    queue = subparsers.add_parser("queue", help="the message store").add_subparsers(
        dest="queue_command", required=True
    )
    p = queue.add_parser("ls", help="list messages, newest first")
    p.add_argument("--state", choices=[s.value for s in MessageState], help="only this state")
    p.add_argument("--dealer", help="only this dealer's messages")
    p.add_argument("--limit", type=int, default=50, help="how many at most (default 50)")
    add_json(p, "the messages (as GET /api/queue does)")
    p.set_defaults(func=cmd_queue_ls)
