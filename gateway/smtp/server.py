"""The submission listener: aiosmtpd's ``SMTP`` with the limits it lacks, and shutdown.

aiosmtpd 1.4.6 has no connection cap, no per-IP cap, a timeout that only recognised
commands reset (so DATA must finish within it) and replies without enhanced codes. The
subclass here adds: global and per-IP connection caps answered with ``421 4.7.0`` at the
banner, a separate DATA deadline, enhanced codes on every built-in reply, and a registry
of live sessions so SIGTERM can let DATA finish and tell the others ``421 4.3.2``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from typing import Any, AnyStr, Protocol

from aiosmtpd.smtp import SMTP, Session

from gateway import replies
from gateway.metrics import Metrics
from gateway.smtp import budget
from gateway.smtp.budget import DataBudget
from gateway.smtp.handler import peer_ip
from gateway.types import Reply

log = logging.getLogger("gateway.smtp")

PRE_TLS_REFUSALS = 5  # commands refused before STARTTLS, then the session is closed


class SessionHandler(Protocol):
    """What ``GatewaySMTP`` needs of a handler besides aiosmtpd's hooks."""

    def forget(self, session: Session) -> None:
        """Drop per-connection state when the connection closes."""
        ...


class Sessions:
    """Live sessions of one listener, with the counts the caps need."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.live: set[GatewaySMTP] = set()
        self.per_ip: Counter[str] = Counter()
        self.closing = False

    def admit(self, ip: str) -> Reply | None:
        """Return the refusal for a new connection from ``ip``, or ``None`` to admit it."""
        if self.closing:
            return replies.SHUTTING_DOWN
        if len(self.live) >= self.max_total:
            return replies.TOO_MANY_CONNECTIONS
        if self.per_ip[ip] >= self.max_per_ip:
            return replies.TOO_MANY_FROM_IP
        return None


class GatewaySMTP(SMTP):
    """aiosmtpd's server protocol with caps, deadlines and enhanced reply codes."""

    def __init__(
        self,
        handler: SessionHandler,
        *,
        sessions: Sessions,
        metrics: Metrics,
        listener: str,
        line_length_limit: int,
        data_timeout: float,
        data_budget: DataBudget,
        bind_network: Callable[[Session], bool] | None = None,
        **kwargs: Any,
    ) -> None:
        # Read by SMTP.__init__ to size the stream reader: DATA lines up to this length are
        # accepted (and folded on output), longer ones fail the message with 500 5.5.2.
        self.line_length_limit = line_length_limit
        super().__init__(handler, **kwargs)
        self._gw_handler = handler
        self._sessions = sessions
        self._metrics = metrics
        self._listener = listener
        self._data_timeout = data_timeout
        self._budget = data_budget
        self._ip = ""
        self._refused_before_tls = 0
        self.in_data = False
        self._bind_network = bind_network
        self._network_bound = False  # a dealer's relay network: no STARTTLS or AUTH needed

    async def push(self, status: AnyStr) -> None:
        """Send a reply, giving aiosmtpd's own fixed replies enhanced codes."""
        if isinstance(status, str):
            # RFC 5321 §4.2: reply text is US-ASCII; aiosmtpd encodes strictly, and a stray
            # non-ASCII character would turn a verdict into an exception mid-session.
            status = replies.rewrite_builtin(status).encode("ascii", "replace").decode("ascii")
        if self.transport is None or self.transport.is_closing():
            # The client has gone (it hung up while a slow reply was being decided). Writing
            # to a closed TLS transport raises AttributeError inside asyncio's sslproto on
            # Python 3.11, which aiosmtpd would log as a crash and then repeat in its own
            # error reply; there is nobody to tell, so say nothing.
            return
        await super().push(status)
        if (
            isinstance(status, str)
            and status[:1] == "5"
            and self._tls_protocol is None
            and self.require_starttls
        ):
            # aiosmtpd answers 530 to everything but EHLO/NOOP/STARTTLS/QUIT before TLS,
            # ahead of its own bogus-command and call limits (and 500 to junk bytes); without
            # a count here a plaintext junk or HTTP client would hold the session until the
            # idle timeout.
            self._refused_before_tls += 1
            if self._refused_before_tls >= PRE_TLS_REFUSALS and self.transport is not None:
                await super().push(replies.TOO_MANY_BEFORE_TLS.line())
                self.transport.close()

    async def _handle_client(self) -> None:
        assert self.session is not None
        self._ip = peer_ip(self.session)
        refusal = self._sessions.admit(self._ip)
        if refusal is not None:
            self._metrics.connections_refused.labels(self._listener, refusal.enhanced).inc()
            log.info("connection from %s refused: %s", self._ip, refusal.text)
            await super().push(refusal.line())
            if self.transport is not None:
                self.transport.close()
            return
        if self._bind_network is not None and self._bind_network(self.session):
            # policy relay_networks: the dealer's system speaks neither STARTTLS nor AUTH.
            self._network_bound = True
            self.require_starttls = False
        self._sessions.live.add(self)
        self._sessions.per_ip[self._ip] += 1
        self._metrics.connections.labels(self._listener).inc()
        try:
            await super()._handle_client()
        finally:
            self._sessions.live.discard(self)
            self._sessions.per_ip[self._ip] -= 1
            if self._sessions.per_ip[self._ip] <= 0:
                del self._sessions.per_ip[self._ip]
            self._metrics.connections.labels(self._listener).dec()
            self._gw_handler.forget(self.session)

    async def check_auth_needed(self, caller_method: str) -> bool:
        """AUTH is not needed in a session a dealer's relay network bound at connect."""
        if self._network_bound:
            return False
        return await super().check_auth_needed(caller_method)

    async def smtp_DATA(self, arg: str) -> None:
        """DATA within the memory budget and its own deadline.

        Bytes do not reset aiosmtpd's command timer, so DATA gets a deadline of its own.
        The budget is only asked once there are recipients: before that aiosmtpd answers
        the sequencing error itself.
        """
        reserved = 0
        if self.envelope is not None and self.envelope.rcpt_tos and not arg:
            wanted = budget.share(
                budget.declared_size(self.envelope.mail_options),
                self.data_size_limit or 0,
                len(self.envelope.rcpt_tos),
            )
            reserved = await self._budget.acquire(wanted)
            if not reserved:
                log.info("DATA from %s refused: message data budget in use", self._ip)
                await self.push(replies.BUSY_WITH_DATA.line())
                return
        self._reset_timeout(self._data_timeout)
        self.in_data = True
        try:
            await super().smtp_DATA(arg)
        finally:
            self.in_data = False
            self._reset_timeout()
            await self._budget.release(reserved)

    def say_goodbye(self, reply: Reply) -> None:
        """Tell the client why and close (used at shutdown); safe from outside the session."""
        if self.transport is None:
            return
        with contextlib.suppress(RuntimeError, OSError):
            self._writer.write(reply.line().encode("ascii") + b"\r\n")
        self.transport.close()


