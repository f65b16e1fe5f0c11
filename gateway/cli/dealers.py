"""``mailgate dealers suspend|resume|status``: dealer suspensions, offline on the store.

The same operations as ``POST /api/dealers/{dealer}/suspend``, ``…/resume`` and ``GET
/api/dealers[/{dealer}]`` (``gateway/cli/offline.py``): a suspension or resume made here is
a recorded transition (actor ``admin``, by ``--by`` or the login name) and queues the same
alert e-mails as an automatic one; the running gateway sees it within seconds (MAIL FROM
and the delivery worker read the store). With a gateway running, ``mailgate admin
suspend|resume|dealers|dealer`` does the same through the API.

Exit codes: 0 done, 1 not found or not in a state that allows it, 2 usage error.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from gateway.admin import views
from gateway.admin.ops import AdminOps, InvalidRequest
from gateway.cli import offline, render
from gateway.cli.common import EXIT_OK, operator_name
from gateway.clock import parse_duration

REASON_HELP = "what the dealer is told (SMTP reply to its CRM, status page, alert e-mail)"
NOTE_HELP = "internal note for operators only (history, logs); never shown to the dealer"


def cmd_dealers(args: argparse.Namespace) -> int:
    """``dealers suspend|resume|status``."""

    async def work(ops: AdminOps) -> int:
        if args.dealers_command == "status":
            if args.dealer is None:
                print(render.dealers([views.dealer_json(r) for r in await ops.dealers()]))
            else:
                report = await ops.dealer(args.dealer)
                print(render.dealer(views.dealer_json(report, detail=True)))
            return EXIT_OK
        by = operator_name(args)
        if args.dealers_command == "suspend":
            duration: timedelta | None = None
            if args.duration:
                try:
                    duration = parse_duration(args.duration)
                except ValueError as exc:
                    raise InvalidRequest(f"--for: {exc}") from None
            change = await ops.suspend(args.dealer, args.reason, by, duration, args.note)
        else:
            change = await ops.resume(args.dealer, args.reason, by, args.note)
        print(render.change(views.change_json(change)))
        return EXIT_OK

    return offline.run(args, work)


def register(subparsers: Any) -> None:
    """Add ``dealers`` to the ``mailgate`` subcommands."""
    dealers = subparsers.add_parser("dealers", help="dealer suspensions").add_subparsers(
        dest="dealers_command", required=True
    )
    p = dealers.add_parser("suspend", help="refuse a dealer's mail and hold its queue")
    p.add_argument("dealer")
    p.add_argument("--reason", required=True, help=REASON_HELP)
    p.add_argument("--note", default="", help=NOTE_HELP)
    p.add_argument("--for", dest="duration", help="ends by itself after e.g. 72h")
    p.add_argument("--by", help="who (default: the login name)")
    p.set_defaults(func=cmd_dealers)
    p = dealers.add_parser("resume", help="end a suspension; held mail goes out")
    p.add_argument("dealer")
    p.add_argument("--reason", required=True, help=REASON_HELP)
    p.add_argument("--note", default="", help=NOTE_HELP)
    p.add_argument("--by", help="who (default: the login name)")
    p.set_defaults(func=cmd_dealers)
    p = dealers.add_parser("status", help="every dealer's state, or one dealer's history")
    p.add_argument("dealer", nargs="?")
    p.set_defaults(func=cmd_dealers)
