"""The ``mailgate`` command.

``serve`` runs the gateway. ``admin …`` makes runtime changes through the running
gateway's API. Offline commands work on the files and the store directly: ``policy check``
validates a policy directory, ``check FILE`` lints a message, ``credentials`` manages
dealers' SMTP logins, ``dealers``, ``suppress``, ``held`` and ``queue ls`` run the admin
API's operations on the store, ``feedback``, ``consent``, ``dkim``, ``dns`` and
``duplicates`` cover their features, ``send-test`` submits a real message the way a CRM
would. Exit codes: 0 success, 1 the thing checked is not right, 2 usage or configuration
error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.cli import (
    admin,
    check,
    consent,
    credentials,
    dealers,
    dkim,
    dns,
    duplicates,
    feedback,
    held,
    policy,
    queue,
    send_test,
    serve,
    suppress,
)
from gateway.cli.common import EXIT_FAIL, EXIT_USAGE, settings_for
from gateway.errors import ConfigError, DataDirInUse, GatewayError
from gateway.logs import LogFormat, configure_logging

# One module per command group, in the order ``mailgate --help`` lists them.
GROUPS = (
    serve,
    policy,
    credentials,
    queue,
    send_test,
    feedback,
    dkim,
    duplicates,
    held,
    check,
    dealers,
    suppress,
    admin,
    consent,
    dns,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="mailgate", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="settings file (default ./mailgate.toml)")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def _log_format(args: argparse.Namespace) -> LogFormat:
    try:
        return settings_for(args).server.log_format
    except ConfigError:
        return "text"  # the command itself reports the configuration error


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mailgate`` command."""
    args = build_parser().parse_args(argv)
    # Every command logs warnings through the same escaping formatter as `serve`.
    configure_logging("warning", _log_format(args))
    try:
        return int(args.func(args))
    except DataDirInUse as exc:
        print(f"mailgate: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return EXIT_FAIL
