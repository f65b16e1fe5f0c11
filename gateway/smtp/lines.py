r"""How the submission listener cuts the byte stream into command lines and DATA lines.

aiosmtpd 1.4.6 reads a command up to the first LF and DATA up to each CRLF. Both are
wrong for real clients, in opposite directions:

* **Commands** end at CRLF only (RFC 5321 §2.3.8, §4.1.1). Cutting at a bare LF splits
  ``RCPT TO:<a@b.example>\nRCPT TO:<c@d.example>`` into two commands, and a CR inside a
  line was passed on inside the argument (``<a@b.example\rDATA>`` was accepted and
  became ``a@b.exampledata``). ``CommandReader`` reads to CRLF and refuses a line that
  still holds a CR, an LF or a NUL (``ControlInCommand``, answered ``501 5.5.2``).
* **DATA** lines were cut at CRLF only, so the line-length limit counted an LF-only
  message (what Python's ``smtplib.sendmail(..., msg.as_bytes())`` sends) as one line and
  refused it with ``500 5.5.2``. ``DataReceiver`` counts lines on LF, so the limit applies
  to real lines; the end of data is still only ``<CRLF>.<CRLF>`` (a ``.`` line after a bare
  LF or CR does not end it: SMTP smuggling, CVE-2023-51764), and the bare line endings are
  made CRLF (or refused) by intake before anything reads the message.
"""

from __future__ import annotations

import asyncio
import re
from typing import Literal

__all__ = ["CommandReader", "ControlInCommand", "DataReceiver"]

# Inside a command line (its final CRLF excluded): the characters that end or cut lines.
_CONTROL = re.compile(rb"[\r\n\x00]")


class ControlInCommand(Exception):
    """A command line held a CR, an LF or a NUL before its final CRLF (already consumed)."""


class CommandReader(asyncio.StreamReader):
    """aiosmtpd's stream reader, with command lines read up to CRLF.

    aiosmtpd reads a command with ``readuntil()`` (no separator) and everything else with
    an explicit one (DATA, AUTH responses through ``readline``, the PROXY header), so only
    the call without a separator changes: it reads to CRLF and raises ``ControlInCommand``
    for a line with a CR, LF or NUL inside (the line is consumed; the session goes on).
    """

    async def readuntil(self, separator: bytes | None = None) -> bytes:  # type: ignore[override]
        """Read to ``separator``, or a whole command line to CRLF when none is given."""
        if separator is not None:
            return await super().readuntil(separator)
        line = await super().readuntil(b"\r\n")
        if _CONTROL.search(line, 0, len(line) - 2):
            raise ControlInCommand()
        return line


class DataReceiver:
    """The lines of one DATA transaction, fed as read (sans-IO).

    Feed every chunk the stream gives up to and including an LF with ``line`` (it says
    whether that chunk was the end-of-data line), and the pieces of a line longer than the
    reader's buffer with ``fragment``. ``problem`` is ``"too-long"`` when a line, counted
    up to its LF, is over ``max_line`` octets, ``"too-big"`` when the data is over
    ``max_bytes``, ``"no-room"`` when the caller gave up on it (``drop``: the memory budget
    had no room); the first problem found is kept and the data is then discarded (the
    rest is still read, RFC 5321 §4.2.5: the reply comes after the end of data).

    Dot transparency (RFC 5321 §4.5.2) is undone on every line, including one after a bare
    LF: clients that send bare LF dot-stuff there too (Python's smtplib quotes ``^.`` in
    multi-line mode), and the line becomes a real line once intake makes the LF a CRLF.
    """

    def __init__(self, *, max_line: int, max_bytes: int | None) -> None:
        self._max_line = max_line
        self._max_bytes = max_bytes or 0
        self._lines: list[bytes] = []
        self._size = 0
        self._partial = 0  # octets of the unfinished line read so far as fragments
        self._after_crlf = True  # DATA began, or the last line ended with CRLF
        self.problem: Literal["", "too-long", "too-big", "no-room"] = ""

    @property
    def size(self) -> int:
        """Octets read so far, as sent (dot-stuffing included)."""
        return self._size

    def drop(self) -> None:
        """Keep nothing more of this message: it will be refused for want of memory."""
        self._fail("no-room")

    def line(self, chunk: bytes) -> bool:
        """Take one chunk ending in LF; ``True`` when it is the end-of-data line."""
        if not self._partial and self._after_crlf and chunk == b".\r\n":
            return True
        length = self._partial + len(chunk)
        starts_line = not self._partial
        self._partial = 0
        self._after_crlf = chunk.endswith(b"\r\n")
        self._count(len(chunk))
        if length > self._max_line:
            self._fail("too-long")
        if not self.problem:
            self._lines.append(chunk[1:] if starts_line and chunk[:1] == b"." else chunk)
        return False

    def fragment(self, piece: bytes) -> None:
        """Take part of a line with no LF yet (longer than the stream reader's limit)."""
        self._partial += len(piece)
        self._count(len(piece))
        # The reader's limit is the line limit: a line it cannot hold is too long.
        self._fail("too-long")

    def content(self) -> bytes:
        """The message as received, with the dot transparency undone."""
        return b"".join(self._lines)

    def _count(self, octets: int) -> None:
        self._size += octets
        if self._max_bytes and self._size > self._max_bytes:
            self._fail("too-big")

    def _fail(self, problem: Literal["too-long", "too-big", "no-room"]) -> None:
        if not self.problem:
            self.problem = problem
        self._lines.clear()  # nothing of it will be used: free the memory now
