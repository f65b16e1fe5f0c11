"""The submission listener: aiosmtpd's ``SMTP`` with the limits it lacks, and shutdown.

aiosmtpd 1.4.6 has no connection cap, no per-IP cap, a timeout that only recognised
commands reset (so DATA must finish within it) and replies without enhanced codes. The
subclass here adds: global and per-IP connection caps answered with ``421 4.7.0`` at the
banner, a separate DATA deadline, enhanced codes on every built-in reply, and a registry
of live sessions so SIGTERM can let DATA finish and tell the others ``421 4.3.2``. Lines
are cut as ``lines.py`` says: commands at CRLF only (a CR, LF or NUL inside one is refused
``501 5.5.2``), DATA lines counted on LF for the line-length limit.

PROXY protocol (haproxy's proxy-protocol.txt, v1 and v2): behind a TCP load balancer every
client would otherwise share the balancer's address, and the per-IP caps and the AUTH
failure limit would lock every dealer out at once. aiosmtpd 1.4.6 can parse the header
(``proxy_protocol_timeout``), but then demands it from every peer (no direct client could
connect) and takes whatever address it names unless a ``handle_PROXY`` hook checks who
sent it. Here the header is read with aiosmtpd's parser only from ``proxy_from``
networks, and required from them (the spec:
a receiver must not guess whether a header is there); a connection from anywhere else
that opens with a PROXY header is answered ``554 5.7.1`` and closed. The client's address
from the header then stands for the peer everywhere (caps, AUTH limits, logs, Received:),
also after STARTTLS. A header that says ``LOCAL``/``UNKNOWN`` (the balancer's own health
check) keeps the balancer's address.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import logging
import socket
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, AnyStr, Protocol

from aiosmtpd import smtp as aiosmtpd_smtp
from aiosmtpd.proxy_protocol import AF, V2_CMD, V2_SIGNATURE, get_proxy
from aiosmtpd.smtp import MISSING, SMTP, Session

from gateway import replies
from gateway.metrics import Metrics
from gateway.smtp import budget
from gateway.smtp.accept import SharedAcceptor
from gateway.smtp.budget import DataBudget, Reservation
from gateway.smtp.handler import peer_ip
from gateway.smtp.lines import CommandReader, ControlInCommand, DataReceiver
from gateway.smtp.paths import read_path
from gateway.smtp.tls import ServerCertificate
from gateway.types import Reply

log = logging.getLogger("gateway.smtp")

# The reply to the final "." of a DATA whose bytes were read and dropped (lines.DataReceiver).
_DATA_PROBLEM_REPLIES: dict[str, Reply] = {
    "too-long": replies.LINE_TOO_LONG,
    "too-big": replies.MESSAGE_TOO_BIG,
    "no-room": replies.BUSY_WITH_DATA,
}

_AUTH_NAMES: dict[type, tuple[str, ...]] = {}


def _auth_names(cls: type) -> tuple[str, ...]:
    names = _AUTH_NAMES.get(cls)
    if names is None:
        names = _AUTH_NAMES[cls] = tuple(sorted(n for n in dir(cls) if n.startswith("auth_")))
    return names


class _AuthMembers:
    """What aiosmtpd's ``SMTP.__init__`` uses of ``inspect``, at a fraction of the cost.

    aiosmtpd 1.4.6 runs ``inspect.getmembers`` over the protocol and the handler for every
    connection, only to keep the ``auth_*`` members: some 5% of the CPU of a gateway under
    connection-per-message load. The names are the class's (found once per class here);
    the members are still read from each new object, so each is bound as before.
    """

    signature = staticmethod(inspect.signature)

    @staticmethod
    def getmembers(obj: object) -> list[tuple[str, Any]]:
        """``inspect.getmembers(obj)`` restricted to the names aiosmtpd keeps (sorted)."""
        return [(name, getattr(obj, name)) for name in _auth_names(type(obj))]


aiosmtpd_smtp.inspect = _AuthMembers  # type: ignore[assignment,attr-defined]

_CLASS_NAMES: dict[type, frozenset[str]] = {}


def _names(obj: object) -> list[str]:
    """``dir(obj)`` for the protocol and handler objects, the class's part found once.

    aiosmtpd 1.4.6 also runs ``dir()`` over both for every connection, to find its
    ``smtp_*`` commands and ``handle_*`` hooks: walking the classes' attributes each time.
    An object's names are its class's and its own ``__dict__``'s, sorted, as ``dir`` has it.
    """
    cls = type(obj)
    names = _CLASS_NAMES.get(cls)
    if names is None:
        names = _CLASS_NAMES[cls] = frozenset(dir(cls))
    own = getattr(obj, "__dict__", None)
    return sorted(names.union(own) if own else names)


aiosmtpd_smtp.dir = _names  # type: ignore[attr-defined]  # the module's dir(), not builtins'

PRE_TLS_REFUSALS = 5  # commands refused before STARTTLS, then the session is closed
# proxy-protocol.txt §2: a receiver waits for the header, but not less than 3 seconds.
PROXY_HEADER_TIMEOUT = 5.0
_V1_SIGNATURE = b"PROXY "

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """``["10.0.4.0/24", "::1"]`` as networks (settings validated them already)."""
    return tuple(ipaddress.ip_network(value) for value in values)


def in_networks(ip: str, networks: Sequence[Network]) -> bool:
    """Whether ``ip`` (an IPv4-mapped IPv6 address counts as IPv4) is in ``networks``."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def _may_be_header(start: bytes) -> bool:
    """Whether the first bytes of a connection are (the start of) a PROXY header."""
    return any(sig.startswith(start[: len(sig)]) for sig in (_V1_SIGNATURE, V2_SIGNATURE))


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
        proxy_from: Sequence[Network] = (),
        bind_network: Callable[[Session], bool] | None = None,
        **kwargs: Any,
    ) -> None:
        # Read by SMTP.__init__ to size the stream reader: DATA lines up to this length are
        # accepted (and folded on output), longer ones fail the message with 500 5.5.2.
        self.line_length_limit = line_length_limit
        super().__init__(handler, **kwargs)
        # Commands are read to CRLF, not to the first LF (lines.py); the reader aiosmtpd made
        # is replaced before any connection exists, with the same limit.
        asyncio.StreamReaderProtocol.__init__(
            self,
            CommandReader(limit=line_length_limit, loop=self.loop),
            client_connected_cb=self._cb_client_connected,
            loop=self.loop,
        )
        self._gw_handler = handler
        self._sessions = sessions
        self._metrics = metrics
        self._listener = listener
        self._data_timeout = data_timeout
        self._budget = data_budget
        self._ip = ""
        self._refused_before_tls = 0
        self._reply_lines: list[str] = []  # the lines of a multi-line reply, held (push)
        self.in_data = False
        self._bind_network = bind_network
        self._network_bound = False  # a dealer's relay network: no STARTTLS or AUTH needed
        self._proxy_from = tuple(proxy_from)
        self._proxied = False  # the peer is a trusted balancer: its header is read
        self._client: tuple[str, int] | None = None  # the real client named by the header
        self._first_bytes: bytes | None = b""  # the stream's start, until it cannot be a header

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start a session (again after STARTTLS), keeping the client the header named."""
        if self.transport is None:  # the TCP connection, not the TLS layer over it
            peer = transport.get_extra_info("peername")
            ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
            self._proxied = bool(self._proxy_from) and in_networks(ip, self._proxy_from)
        before = self.session
        super().connection_made(transport)
        if self._client is not None and self.session is not None:
            # RFC 3207 §4.2 resets the session at STARTTLS; the client is still the same.
            self.session.peer = self._client  # type: ignore[assignment]  # (host, port) really
        if self._network_bound and before is not None and self.session is not before:
            # A relay-network session that chose STARTTLS stays the dealer's without AUTH.
            assert self._bind_network is not None and self.session is not None
            self._gw_handler.forget(before)
            self._network_bound = self._bind_network(self.session)

    def data_received(self, data: bytes) -> None:
        """Pass bytes on, refusing a PROXY header from a peer that may not send one."""
        if not self._proxied and self._first_bytes is not None:
            self._first_bytes = (self._first_bytes + data)[: len(V2_SIGNATURE)]
            if not _may_be_header(self._first_bytes):
                self._first_bytes = None  # plain SMTP: stop looking
            elif len(self._first_bytes) >= len(_V1_SIGNATURE) and (
                self._first_bytes.startswith(_V1_SIGNATURE)
                or len(self._first_bytes) == len(V2_SIGNATURE)
            ):
                self._refuse_untrusted_header()
                return
        super().data_received(data)

    def _refuse_untrusted_header(self) -> None:
        self._first_bytes = None
        assert self.session is not None and self.transport is not None
        ip = peer_ip(self.session)
        log.warning("connection from %s refused: PROXY header from an untrusted address", ip)
        self._metrics.connections_refused.labels(self._listener, "proxy-untrusted").inc()
        with contextlib.suppress(RuntimeError, OSError):
            self._writer.write(replies.PROXY_HEADER_REFUSED.line().encode("ascii") + b"\r\n")
        self.transport.close()

    def _drop_balancer(self, balancer: str, problem: str) -> None:
        # proxy-protocol.txt §2: without a valid header the connection is dropped.
        log.warning("connection from balancer %s dropped: %s", balancer, problem)
        self._metrics.connections_refused.labels(self._listener, "proxy-invalid").inc()
        if self.transport is not None:
            self.transport.close()

    async def _read_proxy_header(self) -> bool:
        """Read the balancer's header; ``False`` (connection closed) if there is none."""
        assert self.session is not None
        balancer = peer_ip(self.session)
        problem = ""
        try:
            async with asyncio.timeout(PROXY_HEADER_TIMEOUT):
                header = await get_proxy(self._reader)
        except asyncio.CancelledError:
            # aiosmtpd cancels the session at EOF and leaves a half-closed socket open.
            self._drop_balancer(balancer, "connection closed before the PROXY header ended")
            raise
        except TimeoutError:
            problem = f"no PROXY header within {PROXY_HEADER_TIMEOUT:.0f}s"
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            problem = "connection closed before the PROXY header ended"
        else:
            if not header.valid:
                problem = f"invalid PROXY header ({header.error or 'unsupported'})"
        if problem:
            self._drop_balancer(balancer, problem)
            return False
        # v2 LOCAL (and v1 UNKNOWN, which has no family): the balancer's own connection, a
        # health check; proxy-protocol.txt §2.2 says to use the real connection's addresses.
        local = header.version == 2 and header.command == V2_CMD.LOCAL
        if not local and header.family in (AF.INET, AF.INET6) and header.src_addr is not None:
            self._client = (str(header.src_addr), int(header.src_port or 0))
            self.session.peer = self._client  # type: ignore[assignment]  # (host, port) really
            log.debug("connection from %s via balancer %s", self._client[0], balancer)
        return True

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
        if isinstance(status, str) and status[3:4] == "-":
            # A line of a multi-line reply (EHLO, HELP; RFC 5321 §4.2.1), held until its
            # last line so that the reply leaves in one write: one TLS record and one
            # segment instead of one per line, each with its own drain.
            self._reply_lines.append(status)
            return
        if self._reply_lines and isinstance(status, str):
            status = "\r\n".join((*self._reply_lines, status))
            self._reply_lines.clear()
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
        if self._proxied and not await self._read_proxy_header():
            return
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
        reservation: Reservation | None = None
        if self.envelope is not None and self.envelope.rcpt_tos and not arg:
            reservation = await self._budget.reserve(
                budget.planned_size(
                    budget.declared_size(self.envelope.mail_options), self.data_size_limit or 0
                ),
                len(self.envelope.rcpt_tos),
            )
            if reservation is None:
                log.info("DATA from %s refused: message data budget in use", self._ip)
                await self.push(replies.BUSY_WITH_DATA.line())
                return
        self._reset_timeout(self._data_timeout)
        self.in_data = True
        try:
            await self._receive_data(arg, reservation)
        finally:
            self.in_data = False
            self._reset_timeout()
            if reservation is not None:
                await reservation.release()

    async def _receive_data(self, arg: str, reservation: Reservation | None) -> None:
        """The DATA of aiosmtpd 1.4.6, with lines counted on LF (``lines.DataReceiver``).

        The memory reservation grows as the bytes arrive (``smtp/budget.py``); while a step
        waits for room nothing more is read, and a step refused drops the message.
        """
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        receiver = DataReceiver(max_line=self.line_length_limit, max_bytes=self.data_size_limit)
        covered = reservation.octets if reservation is not None else 0
        while True:
            if self.transport is None:
                return
            try:
                chunk = await self._reader.readuntil(b"\n")
            except asyncio.CancelledError:
                log.info("connection from %s lost during DATA", self._ip)
                self._writer.close()
                raise
            except asyncio.LimitOverrunError as exc:
                receiver.fragment(await self._reader.read(exc.consumed))
                continue
            if receiver.line(chunk):
                break
            if reservation is not None and receiver.size > covered and not receiver.problem:
                if await reservation.grow(receiver.size):
                    covered = reservation.octets
                else:
                    log.info("DATA from %s dropped: message data budget in use", self._ip)
                    receiver.drop()
        if receiver.problem:
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(_DATA_PROBLEM_REPLIES[receiver.problem].line())
            return
        content = receiver.content()
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def handle_exception(self, error: Exception) -> str:
        """A command line with a CR, LF or NUL inside is refused; the session goes on."""
        if isinstance(error, ControlInCommand):
            self._metrics.refused.labels("control-in-command").inc()
            return replies.CONTROL_IN_COMMAND.line()
        status: str = await super().handle_exception(error)
        return status

    async def smtp_PROXY(self, arg: str) -> None:
        """A PROXY line as a command: a header anywhere but first, or from a direct client."""
        log.warning("PROXY command from %s refused and the connection closed", self._ip)
        self._metrics.connections_refused.labels(self._listener, "proxy-untrusted").inc()
        await self.push(replies.PROXY_HEADER_REFUSED.line())
        if self.transport is not None:
            self.transport.close()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """Aiosmtpd's reading of a MAIL/RCPT path, with its common case fast (smtp/paths.py)."""
        if not arg:
            return "", ""
        read = read_path(arg)
        if read is None:
            return None, None
        address, rest = read
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

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
        tls: ServerCertificate | None,
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
        proxy_from: Sequence[str] = (),
        bind_network: Callable[[Session], bool] | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.host = host
        self._sock = sock  # bound by a supervisor and shared with other workers; else bind
        self.listener = listener
        self.tls = tls
        self.port = port
        self._sessions = sessions
        self._server: asyncio.Server | SharedAcceptor | None = None
        networks = parse_networks(proxy_from)

        def factory() -> GatewaySMTP:
            return GatewaySMTP(
                handler,
                sessions=sessions,
                metrics=metrics,
                listener=listener,
                line_length_limit=line_length_limit,
                data_timeout=data_timeout,
                data_budget=data_budget,
                proxy_from=networks,
                bind_network=bind_network,
                hostname=hostname,
                ident="Mailgate ESMTP",
                data_size_limit=max_message_size,
                decode_data=False,
                enable_SMTPUTF8=False,
                # The context in force when the client connects: a certificate reloaded
                # (SIGHUP) serves the sessions that connect afterwards (smtp/tls.py).
                tls_context=tls.context if tls is not None else None,
                require_starttls=require_tls and tls is not None,
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
            # Shared with the other workers: one connection per turn (smtp/accept.py).
            acceptor = SharedAcceptor(self._sock, self._factory)
            acceptor.start()
            self._server = acceptor
            self.port = acceptor.port
        else:
            server = await loop.create_server(
                self._factory, host=self.host, port=self.port, reuse_address=True
            )
            self._server = server
            self.port = server.sockets[0].getsockname()[1]
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
