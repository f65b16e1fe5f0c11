r"""Log output: one record per line, as text or JSON, with control characters escaped.

Log lines carry data from outside: a suspension reason typed into the admin API, a peer's
EHLO name, an exception about a malformed report. A newline in such a value would start
what looks like a new record (``2026-01-05 09:00:00 INFO gateway: dealer resumed``), and
an escape sequence would repaint an operator's terminal. Every formatter here therefore
escapes control characters in the values it is given, and ``configure_logging`` installs
one of them on the root logger, so aiosmtpd's and uvicorn's records get the same
treatment as the gateway's own.

* ``text`` (the default): ``<time> <LEVEL> <logger>: <message>``. The values
  substituted into a message are escaped (``\n``, ``\x1b``); the message's own format
  string is code and keeps its layout, and every line after the first (a multi-line
  message, a traceback) is indented, so no continuation can pass for a record.
* ``json`` (``server.log_format = "json"``): one JSON object per line for log shippers,
  with ``time``, ``level``, ``logger``, ``message``, the ``extra`` fields the call passed
  (``dealer_id``, ``message_id``) and ``exception``. JSON escapes every control character.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]

# C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators that some
# viewers break lines at.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
CONTINUATION = "\n    "

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    r"""``text`` with every control character written as an escape (``\n``, ``\x1b``).

    Pure; also what a CLI table cell should show for a value from outside.
    """
    return _CONTROL.sub(_escape_char, text)


class _Escaped:
    """A ``%``-format argument whose ``str`` and ``repr`` come out escaped."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return escape_control(str(self.value))

    def __repr__(self) -> str:
        return escape_control(repr(self.value))


def _wrap(value: object) -> object:
    # Numbers keep their type so that %d and %.1f still format them.
    if isinstance(value, int | float):
        return value
    return _Escaped(value)


def _escape_lines(text: str) -> str:
    return "\n".join(escape_control(line) for line in text.split("\n"))


def escaped_message(record: logging.LogRecord) -> str:
    """The record's message with every substituted value escaped.

    A format string keeps its newlines (the text formatter indents what follows them);
    a message that is not a string (``log.error(exc)``) is data and is escaped whole.
    """
    if not isinstance(record.msg, str):
        return escape_control(str(record.msg))
    args = record.args
    if not args:
        return _escape_lines(record.msg)
    if isinstance(args, Mapping):
        safe: Any = {key: _wrap(value) for key, value in args.items()}
    else:
        safe = tuple(_wrap(value) for value in args)
    try:
        return str(_escape_lines(record.msg) % safe)
    except (TypeError, ValueError, KeyError):
        # A format that does not match its arguments is a bug at the call site; show both,
        # escaped, rather than lose the record (logging itself would print a traceback).
        return escape_control(f"{record.msg!s} % {args!r}")


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message>``, one record per line (continuations indented)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The head line, with the message's values escaped."""
        record.message = escaped_message(record)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        """The record, with tracebacks escaped and every line after the first indented."""
        record.asctime = self.formatTime(record)
        text = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        extra = [record.exc_text] if record.exc_text else []
        if record.stack_info:
            extra.append(self.formatStack(record.stack_info))
        for block in extra:
            text += "\n" + _escape_lines(block)
        # Every remaining newline is the code's own (a format string, a traceback).
        return text.replace("\n", CONTINUATION)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """``time``, ``level``, ``logger``, ``message``, extra fields and ``exception``."""
        entry: dict[str, object] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # ensure_ascii: U+2028/U+2029 and every other non-ASCII character are escaped
        # too, so the line survives any shipper's idea of a line break.
        return json.dumps(entry, default=str, ensure_ascii=True)


def formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter for ``server.log_format``."""
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(
    level: str, log_format: LogFormat = "text", stream: TextIO | None = None
) -> logging.Handler | None:
    """Send every record at ``level`` and above to ``stream`` (stderr) in ``log_format``.

    Like ``logging.basicConfig``, it leaves logging alone when someone else configured
    it (a test runner's handlers on the root logger) and returns ``None``; a handler
    installed by an earlier call is replaced, so a command can raise the level it got
    from ``main``. Returns the handler installed.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _GatewayHandler)]
    if len(ours) != len(root.handlers):
        return None
    for old in ours:
        root.removeHandler(old)
    handler = _GatewayHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # aiosmtpd logs every command at INFO (including peers' junk); keep ours readable.
    mail_log = logging.getLogger("mail.log")
    mail_log.setLevel(logging.WARNING)
    if not any(isinstance(f, _LoginDataNoise) for f in mail_log.filters):
        mail_log.addFilter(_LoginDataNoise())
    return handler


class _GatewayHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``configure_logging`` installs (so a later call can find it)."""


class _LoginDataNoise(logging.Filter):
    """aiosmtpd 1.4.6 itself touches its deprecated ``Session.login_data`` on every AUTH."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()
