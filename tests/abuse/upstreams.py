"""Upstreams for fault cases: a sink handler with more knobs, and a raw scripted server."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.sinks import Received, SinkHandler


@dataclass
class FaultHandler(SinkHandler):
    """``SinkHandler`` plus replies at MAIL, per-attempt delays, and concurrency counting."""

    mail_replies: list[str] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    in_data: int = 0
    max_in_data: int = 0
    abandoned: int = 0
    # At each MAIL: how many other sessions still had an open connection and had sent DATA.
    open_at_mail: list[int] = field(default_factory=list)
    _in_flight: list[SMTP] = field(default_factory=list)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self.open_at_mail.append(
            sum(
                1
                for other in self._in_flight
                if other is not server
                and other.transport is not None
                and not other.transport.is_closing()
            )
        )
        if self.mail_replies:
            self.mail_commands += 1
            return self.mail_replies.pop(0)
        return await super().handle_MAIL(server, session, envelope, address, options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self._in_flight.append(server)
        self.in_data += 1
        self.max_in_data = max(self.max_in_data, self.in_data)
        try:
            if self.delays:
                try:
                    await asyncio.sleep(self.delays.pop(0))
                except asyncio.CancelledError:
                    self.abandoned += 1  # the client hung up; aiosmtpd cancels the handler
                    raise
                transport = server.transport
                if transport is None or transport.is_closing():
                    self.abandoned += 1  # the client gave up; this copy was never confirmed
                    return "451 4.4.2 client gone"
            return await super().handle_DATA(server, session, envelope)
        finally:
            self.in_data -= 1
            self._in_flight.remove(server)


Script = Callable[[str, int], bytes | None]


class RawUpstream:
    """A hand-written SMTP server: ``script(command, n)`` may override a reply.

    ``script`` gets the upper-cased verb (``BANNER``, ``EHLO``, ``MAIL``, ``RCPT``, ``DATA``,
    ``.``) and how many times that verb has been seen (1-based, over all connections), and
    returns raw bytes to send instead of the normal reply (or ``None`` for the normal one).
    Accepted messages land in ``messages``; ``transcript`` keeps every line both ways.
    """

    def __init__(self, script: Script) -> None:
        self.script = script
        self.messages: list[Received] = []
        self.connections = 0
        self.seen: dict[str, int] = {}
        self.transcript: list[tuple[int, str, bytes]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        normal = {
            "BANNER": b"220 raw.test ESMTP\r\n",
            "EHLO": b"250-raw.test\r\n250 8BITMIME\r\n",
            "HELO": b"250 raw.test\r\n",
            "MAIL": b"250 2.1.0 OK\r\n",
            "RCPT": b"250 2.1.5 OK\r\n",
            "DATA": b"354 go ahead\r\n",
            ".": b"250 2.0.0 queued\r\n",
            "RSET": b"250 2.0.0 OK\r\n",
            "NOOP": b"250 2.0.0 OK\r\n",
            "QUIT": b"221 2.0.0 bye\r\n",
        }

        async def reply(verb: str, custom: bytes | None) -> None:
            out = custom if custom is not None else normal.get(verb, b"500 5.5.1 ?\r\n")
            self.transcript.append((conn, "S", out[:200]))
            writer.write(out)
            await writer.drain()

        def custom_for(verb: str) -> bytes | None:
            self.seen[verb] = self.seen.get(verb, 0) + 1
            return self.script(verb, self.seen[verb])

        mail_from = ""
        rcpts: list[str] = []
        try:
            await reply("BANNER", custom_for("BANNER"))
            while line := await reader.readline():
                self.transcript.append((conn, "C", line[:200]))
                verb = line[:4].decode("ascii", "replace").upper().strip()
                if verb == "MAIL":
                    mail_from, rcpts = line.decode().split(":", 1)[1].strip(" <>\r\n"), []
                elif verb == "RCPT":
                    rcpts.append(line.decode().split(":", 1)[1].strip(" <>\r\n"))
                custom = custom_for(verb)
                await reply(verb, custom)
                if verb == "DATA" and custom is None:
                    body = b""
                    while (chunk := await reader.readline()) not in (b".\r\n", b""):
                        body += chunk
                    self.transcript.append((conn, "C", b"<%d bytes of data>" % len(body)))
                    end = custom_for(".")
                    if end is None:
                        self.messages.append(Received(mail_from, rcpts, body, tls=False))
                    await reply(".", end)
                if verb == "QUIT":
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


@dataclass
class SessionLimitHandler(SinkHandler):
    """Accepts ``limit`` recipients per connection, then answers ``452 4.5.3`` to RCPT."""

    limit: int = 30
    taken: Counter[int] = field(default_factory=Counter)
    refused: int = 0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.taken[id(session)] >= self.limit:
            self.refused += 1
            self.rcpt_attempts[address] += 1
            return "452 4.5.3 Too many recipients in this session"
        self.taken[id(session)] += 1
        return await super().handle_RCPT(server, session, envelope, address, options)
