"""Ingest: from a received report to recorded events, suppressions and rate decisions.

``FeedbackIngest.ingest(raw, via)`` parses the report (``classify_message``), and then
trusts nothing it says until a reference checks out:

1. every reference the report carries (``X-Mailgate-Ref`` in the returned original, a
   VERP return path, and the VERP address the report was sent to) names a message id;
2. the sent log (``storage.get``) gives that message's dealer and recipient;
3. ``RefCodec.verify`` must accept the reference's MAC for exactly that dealer and
   recipient, so a guessed, altered or transplanted reference counts for nothing;
4. the report must be about that recipient: a complaint whose reported recipients (when
   not redacted) do not include it, or a bounce with no status for it, is refused
   (E3: a token for A never suppresses B);
5. the event is recorded once per (message, kind, recipient): a replay changes nothing.

Only then does it count: an abuse complaint or an opt-out suppresses the recipient for
the dealer, a hard bounce suppresses, repeated soft bounces suppress for a while, a
delay does nothing. The day's counters move in the same transaction, and the dealer's
rates are evaluated (``Suspensions.evaluate``). Anything refused changes nothing but
``mailgate_reports_untrusted_total{reason}`` and one log line. Ingest never sends mail:
no reply, no bounce, no forwarded report (E9, E10).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field

from gateway.clock import Clock
from gateway.errors import FeedbackParseError
from gateway.feedback.parse import classify_message
from gateway.feedback.reports import (
    BounceKind,
    BounceRecipient,
    ComplaintReport,
    FeedbackKind,
    FeedbackResult,
)
from gateway.mail.addresses import normalise
from gateway.metrics import Metrics
from gateway.policy.model import SuppressionPolicy
from gateway.policy.store import PolicyStore
from gateway.reputation.records import (
    UNSUBSCRIBE_REASON,
    EventKind,
    FeedbackEvent,
    Suppression,
)
from gateway.reputation.suspensions import Suspensions
from gateway.storage.base import Storage
from gateway.tracking import RefCodec, RefToken, parse_verp
from gateway.types import DealerId, QueuedMessage

log = logging.getLogger("gateway.feedback")

MAX_REFS_CHECKED = 20  # every lookup is a store read; a report names one or two

# Placeholders providers put where they redact the complainant (RFC 6590): such a
# recipient says nothing either way, so it neither confirms nor contradicts the token.
_REDACTED = re.compile(
    r"^(?:x+|\*+|#+|redacted.*|removed.*|anonymi[sz]ed.*|undisclosed.*|unknown.*|"
    r"[0-9a-f]{32,})$",
    re.IGNORECASE,
)

_COMPLAINT_REASON = "spam complaint"


class Untrusted:
    """Reasons a report changed nothing (the ``reason`` label of the metric)."""

    NO_REFERENCE = "no-reference"
    UNKNOWN_MESSAGE = "unknown-message"
    BAD_MAC = "bad-mac"
    RECIPIENT_MISMATCH = "recipient-mismatch"
    REPLAY = "replay"


@dataclass(frozen=True, slots=True)
class Via:
    """How a report arrived: the envelope recipients (VERP), the peer, or the file."""

    channel: str  # "smtp" or "import"
    envelope_rcpts: tuple[str, ...] = ()
    peer: str = ""
    source: str = ""  # the file or mailbox entry, for imports

    @property
    def label(self) -> str:
        """``smtp:<peer>`` or ``import:<source>``: the source recorded with each event."""
        return f"{self.channel}:{self.peer or self.source}"[:200]


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one report did: its kind, the events recorded, and why others were refused."""

    kind: FeedbackKind
    recorded: tuple[FeedbackEvent, ...] = ()
    refused: tuple[str, ...] = ()
    suppressed: tuple[str, ...] = field(default=())


def _redacted(address: str) -> bool:
    local, at, _ = address.strip().strip("<>").rpartition("@")
    return not at or not local or bool(_REDACTED.match(local))


def _about_recipient(report: ComplaintReport, rcpt: str) -> bool:
    """False when the report names recipients and none of them is ``rcpt`` (E3)."""
    named = [a for a in report.reported_recipients if not _redacted(a)]
    if not named:
        return True
    wanted = normalise(rcpt)
    return any(normalise(a) == wanted for a in named)