class SubmissionServer:
    """One listening socket serving ``GatewaySMTP`` sessions.

    ``auth=False`` serves the inbound report listener: no AUTH is offered or accepted
    (it is refused for want of TLS, ``538``), and nothing requires it. ``bind_network``
    (the submission handler's) is asked at each connect whether the peer is in a dealer's
    relay network; such a session needs neither STARTTLS nor AUTH. ``sock``: a listening
    socket bound elsewhere (a supervisor's, shared by its workers) instead of binding one.
    """

    def __init__(
        self,
        *,
        handler: SessionHandler,
        host: str,
        port: int,
        hostname: str,
        tls_context: ssl.SSLContext | None,
        require_tls: bool,
        max_message_size: int,
        line_length_limit: int,
        idle_timeout: float,
        data_timeout: float,
        sessions: Sessions,
        metrics: Metrics,
        data_budget: DataBudget,
        listener: str = "submission",
        auth: bool = True,
        bind_network: Callable[[Session], bool] | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.host = host
        self._sock = sock  # bound by a supervisor and shared with other workers; else bind
        self.listener = listener
        self.port = port
        self._sessions = sessions
        self._server: asyncio.Server | None = None

        def factory() -> GatewaySMTP:
            return GatewaySMTP(
                handler,
                sessions=sessions,
                metrics=metrics,
                listener=listener,
                line_length_limit=line_length_limit,
                data_timeout=data_timeout,
                data_budget=data_budget,
                bind_network=bind_network,
                hostname=hostname,
                ident="Mailgate ESMTP",
                data_size_limit=max_message_size,
                decode_data=False,
                enable_SMTPUTF8=False,
                tls_context=tls_context,
                require_starttls=require_tls and tls_context is not None,
                auth_required=auth,
                auth_require_tls=require_tls or not auth,
                auth_exclude_mechanism=["CRAM-MD5"],
                timeout=idle_timeout,
                # RFC 5321 leaves floods to the server; these caps stop NOOP/RSET/VRFY loops
                # (reliability A13) while leaving room for long CRM sessions.
                command_call_limit={
                    "NOOP": 100,
                    "RSET": 1000,
                    "VRFY": 20,
                    "HELP": 20,
                    "EHLO": 20,
                    "HELO": 20,
                    "AUTH": 10,
                    "STARTTLS": 5,
                    "*": 100_000,
                },
            )

        self._factory: Callable[[], GatewaySMTP] = factory

    async def start(self) -> None:
        """Bind and start accepting connections."""
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._server = await loop.create_server(self._factory, sock=self._sock)
        else:
            self._server = await loop.create_server(
                self._factory, host=self.host, port=self.port, reuse_address=True
            )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info("%s listener on %s:%d", self.listener, self.host, self.port)

    async def stop(self, grace: float) -> None:
        """Stop accepting; let DATA finish, then answer the rest ``421 4.3.2``.

        Sessions in DATA get up to ``grace`` seconds; every other session is told at once.
        """
        self._sessions.closing = True
        if self._server is not None:
            self._server.close()
        for session in list(self._sessions.live):
            if not session.in_data:
                session.say_goodbye(replies.SHUTTING_DOWN)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(s.in_data for s in self._sessions.live) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self._sessions.live):
            session.say_goodbye(replies.SHUTTING_DOWN)
        if self._server is not None:
            await self._server.wait_closed()
