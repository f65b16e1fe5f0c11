"""``mailgate serve``: run the gateway (``gateway.app.Gateway``) until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from gateway.cli.common import EXIT_OK, settings_for


def configure_logging(level: str) -> None:
    """Log lines as ``time level logger: message`` at ``level``."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aiosmtpd logs every command at INFO (including peers' junk); keep ours readable.
    mail_log = logging.getLogger("mail.log")
    mail_log.setLevel(logging.WARNING)
    # aiosmtpd 1.4.6 itself touches its deprecated Session.login_data on every AUTH.
    mail_log.addFilter(lambda record: "login_data is deprecated" not in record.getMessage())


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the gateway until SIGTERM."""
    # Imported here: the composition root pulls in every listener, which no other command needs.
    from gateway.app import Gateway

    settings = settings_for(args)
    configure_logging(settings.server.log_level)
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
