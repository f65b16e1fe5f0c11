"""Real loopback SMTP sinks for tests: aiosmtpd servers with programmable replies.

A ``Sink`` runs aiosmtpd's ``SMTP`` protocol on 127.0.0.1 inside the test's own event loop
(so handler delays are plain ``asyncio.sleep`` and nothing needs a thread). The handler
records what arrived and answers as told:

* ``rcpt_replies[rcpt]``: replies to use for the first attempts, in order, then 250;
* ``rcpt_always[rcpt]``: a reply used for every attempt;
* ``data_replies``: replies for the end of DATA, consumed in order, then 250;
* ``drop_data``: how many times to drop the connection at the end of DATA, without a reply;
* ``delay``: seconds to wait before answering the end of DATA;
* ``ehlo_without``: EHLO keywords not to advertise (``{"8BITMIME"}``: a 7-bit-only hop);
  ``Sink(smtputf8=True)`` advertises SMTPUTF8. ``mail_options`` records every MAIL's
  parameters.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class Received:
    """One message the sink accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool


@dataclass
class SinkHandler:
    """Records envelopes and bytes; replies as programmed."""

    rcpt_replies: dict[str, list[str]] = field(default_factory=dict)
    rcpt_always: dict[str, str] = field(default_factory=dict)
    data_replies: list[str] = field(default_factory=list)
    drop_data: int = 0
    delay: float = 0.0
    messages: list[Received] = field(default_factory=list)
    mail_commands: int = 0
    rcpt_attempts: Counter[str] = field(default_factory=Counter)
    ehlo_without: set[str] = field(default_factory=set)
    mail_options: list[list[str]] = field(default_factory=list)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: Any
    ) -> list[str]:
        session.host_name = hostname
        return [r for r in responses if r[4:].split(" ")[0].upper() not in self.ehlo_without]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self.mail_commands += 1
        self.mail_options.append(list(options))
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self.rcpt_attempts[address] += 1
        if address in self.rcpt_always:
            return self.rcpt_always[address]
        queued = self.rcpt_replies.get(address)
        if queued:
            return queued.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.drop_data > 0:
            self.drop_data -= 1
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()
            return "250 OK (never seen)"
        if self.data_replies:
            return self.data_replies.pop(0)
        content = envelope.original_content or b""
        assert isinstance(content, bytes)
        self.messages.append(
            Received(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                data=content,
                tls=session.ssl is not None,
            )
        )
        return "250 2.0.0 OK queued"


class Sink:
    """An aiosmtpd server on 127.0.0.1 (port 0 by default) around a ``SinkHandler``."""

    def __init__(
        self,
        handler: SinkHandler | None = None,
        *,
        tls_context: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
        smtputf8: bool = False,
    ) -> None:
        self.handler = handler or SinkHandler()
        self.smtputf8 = smtputf8
        self.tls_context = tls_context
        self.credentials = credentials
        self.logins: list[str] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._protocols: list[SMTP] = []

    def _factory(self) -> SMTP:
        self.connections += 1
        proto = SMTP(
            self.handler,
            hostname="sink.test",
            decode_data=False,
            enable_SMTPUTF8=self.smtputf8,
            tls_context=self.tls_context,
            require_starttls=False,
            auth_require_tls=False,
            authenticator=self._authenticate if self.credentials else None,
        )
        self._protocols.append(proto)
        return proto

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and self.credentials is not None
            and (data.login.decode(), data.password.decode()) == self.credentials
        )
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok)

    async def start(self, port: int | None = None) -> Sink:
        """Listen (on ``port``, or the last one used, or a free one) and return self."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory, "127.0.0.1", self.port if port is None else port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and drop every open session."""
        if self._server is not None:
            self._server.close()
            self.drop_sessions()
            await self._server.wait_closed()
            self._server = None

    def drop_sessions(self) -> None:
        """Close every open session from the server side but keep listening."""
        for proto in self._protocols:
            if isinstance(proto.transport, asyncio.Transport):
                proto.transport.abort()
        self._protocols.clear()

    def open_sessions(self) -> int:
        """Connections from clients that are open right now."""
        return sum(
            1
            for proto in self._protocols
            if isinstance(proto.transport, asyncio.Transport) and not proto.transport.is_closing()
        )

    @property
    def messages(self) -> list[Received]:
        """Messages accepted so far."""
        return self.handler.messages