def _bounce_for(recipients: tuple[BounceRecipient, ...], rcpt: str) -> BounceRecipient | None:
    """The recipient of a bounce that is ``rcpt``, the address the sent log says we used.

    We know whom we sent to: the verified reference names the copy, the sent log its
    recipient. What the report's text says may confirm it but never replaces it:

    1. a recipient whose Final-Recipient or Original-Recipient (RFC 3464 §2.3.1, the
       address we sent to when forwarding or an alias led elsewhere) is ``rcpt``;
    2. otherwise, when the report names no other full address, its one unconfirmed
       recipient: nobody named, a bare local part or screen name equal to ``rcpt``'s
       local part, or a candidate read from the returned original that is ``rcpt``;
    3. otherwise a single recipient whose address the provider redacted.

    A report naming someone else is about someone else (E3): ``None``.
    """
    for recipient in recipients:
        if recipient.names(rcpt):
            return recipient
    wanted = normalise(rcpt)
    local = wanted.rpartition("@")[0]
    confirmed = [r for r in recipients if r.confirmed and not _redacted(r.address)]
    unconfirmed = [r for r in recipients if not r.confirmed]
    if not confirmed and len(unconfirmed) == 1:
        (recipient,) = unconfirmed
        written = normalise(recipient.address.strip().strip("<>\"'"))
        if not written or written in (wanted, local):
            return recipient
        return None
    if len(recipients) == 1 and _redacted(recipients[0].address):
        return recipients[0]
    return None


