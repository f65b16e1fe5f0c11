r"""aiosmtplib's DATA preparation, with its common case found in C.

Before it sends a message, aiosmtplib 5 makes every line ending CRLF and doubles each
leading dot (RFC 5321 §4.5.2), with two regular-expression substitutions over the whole
message: some 5 % of a delivery worker's CPU on 10 KB messages. Intake stores every
message with CRLF line endings, and most have no line that starts with a dot, so both
substitutions usually change nothing; ``bytes.count`` and ``in`` tell that in C first.
``install`` puts these in place of aiosmtplib's own; each gives what the original gives
for any input (``tests/unit/delivery/test_transparency.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from aiosmtplib import protocol

__all__ = ["install", "normalize_line_endings", "stuff_periods"]

_NORMALIZE: Callable[[bytes], bytes] = protocol.normalize_message_line_endings
_PERIOD: re.Pattern[bytes] = protocol.PERIOD_REGEX


def normalize_line_endings(message: bytes) -> bytes:
    """``aiosmtplib.protocol.normalize_message_line_endings``."""
    crlf = message.count(b"\r\n")
    if message.count(b"\n") == crlf and message.count(b"\r") == crlf and message.endswith(b"\r\n"):
        return message  # no bare CR or LF, and the final CRLF is there
    return _NORMALIZE(message)


class _Periods:
    r"""``aiosmtplib.protocol.PERIOD_REGEX`` (``(?m)^\.``), as far as aiosmtplib uses it."""

    pattern = _PERIOD.pattern

    @staticmethod
    def sub(replacement: bytes, message: bytes) -> bytes:
        # A line starts at the beginning or after an LF: (?m)^ in a bytes pattern.
        if not message.startswith(b".") and b"\n." not in message:
            return message
        return _PERIOD.sub(replacement, message)


stuff_periods = _Periods.sub


def install() -> None:
    """Use the shortcuts in aiosmtplib's protocol module (idempotent)."""
    protocol.normalize_message_line_endings = normalize_line_endings
    protocol.PERIOD_REGEX = _Periods()  # type: ignore[assignment]
