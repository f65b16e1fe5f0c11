"""``mailgate duplicates``: what the duplicate checks left out or refused, and why.

``duplicates list [--dealer ID] [--limit N]`` reads the drop records from the store
(offline, like ``queue ls``), newest first: when, dealer, recipient, kind (exact, near,
cap), the action policy chose, the earlier message it duplicates, and the detail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from gateway.admin.ops import MAX_LIMIT
from gateway.cli import store
from gateway.cli.common import EXIT_OK, EXIT_USAGE, add_json, config_path, settings_for
from gateway.types import DealerId


def cmd_duplicates_list(args: argparse.Namespace) -> int:
    """Print recorded duplicate drops, newest first."""
    if not 1 <= args.limit <= MAX_LIMIT:
        print(f"mailgate: --limit must be between 1 and {MAX_LIMIT}", file=sys.stderr)
        return EXIT_USAGE
    settings = settings_for(args)

    async def run() -> int:
        storage = await store.open_existing(settings, config_path(args))
        try:
            dealer = DealerId(args.dealer) if args.dealer else None
            drops = await storage.list_duplicate_drops(dealer, limit=args.limit)
        finally:
            await storage.close()
        if args.json:
            rows = [
                {"at": d.at.isoformat(), "dealer": d.dealer_id, "kind": d.kind,
                 "action": d.action, "earlier": d.earlier, "recipient": d.recipient,
                 "detail": d.detail}
                for d in drops
            ]  # fmt: skip
            print(json.dumps({"drops": rows}, indent=2))
            return EXIT_OK
        print(
            f"{'AT (UTC)':<17} {'DEALER':<16} {'KIND':<5} {'ACTION':<7} {'EARLIER':<24} RECIPIENT"
        )
        for d in drops:
            print(
                f"{d.at:%Y-%m-%d %H:%M} {d.dealer_id:<16} {d.kind:<5} {d.action:<7} "
                f"{d.earlier or '-':<24} {d.recipient}\n    {d.detail}"
            )
        return EXIT_OK

    return asyncio.run(run())


def register(subparsers: Any) -> None:
    """Add the ``duplicates`` command group to the ``mailgate`` parser."""
    group = subparsers.add_parser(
        "duplicates", help="duplicate and frequency-cap drops"
    ).add_subparsers(dest="duplicates_command", required=True)
    p = group.add_parser("list", help="list what was left out or refused, newest first")
    p.add_argument("--dealer", help="only this dealer")
    p.add_argument("--limit", type=int, default=50, help="how many at most (default 50)")
    add_json(p, "the drops")
    p.set_defaults(func=cmd_duplicates_list)
