"""``mailgate serve``: run the gateway (``gateway.app.Gateway``) until SIGTERM.

A listener that cannot be bound is named with its setting (``submission.listen`` …) and the
reason in words, instead of the socket error alone: the error from ``bind()`` does not always
say which address, and an operator with three listeners needs to know which one to move.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import socket
import sys
from collections.abc import Iterator
from typing import Any

from gateway.cli.common import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, settings_for
from gateway.logs import configure_logging
from gateway.settings import Settings, parse_hostport

_BIND_ERRORS = {
    errno.EADDRINUSE: (
        EXIT_UNAVAILABLE,
        "the address is in use by another process (a gateway already running?); stop it or "
        "set another address",
    ),
    errno.EACCES: (
        EXIT_USAGE,
        "ports below 1024 need CAP_NET_BIND_SERVICE (see deploy/mailgate.service); use a port "
        "above 1023 or grant it",
    ),
    errno.EADDRNOTAVAIL: (
        EXIT_USAGE,
        "this host has no such address; use one of its own addresses, or 0.0.0.0",
    ),
}


def listen_settings(settings: Settings) -> Iterator[tuple[str, str]]:
    """Every ``section.key`` naming a listen address, with its value (``listen``, ``*_listen``)."""
    for section in type(settings).model_fields:
        values = getattr(settings, section)
        for key in type(values).model_fields:
            value = getattr(values, key)
            if (key == "listen" or key.endswith("_listen")) and isinstance(value, str) and value:
                yield f"{section}.{key}", value


def _cannot_bind(host: str, port: int, code: int) -> bool:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return code == errno.EADDRNOTAVAIL
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # The listeners set SO_REUSEADDR too: a port in TIME_WAIT is not "in use".
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == code:
                    return True
    return False


def bind_failure(settings: Settings, exc: OSError) -> tuple[int, str] | None:
    """The exit code and sentence for a listener that could not bind, or ``None``."""
    if exc.errno not in _BIND_ERRORS:
        return None
    code, why = _BIND_ERRORS[exc.errno]
    enabled = settings.inbound.enabled
    for key, value in listen_settings(settings):
        if key == "inbound.listen" and not enabled:
            continue
        host, port = parse_hostport(value)
        if _cannot_bind(host, port, exc.errno):
            return code, f"cannot listen on {value} ({key}): {why}"
    return code, f"cannot listen ({exc.strerror or exc}): {why}"


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the gateway until SIGTERM."""
    # Imported here: the composition root pulls in every listener, which no other command needs.
    from gateway.app import Gateway

    settings = settings_for(args)
    configure_logging(settings.server.log_level, settings.server.log_format)
    processes = args.processes or settings.server.processes

    async def main() -> None:
        gateway = await Gateway.build(settings)
        await gateway.run()

    try:
        if processes != 1:
            from gateway.cli import supervisor  # several worker processes

            return supervisor.serve(settings, processes or supervisor.default_processes())
        asyncio.run(main())
    except OSError as exc:
        failure = bind_failure(settings, exc)
        if failure is None:
            raise
        code, sentence = failure
        print(f"mailgate: {sentence}", file=sys.stderr)
        return code
    return EXIT_OK


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (one per core) or more")
    return value


def register(subparsers: Any) -> None:
    """Add ``serve`` to the ``mailgate`` subcommands."""
    p = subparsers.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway until SIGTERM (SIGHUP reloads the policies). Creates the "
        "data directory and the store on first start.",
    )
    p.add_argument(
        "--processes",
        type=_count,
        default=0,
        metavar="N",
        help="worker processes (default: server.processes, else one per core; 1: no supervisor)",
    )
    p.set_defaults(func=cmd_serve)
