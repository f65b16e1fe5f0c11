"""The inbound report listener's handler: feedback-loop reports and bounces, nothing else.

Mailbox providers send complaint reports to the configured report addresses, and
bounces come back to the VERP return paths ``b-<id>-<mac>@<bounce domain>``. This
handler accepts exactly those recipients, without AUTH, and answers everything else
``550 5.7.1`` (an open relay here would be the worst kind: unauthenticated, B2-B3). A
VERP-shaped address whose MAC is wrong is still accepted at RCPT (checking it needs the
sent log; the ingest refuses it), any other local part at the bounce domain is
``550 5.1.1``.

What arrives is handed to ``FeedbackIngest`` and never queued for delivery, never
answered by mail, never forwarded (E9, E10): the only output is the SMTP reply. A
report is acknowledged ``250`` whether or not it was trusted (a forger learns nothing),
and ``451 4.3.0`` only when the store failed, so the sender retries. Reports are
rate-limited per listener (a token bucket; ``451 4.7.0`` when empty) and ingested a few
at a time, so a flood cannot starve the submission listener or the store (E7).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from gateway import replies
from gateway.errors import StorageError
from gateway.feedback.ingest import FeedbackIngest, Via
from gateway.mail import addresses
from gateway.metrics import Metrics
from gateway.settings import InboundSettings
from gateway.smtp.handler import peer_ip
from gateway.tracking import parse_verp
from gateway.unsubscribe.service import Unsubscribes, token_in_message

log = logging.getLogger("gateway.feedback")

CONCURRENT_INGESTS = 4


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; ``take()`` spends one if there is one."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self) -> bool:
        """Spend a token; False when the bucket is empty."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class InboundHandler:
    """aiosmtpd handler for the report listener (see the module docstring)."""

    def __init__(
        self,
        *,
        ingest: FeedbackIngest,
        settings: InboundSettings,
        metrics: Metrics,
        unsubscribes: Unsubscribes | None = None,
    ):
        # The List-Unsubscribe mailto (gateway/unsubscribe/service.py) names a report address, with
        # the one-click token in the subject.
        self._unsubscribes = unsubscribes
        self._ingest = ingest
        self._settings = settings
        self._metrics = metrics
        self._report_addresses = frozenset(map(addresses.normalise, settings.report_addresses))
        self._bounce_domain = settings.bounce_domain.lower().rstrip(".")
        self._bucket = TokenBucket(settings.reports_per_second, settings.report_burst)
        self._ingesting = asyncio.Semaphore(CONCURRENT_INGESTS)
        self._messages: dict[int, int] = {}

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        """Any sender, the null sender included (bounces use it); rate-limited."""
        count = self._messages.get(id(session), 0)
        if count >= self._settings.max_messages_per_connection:
            await server.push(replies.TOO_MANY_MESSAGES.line())
            if server.transport is not None:
                server.transport.close()
            return replies.TOO_MANY_MESSAGES.line()
        if not self._bucket.take():
            self._metrics.refused.labels("inbound-rate").inc()
            return replies.REPORTS_TOO_FAST.line()
        envelope.mail_from = address or "<>"
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
        """Only the report addresses and VERP addresses at the bounce domain."""
        problem = addresses.check(address)
        if problem is addresses.AddressProblem.SYNTAX:
            self._metrics.refused.labels("inbound-syntax").inc()
            return replies.BAD_ADDRESS_SYNTAX.line()
        if problem is not None:
            self._metrics.refused.labels("inbound-relay").inc()
            log.info("inbound RCPT %r refused: %s", address, problem.value)
            return replies.RELAY_DENIED.line()
        domain = addresses.domain_of(address)
        normalized = addresses.normalise(address)
        if normalized in self._report_addresses:
            pass
        elif self._bounce_domain and domain == self._bounce_domain:
            if parse_verp(normalized) is None:
                self._metrics.refused.labels("inbound-no-such-address").inc()
                return replies.NO_SUCH_BOUNCE_ADDRESS.line()
        else:
            self._metrics.refused.labels("inbound-relay").inc()
            log.info("inbound RCPT %r refused: not a report or bounce address", address)
            return replies.RELAY_DENIED.line()
        if normalized not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(normalized)
            envelope.rcpt_options.extend(rcpt_options)
        return replies.RCPT_OK.line()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        """Ingest the report; 250 whatever it was, 451 only if the store failed."""
        raw = envelope.original_content
        assert isinstance(raw, bytes)
        key = id(session)
        self._messages[key] = self._messages.get(key, 0) + 1
        via = Via("smtp", tuple(envelope.rcpt_tos), peer=peer_ip(session))
        wanted = None
        if self._unsubscribes is not None:
            token = token_in_message(raw)
            wanted = self._unsubscribes.verify(token) if token else None
        try:
            if wanted is not None and self._unsubscribes is not None:
                await self._unsubscribes.unsubscribe(wanted, source=f"mailto:{via.peer}")
                return replies.REPORT_ACCEPTED.line()
            async with self._ingesting:
                await self._ingest.ingest(raw, via)
        except StorageError as exc:
            log.error("report from %s not recorded, sender told to retry: %s", via.peer, exc)
            return replies.STORAGE_ERROR.line()
        return replies.REPORT_ACCEPTED.line()

    def forget(self, session: Session) -> None:
        """Drop per-connection state when the connection closes."""
        self._messages.pop(id(session), None)

    async def handle_exception(self, error: Exception) -> str:
        """Anything unexpected: a temporary failure, logged with its traceback."""
        self._metrics.errors.labels("inbound").inc()
        log.error("unexpected error in an inbound SMTP session", exc_info=error)
        return replies.INTERNAL_ERROR.line()
