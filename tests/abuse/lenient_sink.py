"""A deliberately sloppy upstream SMTP server, to make outbound smuggling visible (A2).

aiosmtpd ends DATA only at ``<CRLF>.<CRLF>`` (RFC 5321 §4.1.1.4), so as a test upstream
it hides SMTP smuggling: whatever non-standard end-of-data sequence the gateway relays,
aiosmtpd keeps reading and stores one message. The receivers the 2023 SMTP-smuggling
research found vulnerable were lenient instead: they ended DATA at ``<LF>.<LF>``,
``<CR>.<CR>``, ``<CRLF>.<LF>``, ``<LF>.<CRLF>`` and so on, some ignored NUL bytes, and
they then read the rest of the data as new commands, so one relayed message became two
transactions with the second one's envelope chosen by the sender.

``LenientSink`` is such a receiver, written by hand on asyncio streams:

* a command line ends at CRLF, bare LF or bare CR;
* DATA ends at the first ``<EOL> NUL* "." NUL* <EOL>``, where each ``<EOL>`` may be CRLF,
  LF, CR or CR CR LF (the start of the data counts as a line start);
* after the end of DATA the remaining bytes are parsed as commands.

Every transaction is recorded with its envelope, the exact bytes that were on the wire
between the ``354`` and the end-of-data sequence, and which sequence ended it. A gateway
that lets a smuggling sequence through therefore shows up here as a second message, or a
``MAIL FROM`` the gateway never accepted. The class is a ``Sink`` so the harness (its
``messages``, ``wait_delivered``, the canary) works against it unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass

from tests.sinks import Received, Sink

# One line end as a sloppy receiver reads it. Longest first, so CR CR LF and CRLF are
# taken whole rather than as a bare CR followed by more text.
_EOL = rb"(?:\r\r\n|\r\n|\r|\n)"
# The end of DATA as a lenient receiver sees it: a line holding only "." (NULs ignored).
_LENIENT_END = re.compile(b"(" + _EOL + rb")\x00*\.\x00*" + _EOL)
_COMMAND_LINE = re.compile(rb"^(.*?)(\r\n|\r|\n)", re.DOTALL)
# How long a lone CR at the very end of the buffer may wait for a following LF before the
# sloppy reader settles for CR as the line end.
_CR_GRACE = 0.2


@dataclass
class Transaction:
    """One message as the lenient server saw it."""

    connection: int
    mail_from: str
    rcpt_tos: list[str]
    # The bytes after 354 up to the "." line: the last line keeps its own line end, which
    # is also the first part of the end-of-data sequence (RFC 5321 §4.1.1.4).
    wire: bytes
    terminator: bytes  # the whole sequence that ended DATA, e.g. b"\r\n.\r\n"

    @property
    def content(self) -> bytes:
        """The message with RFC 5321 §4.5.2 transparency undone (leading "." removed)."""
        lines = self.wire.split(b"\r\n")
        return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


class LenientSink(Sink):
    """A raw asyncio SMTP server with the end-of-DATA rules described in the module doc."""

    def __init__(self) -> None:
        super().__init__()
        self.transactions: list[Transaction] = []
        # Every command line received, per connection (1-based), bytes as sent.
        self.commands: list[tuple[int, bytes]] = []
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self, port: int | None = None) -> LenientSink:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port if port is None else port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def drop_sessions(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    def clear(self) -> None:
        """Forget everything recorded so far (connections stay open)."""
        self.transactions.clear()
        self.commands.clear()
        self.messages.clear()

    @property
    def mail_froms(self) -> list[str]:
        """Every reverse-path given in a MAIL command, accepted or not."""
        return [
            line.split(b":", 1)[1].strip().strip(b"<>").decode("utf-8", "replace")
            for _, line in self.commands
            if line[:10].upper() == b"MAIL FROM:"
        ]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        self._writers.append(writer)
        session = _Session(self, conn, reader, writer)
        try:
            await session.run()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(ValueError):
                self._writers.remove(writer)
            writer.close()


class _Session:
    """One connection: a byte buffer shared by command mode and data mode."""

    def __init__(
        self,
        sink: LenientSink,
        conn: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.sink = sink
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self.buffer = b""
        self.mail_from: str | None = None
        self.rcpt_tos: list[str] = []

    async def _more(self, timeout: float | None = None) -> bool:
        """Append whatever arrives next to the buffer; False at EOF or on timeout."""
        try:
            chunk = await asyncio.wait_for(self.reader.read(65536), timeout)
        except TimeoutError:
            return False
        if not chunk:
            return False
        self.buffer += chunk
        return True

    async def _reply(self, text: bytes) -> None:
        self.writer.write(text)
        await self.writer.drain()

    async def _line(self) -> bytes | None:
        """The next command line, ended by CRLF, LF or CR; None at EOF."""
        while True:
            match = _COMMAND_LINE.match(self.buffer)
            if match is not None and (match.group(2) != b"\r" or match.end() < len(self.buffer)):
                self.buffer = self.buffer[match.end() :]
                return match.group(1)
            if match is not None and not await self._more(_CR_GRACE):
                # A lone CR with nothing after it: this reader takes it as the line end.
                self.buffer = self.buffer[match.end() :]
                return match.group(1)
            if match is None and not await self._more():
                return None

    async def _data(self) -> tuple[bytes, bytes] | None:
        """Read DATA up to the first lenient end-of-data; (wire bytes, terminator)."""
        while True:
            # A "." on the very first line ends the data too: treat the start as a line end.
            probe = b"\n" + self.buffer
            match = _LENIENT_END.search(probe)
            if (
                match is not None
                and match.end() == len(probe)
                and probe.endswith(b"\r")
                and await self._more(_CR_GRACE)
            ):
                continue  # a final CR may yet become CRLF or CR CR LF: look again
            if match is not None:
                wire = self.buffer[: max(match.end(1) - 1, 0)]
                terminator = probe[match.start() + (1 if match.start() == 0 else 0) : match.end()]
                self.buffer = self.buffer[match.end() - 1 :]
                return wire, terminator
            if not await self._more():
                return None

    async def run(self) -> None:
        await self._reply(b"220 lenient.test ESMTP sloppy\r\n")
        while (line := await self._line()) is not None:
            self.sink.commands.append((self.conn, line))
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                await self._reply(b"250-lenient.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
            elif verb == b"MAIL":
                self.mail_from = _path(line)
                self.rcpt_tos = []
                await self._reply(b"250 2.1.0 OK\r\n")
            elif verb == b"RCPT":
                if self.mail_from is None:
                    await self._reply(b"503 5.5.1 MAIL first\r\n")
                    continue
                self.rcpt_tos.append(_path(line))
                await self._reply(b"250 2.1.5 OK\r\n")
            elif verb == b"DATA":
                if self.mail_from is None or not self.rcpt_tos:
                    await self._reply(b"503 5.5.1 RCPT first\r\n")
                    continue
                await self._reply(b"354 go ahead\r\n")
                got = await self._data()
                if got is None:
                    return
                self._record(*got)
                await self._reply(b"250 2.0.0 queued\r\n")
            elif verb == b"RSET":
                self.mail_from, self.rcpt_tos = None, []
                await self._reply(b"250 2.0.0 OK\r\n")
            elif verb == b"NOOP":
                await self._reply(b"250 2.0.0 OK\r\n")
            elif verb == b"QUIT":
                await self._reply(b"221 2.0.0 bye\r\n")
                return
            else:
                await self._reply(b"500 5.5.1 unrecognised command\r\n")

    def _record(self, wire: bytes, terminator: bytes) -> None:
        assert self.mail_from is not None
        txn = Transaction(self.conn, self.mail_from, list(self.rcpt_tos), wire, terminator)
        self.sink.transactions.append(txn)
        self.sink.messages.append(Received(txn.mail_from, txn.rcpt_tos, txn.content, tls=False))
        self.mail_from, self.rcpt_tos = None, []


def _path(line: bytes) -> str:
    """The address in ``MAIL FROM:<a>`` or ``RCPT TO:<a>``, parameters dropped."""
    arg = (line.split(b":", 1)[1] if b":" in line else b"").strip()
    if arg.startswith(b"<") and b">" in arg:
        return arg[1 : arg.index(b">")].decode("utf-8", "replace")
    return arg.split(b" ", 1)[0].decode("utf-8", "replace")