class FeedbackIngest:
    """Turns received reports into trusted events; see the module docstring."""

    def __init__(
        self,
        storage: Storage,
        refs: RefCodec,
        policies: PolicyStore,
        clock: Clock,
        metrics: Metrics,
        suspensions: Suspensions,
    ) -> None:
        self._storage = storage
        self._refs = refs
        self._policies = policies
        self._clock = clock
        self._metrics = metrics
        self._suspensions = suspensions

    async def ingest(self, raw: bytes, via: Via) -> IngestResult:
        """Parse, verify and record one report. Raises ``StorageError`` (a retry helps).

        A report the parsers cannot read is ``OTHER`` and changes nothing.
        """
        try:
            result = await asyncio.to_thread(classify_message, raw)
        except FeedbackParseError:
            log.exception("report from %s could not be parsed; ignored", via.label)
            result = FeedbackResult(FeedbackKind.OTHER)
        self._metrics.reports.labels(result.kind.value).inc()
        if result.kind is FeedbackKind.OTHER or result.kind is FeedbackKind.DELAY:
            log.info("%s from %s: nothing to record", result.kind.value, via.label)
            return IngestResult(result.kind)
        return await self._record(result, via)

    async def _record(self, result: FeedbackResult, via: Via) -> IngestResult:
        tokens = list(result.refs)
        for rcpt in via.envelope_rcpts:
            token = parse_verp(rcpt)
            if token is not None and token not in tokens:
                tokens.append(token)
        if not tokens:
            return self._refuse(result, via, Untrusted.NO_REFERENCE, "carries no reference")
        recorded: list[FeedbackEvent] = []
        suppressed: list[str] = []
        refused: list[str] = []
        dealers: set[DealerId] = set()
        for token in tokens[:MAX_REFS_CHECKED]:
            sent, problem = await self._sent_message(token)
            if sent is None:
                refused.append(problem)
                continue
            events = self._events_for(result, sent, via)
            if not events:
                refused.append(Untrusted.RECIPIENT_MISMATCH)
                continue
            for event in events:
                entry = self._suppression_for(event)
                if await self._storage.record_feedback(event, entry):
                    recorded.append(event)
                    dealers.add(event.dealer_id)
                    self._count(event)
                    if entry is None and event.kind is EventKind.SOFT_BOUNCE:
                        entry = await self._soft_limit(event)
                    if entry is not None:
                        suppressed.append(event.recipient)
                    log.info(
                        "%s dealer=%s message=%s recipient=%s %s via %s%s",
                        event.kind.value, event.dealer_id, event.message_id, event.recipient,
                        event.detail, via.label, " (suppressed)" if entry else "",
                        extra={"dealer_id": event.dealer_id, "message_id": event.message_id},
                    )  # fmt: skip
                else:
                    refused.append(Untrusted.REPLAY)
        # Only the distinct reasons of a report that recorded nothing are counted: one
        # report is one untrusted report, whatever number of references it carried.
        if not recorded:
            reason = refused[0] if len(set(refused)) == 1 else self._main_reason(refused)
            return self._refuse(result, via, reason, ", ".join(dict.fromkeys(refused)))
        if suppressed:
            await self._suspensions.count_suppressions()
        for dealer_id in sorted(dealers):
            await self._suspensions.evaluate(dealer_id)
        return IngestResult(result.kind, tuple(recorded), tuple(refused), tuple(suppressed))

    @staticmethod
    def _main_reason(reasons: list[str]) -> str:
        # The most telling reason first: a replay of a genuine report, then a genuine
        # reference used for someone else, then forgeries.
        for reason in (
            Untrusted.REPLAY,
            Untrusted.RECIPIENT_MISMATCH,
            Untrusted.BAD_MAC,
            Untrusted.UNKNOWN_MESSAGE,
        ):
            if reason in reasons:
                return reason
        return Untrusted.NO_REFERENCE

    async def _sent_message(self, token: RefToken) -> tuple[QueuedMessage | None, str]:
        sent = await self._storage.get(token.message_id)
        if sent is None or sent.system:
            return None, Untrusted.UNKNOWN_MESSAGE
        if not self._refs.verify(token, sent.dealer_id, sent.rcpt):
            return None, Untrusted.BAD_MAC
        return sent, ""

    def _events_for(
        self, result: FeedbackResult, sent: QueuedMessage, via: Via
    ) -> list[FeedbackEvent]:
        now = self._clock.now()
        rcpt = normalise(sent.rcpt)

        def event(kind: EventKind, detail: str, subject: str = "") -> FeedbackEvent:
            return FeedbackEvent(
                sent.dealer_id, kind, sent.id, rcpt, now, detail, subject[:200], via.label
            )

        complaint = result.complaint
        if complaint is not None:
            if not _about_recipient(complaint, rcpt):
                return []
            if complaint.feedback_type == "opt-out":
                kind = EventKind.UNSUBSCRIBE
            elif complaint.is_abuse:
                kind = EventKind.COMPLAINT
            else:
                # not-spam, auth-failure, other: genuine, but neither a complaint nor an
                # unsubscription; recorded as nothing.
                log.info(
                    "feedback type %s for message %s dealer %s: not counted",
                    complaint.feedback_type,
                    sent.id,
                    sent.dealer_id,
                )
                return []
            return [event(kind, complaint.feedback_type, complaint.subject or "")]
        bounce = result.bounce
        if bounce is None:
            return []
        recipient = _bounce_for(bounce.recipients, rcpt)
        if recipient is None or recipient.kind is BounceKind.DELAY:
            return []
        # The verdict on the failure applies to the resolved address: the sent log
        # confirms what the report could not (a bare local part, nobody named).
        hard = recipient.hard or recipient.permanent
        kind = EventKind.HARD_BOUNCE if hard else EventKind.SOFT_BOUNCE
        detail = f"{recipient.status or '-'} {recipient.reason.value}"
        parsed = recipient.address.strip().strip("<>")
        if normalise(parsed) != rcpt:
            detail += f" (reported as {parsed or 'nobody'})"
        return [event(kind, detail)]

    def _policy(self, dealer_id: DealerId) -> SuppressionPolicy:
        dealer = self._policies.current.dealer(dealer_id)
        return dealer.suppression if dealer else SuppressionPolicy()

    def _suppression_for(self, event: FeedbackEvent) -> Suppression | None:
        reason = {
            EventKind.COMPLAINT: _COMPLAINT_REASON,
            EventKind.UNSUBSCRIBE: UNSUBSCRIBE_REASON,
            EventKind.HARD_BOUNCE: f"hard bounce ({event.detail})",
        }.get(event.kind)
        if reason is None:
            return None
        return Suppression(event.dealer_id, event.recipient, reason, event.message_id, event.at)

    async def _soft_limit(self, event: FeedbackEvent) -> Suppression | None:
        """Suppress for a while after ``soft_bounce_limit`` soft bounces in the window."""
        policy = self._policy(event.dealer_id)
        if policy.soft_bounce_limit <= 0:
            return None
        count = await self._storage.count_events(
            event.dealer_id,
            event.recipient,
            EventKind.SOFT_BOUNCE,
            event.at - policy.soft_bounce_window,
        )
        if count < policy.soft_bounce_limit:
            return None
        entry = Suppression(
            event.dealer_id,
            event.recipient,
            f"{count} soft bounces in {policy.soft_bounce_window.days} days",
            event.message_id,
            event.at,
            expires_at=event.at + policy.soft_bounce_suppress_for,
        )
        await self._storage.add_suppression(entry)
        return entry

    def _count(self, event: FeedbackEvent) -> None:
        if event.kind is EventKind.COMPLAINT:
            self._metrics.complaints.labels(event.dealer_id).inc()
        elif event.kind is EventKind.HARD_BOUNCE:
            self._metrics.bounces.labels(event.dealer_id, "hard").inc()
        elif event.kind is EventKind.SOFT_BOUNCE:
            self._metrics.bounces.labels(event.dealer_id, "soft").inc()

    def _refuse(self, result: FeedbackResult, via: Via, reason: str, detail: str) -> IngestResult:
        self._metrics.reports_untrusted.labels(reason).inc()
        log.warning(
            "untrusted %s from %s: %s (%s); nothing recorded",
            result.kind.value,
            via.label,
            reason,
            detail,
        )
        return IngestResult(result.kind, refused=(reason,))
