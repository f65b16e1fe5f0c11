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

    async def main() -> None:
        gateway = await Gateway.build(settings)
        await gateway.run()

    asyncio.run(main())
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``serve`` to the ``mailgate`` subcommands."""
    p = subparsers.add_parser("serve", help="run the gateway")
    p.set_defaults(func=cmd_serve)
