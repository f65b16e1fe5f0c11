"""``mailgate serve``: run the gateway (``gateway.app.Gateway``) until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from gateway.cli.common import EXIT_OK, settings_for
from gateway.logs import configure_logging


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the gateway until SIGTERM."""
    # Imported here: the composition root pulls in every listener, which no other command needs.
    from gateway.app import Gateway

    settings = settings_for(args)
    configure_logging(settings.server.log_level, settings.server.log_format)
    processes = args.processes or settings.server.processes
    if processes != 1:
        from gateway import supervisor  # several worker processes (gateway/supervisor.py)

        return supervisor.serve(settings, processes or supervisor.default_processes())

    async def main() -> None:
        gateway = await Gateway.build(settings)
        await gateway.run()

    asyncio.run(main())
    return EXIT_OK


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (one per core) or more")
    return value


def register(subparsers: Any) -> None:
    """Add ``serve`` to the ``mailgate`` subcommands."""
    p = subparsers.add_parser("serve", help="run the gateway")
    p.add_argument(
        "--processes",
        type=_count,
        default=0,
        metavar="N",
        help="worker processes (default: server.processes, else one per core; 1: no supervisor)",
    )
    p.set_defaults(func=cmd_serve)
