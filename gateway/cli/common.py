"""What every ``mailgate`` command shares: the settings, the exit codes, who acts, progress.

``settings_for(args)`` is the one way a command loads the settings: the file
``config_path(args)`` finds (``--config``, else ``MAILGATE_CONFIG``, else ``./mailgate.toml``,
else ``/etc/mailgate/mailgate.toml``, else the defaults); ``MAILGATE_*`` variables override
it (``gateway/settings.py``). The exit codes are the same for the
admin client and the offline commands, and ``exit_code(status)`` maps an API status (or an
``AdminError``'s) to one, so a refusal exits the same way whichever path made it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from gateway.settings import Settings, find_config, load_settings

EXIT_OK = 0  # done
EXIT_FAIL = 1  # refused or not found; the message says why
EXIT_USAGE = 2  # the command was wrong (bad value, missing option, unreadable file)
EXIT_UNAVAILABLE = 3  # the gateway is unreachable or its store unavailable: retry
EXIT_AUTH = 4  # no admin token, or a wrong one

# The table ``mailgate --help`` prints; every failure exits with one of these.
EXIT_CODES = (
    (EXIT_OK, "done"),
    (EXIT_FAIL, "refused, not found, or the thing checked is not right (the message says why)"),
    (EXIT_USAGE, "usage or configuration error (bad option or value, no such file, no store)"),
    (EXIT_UNAVAILABLE, "the gateway, the store or a server is unreachable or busy: retry"),
    (EXIT_AUTH, "access refused: no admin token or a wrong one; a wrong SMTP login (send-test)"),
)


def config_path(args: argparse.Namespace) -> Path | None:
    """The settings file of this invocation (``gateway.settings.find_config``), or ``None``."""
    return find_config(getattr(args, "config", None))


def settings_for(args: argparse.Namespace) -> Settings:
    """The settings of this invocation: ``config_path(args)`` plus ``MAILGATE_*`` variables."""
    return load_settings(config_path(args))


def add_json(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    """Give a command that prints data the ``--json`` option every such command has."""
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def emit(args: argparse.Namespace, data: Any, human: Callable[[Any], str]) -> None:
    """Print ``data`` as JSON with ``--json``, else ``human(data)``."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        print(human(data))


def exit_code(status: int) -> int:
    """The exit code for an answer with HTTP ``status`` (4xx and 5xx only)."""
    if status in (401, 403):
        return EXIT_AUTH
    if status >= 500:
        return EXIT_UNAVAILABLE
    if status in (404, 409, 422):
        return EXIT_FAIL
    return EXIT_USAGE


def operator_name(args: argparse.Namespace) -> str:
    """Who acts in an offline command: ``--by``, else the login name (recorded and logged)."""
    by: str | None = getattr(args, "by", None)
    if by:
        return by
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "cli"


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()

    def advance(self, count: int = 1) -> None:
        """Count ``count`` more items and redraw."""
        before, self.done = self.done, self.done + count
        # Redraw on crossing a multiple of 100, not on landing on one: a caller that counts
        # one rejected row and then batches of 5000 never lands on one again.
        if self._tty and (self.done // 100 > before // 100 or self.done == self.total):
            self._draw()

    def _draw(self) -> None:
        if self.total:
            share = min(self.done / self.total, 1.0)
            bar = "#" * int(share * 30)
            self._stream.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total}")
        else:
            self._stream.write(f"\r{self.label} {self.done}")
        self._stream.flush()

    def finish(self) -> None:
        """End the bar's line."""
        if self._tty:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()
