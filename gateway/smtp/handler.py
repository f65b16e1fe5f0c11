"""The submission handler: translate SMTP commands in, call intake, translate replies out.

aiosmtpd calls the ``handle_*`` hooks and the ``auth_*`` mechanisms below. They enforce
who may send (AUTH identity = dealer, or a dealer's ``relay_networks`` for systems that
cannot authenticate), from which domains, to which addresses and how many, and leave
everything about the message itself to ``intake``. Every reply comes from
``replies``; an unexpected exception becomes ``451 4.3.0`` (never aiosmtpd's default
``500 Error: (Exc) …``, which is permanent and leaks internals).
"""

from __future__ import annotations

import binascii
import logging
from base64 import b64decode
from dataclasses import dataclass
from typing import Protocol

from aiosmtpd.smtp import SMTP, AuthResult, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from gateway import replies
from gateway.clock import Clock
from gateway.dns.domains import RecipientDomains
from gateway.errors import StorageError
from gateway.intake.backpressure import SpoolGuard
from gateway.intake.service import Intake
from gateway.mail import addresses
from gateway.mail.addresses import AddressProblem
from gateway.metrics import Metrics
from gateway.policy.store import PolicyStore
from gateway.reputation.records import DealerStatus, Suppression
from gateway.smtp.auth import Authenticator, AuthStatus
from gateway.types import DealerId, Envelope, Reply

log = logging.getLogger("gateway.smtp")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a session authenticated as (stored in ``session.auth_data``).

    A session bound by a dealer's relay network has no user name and names the network.
    """

    username: str
    dealer_id: DealerId
    network: str = ""


@dataclass(slots=True)
class SessionLimits:
    """Per-listener limits the handler enforces."""

    max_recipients: int
    max_messages_per_connection: int
    require_tls: bool


def peer_ip(session: Session) -> str:
    """The client's IP address as a string."""
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer)


class ReputationChecks(Protocol):
    """The store lookups MAIL FROM and RCPT TO make (``reputation/suspensions.py``).

    Both raise ``StorageError`` when the store fails; the handler then answers
    ``451 4.3.0``: closed, but only for now.
    """

    async def status(self, dealer_id: DealerId) -> DealerStatus | None:
        """The dealer's current state, or ``None`` when nothing has happened to it."""
        ...

    async def suppression(self, dealer_id: DealerId, address: str) -> Suppression | None:
        """The active suppression of ``address`` for the dealer, or ``None``."""
        ...


_ADDRESS_REPLIES: dict[AddressProblem, Reply] = {
    AddressProblem.SYNTAX: replies.BAD_ADDRESS_SYNTAX,
    AddressProblem.ROUTING: replies.ROUTING_NOT_ALLOWED,
    AddressProblem.INTERNAL: replies.INTERNAL_TARGET,
}


