"""The ``mailgate`` command: the parser of every group, and the one place failures become exits.

``serve`` runs the gateway and ``init`` creates its store. ``admin …`` makes runtime
changes through the running gateway's API. Offline commands work on the files and the
store directly: ``policy check`` validates a policy directory, ``check FILE`` lints a
message, ``credentials`` manages dealers' SMTP logins, ``dealers``, ``suppress``, ``held``
and ``queue ls`` run the admin API's operations on the store, ``feedback``, ``consent``,
``dkim``, ``dns`` and ``duplicates`` cover their features, ``send-test`` submits a real
message the way a CRM would; ``completion`` and ``man`` describe this parser.

Every failure is one line on stderr naming what failed, and an exit code from
``common.EXIT_CODES`` (printed by ``mailgate --help``); never a traceback. ``main`` turns
what escapes a command into that: the project's errors, a store that does not exist, an
unreadable file, a closed output pipe (``mailgate duplicates list | head``), an interrupt.
Anything else is a bug, said so in one line; ``--traceback`` shows it for a report.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from gateway import __version__
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
    init,
    manual,
    policy,
    queue,
    send_test,
    serve,
    store,
    suppress,
)
from gateway.cli.client import ApiError
from gateway.cli.common import (
    EXIT_CODES,
    EXIT_FAIL,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    settings_for,
)
from gateway.errors import ConfigError, DataDirInUse, GatewayError, PolicyError, StorageError
from gateway.logs import LogFormat, configure_logging
from gateway.settings import CONFIG_SEARCH, SYSTEM_CONFIG, find_config

DESCRIPTION = "Mailgate, the outbound deliverability gateway: run it, set it up, operate it."

# One module per command group, in the order ``mailgate --help`` lists them.
GROUPS = (
    serve,
    init,
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
    manual,
)

_PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _epilog(explicit: Path | None) -> str:
    found = find_config(explicit)
    if found is None:
        now = "none found: built-in defaults"
    elif found.is_file():
        now = str(found.absolute())
    else:
        now = f"{found} (missing)"
    codes = "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES)
    return (
        f"settings file: {CONFIG_SEARCH}\n  used here: {now}\n"
        "  MAILGATE_<SECTION>_<KEY> variables override its keys\n\n"
        f"exit codes:\n{codes}\n\n"
        "`mailgate COMMAND --help` describes a command; `mailgate man` prints the manual."
    )


def build_parser(config: Path | None = None) -> argparse.ArgumentParser:
    """The argument parser for every subcommand (``config``: the ``--config`` given, if any)."""
    parser = argparse.ArgumentParser(
        prog="mailgate",
        description=DESCRIPTION,
        epilog=_epilog(config),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mailgate {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="settings file (default: $MAILGATE_CONFIG, else ./mailgate.toml, else "
        f"{SYSTEM_CONFIG} when present, else the built-in defaults)",
    )
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on an unexpected error, also print the Python traceback (for a bug report)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    parser.set_defaults(root_parser=parser)  # `completion` and `man` describe the tree
    return parser


def _log_format(args: argparse.Namespace) -> LogFormat:
    try:
        return settings_for(args).server.log_format
    except ConfigError:
        return "text"  # the command itself reports the configuration error


def _explicit_config(argv: Sequence[str]) -> Path | None:
    """``--config`` from ``argv`` before the full parse, for the help text's "used here"."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    try:
        known, _ = pre.parse_known_args(argv)
    except SystemExit:
        return None
    config: Path | None = known.config
    return config


def _say(message: str) -> None:
    print(f"mailgate: {message}", file=sys.stderr)


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the exit's flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mailgate`` command: its exit code, whatever happened."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in args_list
    try:
        args = build_parser(_explicit_config(args_list)).parse_args(args_list)
        # Every command logs warnings through the same escaping formatter as `serve`.
        configure_logging("warning", _log_format(args))
        code = int(args.func(args))
        sys.stdout.flush()  # a pipe closed early fails here, inside the handlers below
        return code
    except SystemExit as exc:  # argparse: --help, --version, or a usage error it printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly; the output was cut short.
        _quiet_stdout()
        return EXIT_FAIL
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_FAIL
    except store.NoStore as exc:
        _say(str(exc))
        return EXIT_USAGE
    except DataDirInUse as exc:
        _say(str(exc))
        return EXIT_FAIL
    except ConfigError as exc:
        _say(f"configuration error: {exc}")
        return EXIT_USAGE
    except PolicyError as exc:
        _say(f"the policies do not load; fix these (`mailgate policy check` lists them):\n{exc}")
        return EXIT_FAIL
    except StorageError as exc:
        _say(f"the store is unavailable ({exc}); retry")
        return EXIT_UNAVAILABLE
    except GatewayError as exc:
        _say(str(exc))
        return EXIT_FAIL
    except ApiError as exc:
        _say(str(exc))
        return exc.exit_code
    except _PATH_ERRORS as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        _say(f"{where}{exc.strerror or exc}")
        return EXIT_USAGE
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EHOSTUNREACH):
            _say(f"cannot connect: {exc.strerror or exc}; retry")
            return EXIT_UNAVAILABLE
        _say(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
        return EXIT_FAIL
    except Exception as exc:
        if show_traceback:
            traceback.print_exc()
        _say(
            f"unexpected error ({type(exc).__name__}: {exc}); this is a bug: please report it "
            "with the output of `mailgate --traceback ...` (the same command)"
        )
        return EXIT_FAIL