class SubmissionHandler:
    """aiosmtpd handler for the dealers' submission listener."""

    def __init__(
        self,
        *,
        intake: Intake,
        authenticator: Authenticator,
        policies: PolicyStore,
        guard: SpoolGuard,
        limits: SessionLimits,
        metrics: Metrics,
        clock: Clock,
        reputation: ReputationChecks | None = None,
        domains: RecipientDomains | None = None,
    ) -> None:
        self._domains = domains  # None: recipient domains are not looked up (settings [dns])
        self._reputation = reputation
        # id(session) -> recipients of the current transaction left out as suppressed
        # (policy [suppression] on_rcpt = "drop"): accepted at RCPT, never queued.
        self._suppressed: dict[int, set[str]] = {}
        # id(session) -> recipients of the current transaction who unsubscribed: accepted
        # at RCPT (transactional mail may still reach them), judged at DATA.
        self._unsubscribed: dict[int, set[str]] = {}
        self._intake = intake
        self._auth = authenticator
        self._policies = policies
        self._guard = guard
        self._limits = limits
        self._metrics = metrics
        self._clock = clock
        self._messages: dict[int, int] = {}  # id(session) -> messages on this connection
        # id(session) -> the dealer a relay network bound the session to at connect.
        self._networks: dict[int, Identity] = {}

    # -- relay networks (policy relay_networks): sessions that cannot AUTH ------------------

    def bind_network(self, session: Session) -> bool:
        """At connect: bind a session from a dealer's relay network to that dealer.

        Returns True when it did; the listener then needs neither STARTTLS nor AUTH from
        this session (it may still do both). Every such session is logged, so an operator
        can see who sent without credentials.
        """
        ip = peer_ip(session)
        found = self._policies.current.dealer_for_ip(ip)
        if found is None:
            return False
        dealer, network = found
        self._networks[id(session)] = Identity("", dealer.dealer_id, str(network))
        log.info("relay-network session peer=%s dealer=%s network=%s (no AUTH)",
                 ip, dealer.dealer_id, network)  # fmt: skip
        return True

    # -- AUTH (RFC 4954; PLAIN RFC 4616, LOGIN draft-murchison-sasl-login) ----------------

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        """SASL PLAIN; the authzid is ignored, the identity is always the authcid."""
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await server.push(Reply(501, "5.5.2", "Cannot decode base64").line())
                return AuthResult(success=False, handled=True)
        parts = blob.split(b"\0")
        if len(parts) != 3:
            await server.push(Reply(501, "5.5.2", "Cannot split auth value").line())
            return AuthResult(success=False, handled=True)
        return await self._login(server, parts[1], parts[2])

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        """SASL LOGIN, as Outlook-era CRMs still use it."""
        if len(args) == 1:
            login = await server.challenge_auth(SMTP.AuthLoginUsernameChallenge)
            if not isinstance(login, bytes):
                return AuthResult(success=False, handled=True)
        else:
            try:
                login = b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await server.push(Reply(501, "5.5.2", "Cannot decode base64").line())
                return AuthResult(success=False, handled=True)
        password = await server.challenge_auth(SMTP.AuthLoginPasswordChallenge)
        if not isinstance(password, bytes):
            return AuthResult(success=False, handled=True)
        return await self._login(server, login, password)

    async def _login(self, server: SMTP, login: bytes, password: bytes) -> AuthResult:
        session = server.session
        assert session is not None
        ip = peer_ip(session)
        username = login.decode("utf-8", errors="replace")
        outcome = await self._auth.login(username, password, ip)
        self._metrics.auth.labels(outcome.status.value).inc()
        if outcome.status is AuthStatus.OK:
            assert outcome.dealer_id is not None
            log.info("AUTH ok user=%s dealer=%s peer=%s", username, outcome.dealer_id, ip)
            return AuthResult(
                success=True,
                auth_data=Identity(username, outcome.dealer_id),
                message=replies.AUTH_OK.line(),
            )
        if outcome.status is AuthStatus.THROTTLED:
            log.warning("AUTH throttled peer=%s", ip)
            await server.push(replies.TOO_MANY_AUTH_FAILURES.line())
            if server.transport is not None:
                server.transport.close()
            return AuthResult(success=False, handled=True)
        if outcome.status is AuthStatus.UNAVAILABLE:
            return AuthResult(success=False, handled=False, message=replies.AUTH_TEMPFAIL.line())
        # The username is logged (operators need it); the password never is.
        log.info("AUTH failed user=%r peer=%s", username, ip)
        return AuthResult(success=False, handled=False, message=replies.AUTH_INVALID.line())

    # -- envelope ---------------------------------------------------------------------------

    def _identity(self, session: Session) -> Identity | None:
        data = session.auth_data
        if isinstance(data, Identity):
            return data
        bound = self._networks.get(id(session))
        if bound is None:
            return None
        # A policy reload may have removed the network since the session connected: from
        # then on it needs AUTH like any other.
        found = self._policies.current.dealer_for_ip(peer_ip(session))
        if found is None or found[0].dealer_id != bound.dealer_id:
            return None
        return bound

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        """Who may send, from which address, and whether we have room for it."""
        identity = self._identity(session)
        if identity is None:
            return replies.AUTH_REQUIRED.line()
        dealer = self._policies.current.dealer(identity.dealer_id)
        if dealer is None:
            return replies.UNKNOWN_DEALER.line()
        self._suppressed.pop(id(session), None)
        self._unsubscribed.pop(id(session), None)
        if self._reputation is not None:
            try:
                status = await self._reputation.status(dealer.dealer_id)
            except StorageError as exc:
                self._metrics.refused.labels("reputation-unavailable").inc()
                log.error("MAIL: dealer %s status unknown: %s", dealer.dealer_id, exc)
                return replies.REPUTATION_UNAVAILABLE.line()
            if status is not None and status.suspended:
                self._metrics.refused.labels("dealer-suspended").inc()
                until = f"{status.expires_at:%Y-%m-%d %H:%M} UTC" if status.expires_at else ""
                tempfail = dealer.on_suspended == "tempfail"
                return replies.dealer_suspended(
                    dealer.dealer_id, status.reason, until, tempfail
                ).line()
        count = self._messages.get(id(session), 0)
        if count >= self._limits.max_messages_per_connection:
            self._metrics.refused.labels("messages-per-connection").inc()
            await server.push(replies.TOO_MANY_MESSAGES.line())
            if server.transport is not None:
                server.transport.close()
            return replies.TOO_MANY_MESSAGES.line()
        if self._guard.full():
            self._metrics.refused.labels("spool-full").inc()
            return replies.SPOOL_FULL.line()
        if address == "<>":
            if dealer.null_sender != "allow":
                self._metrics.refused.labels("null-sender").inc()
                return replies.NULL_SENDER_REFUSED.line()
            # aiosmtpd treats an empty mail_from as "no MAIL yet"; keep "<>" and map it
            # to the null sender when the envelope is handed to intake.
            envelope.mail_from = "<>"
            envelope.mail_options.extend(mail_options)
            return replies.OK.line()
        problem = addresses.check(address)
        if problem is not None:
            self._metrics.refused.labels(f"sender-{problem.value}").inc()
            return _ADDRESS_REPLIES[problem].line()
        domain = addresses.domain_of(address)
        if not dealer.owns_domain(domain):
            self._metrics.refused.labels("sender-not-owned").inc()
            log.info("MAIL refused: %s is not a domain of dealer %s", domain, dealer.dealer_id)
            return replies.sender_not_owned(domain, dealer.dealer_id).line()
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return replies.OK.line()

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Recipient syntax, relay tricks and the per-message recipient limit."""
        identity = self._identity(session)
        if identity is None:
            return replies.AUTH_REQUIRED.line()
        dealer = self._policies.current.dealer(identity.dealer_id)
        limit = self._limits.max_recipients
        if dealer is not None and dealer.max_recipients is not None:
            limit = min(limit, dealer.max_recipients)
        problem = addresses.check(address)
        if problem is not None:
            self._metrics.refused.labels(f"recipient-{problem.value}").inc()
            return _ADDRESS_REPLIES[problem].line()
        domain = addresses.domain_of(address)
        normalized = addresses.normalise(address, fold_local_part=False)  # RFC 5321 §2.4
        if normalized in envelope.rcpt_tos:
            return replies.RCPT_OK.line()  # listed twice: one copy is enough
        if len(envelope.rcpt_tos) >= limit:
            self._metrics.refused.labels("too-many-recipients").inc()
            return replies.too_many_recipients(limit).line()
        if self._reputation is not None and dealer is not None:
            try:
                entry = await self._reputation.suppression(dealer.dealer_id, normalized)
            except StorageError as exc:
                self._metrics.refused.labels("reputation-unavailable").inc()
                log.error("RCPT: suppression of %s unknown: %s", dealer.dealer_id, exc)
                return replies.REPUTATION_UNAVAILABLE.line()
            if entry is not None and entry.commercial_only:
                self._unsubscribed.setdefault(id(session), set()).add(normalized)
            elif entry is not None:
                self._metrics.refused.labels("recipient-suppressed").inc()
                if dealer.suppression.on_rcpt == "drop":
                    self._suppressed.setdefault(id(session), set()).add(normalized)
                else:
                    return replies.recipient_suppressed(
                        normalized, entry.dealer_id, entry.reason, f"{entry.created_at:%Y-%m-%d}"
                    ).line()
        if self._domains is not None:
            verdict = await self._domains.check(domain)
            if verdict.refused:
                self._metrics.refused.labels(f"recipient-domain-{verdict.status.value}").inc()
                return replies.recipient_domain_unroutable(
                    domain, verdict.why, verdict.suggestion
                ).line()
        envelope.rcpt_tos.append(normalized)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.RCPT_OK.line()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        """Hand the raw bytes to intake; the reply is its verdict, 250 only once stored."""
        identity = self._identity(session)
        if identity is None:
            return replies.AUTH_REQUIRED.line()
        raw = envelope.original_content
        assert isinstance(raw, bytes)
        key = id(session)
        self._messages[key] = self._messages.get(key, 0) + 1
        dropped = self._suppressed.pop(key, set())
        unsubscribed = frozenset(self._unsubscribed.pop(key, set()))
        rcpt_tos = tuple(r for r in envelope.rcpt_tos if r not in dropped)
        if not rcpt_tos:
            return replies.nothing_to_send_suppressed(len(dropped)).line()
        env = Envelope(
            dealer_id=identity.dealer_id,
            mail_from="" if envelope.mail_from in (None, "<>") else envelope.mail_from,
            rcpt_tos=rcpt_tos,
            peer=peer_ip(session),
            auth_user=identity.username,
            helo=session.host_name or "",
            received_at=self._clock.now(),
            tls=session.ssl is not None,
            unsubscribed=unsubscribed,
        )
        reply = await self._intake.accept(env, raw)
        return reply.line()

    def forget(self, session: Session) -> None:
        """Drop per-connection state when the connection closes."""
        self._messages.pop(id(session), None)
        self._suppressed.pop(id(session), None)
        self._unsubscribed.pop(id(session), None)
        self._networks.pop(id(session), None)

    async def handle_exception(self, error: Exception) -> str:
        """Anything unexpected: a temporary failure, logged with its traceback."""
        self._metrics.errors.labels("smtp").inc()
        log.error("unexpected error in SMTP session", exc_info=error)
        return replies.INTERNAL_ERROR.line()
