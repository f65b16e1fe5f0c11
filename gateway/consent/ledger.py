"""The consent ledger: the basis of every commercial message, and every consent refusal (pure).

CASL puts the burden of proof on the sender (s. 13): a dealer must be able to show, for a
message sent two years ago, what consent it relied on. Intake therefore stores, with each
commercial copy it queues and in the same transaction, a ``LedgerEntry``: the rules
applied (name, law, preset, time zone), the category and topic, and the basis the rules
found at that moment (the interaction with its date, reference, source and proof and the
window it opened; or the opt-in or express consent; or "no windows, not opted out"). The
entry is written from the same ``evaluate`` call the checks make, so the ledger cannot say
anything the gateway did not decide on. Rows are never updated; they outlive the queue's
sent log (``delivery.keep_finished``), which only says what was delivered.

A recipient a consent check left out of a message that went on to others
(``ConsentRefusal``) is recorded too, with the reason, so that the CRM that got 250 can
find it (the API and ``mailgate consent refused``), and, when the dealer's policy asks for
it (``consent.refused_dsn``), the envelope sender gets a delivery status notification for
that recipient (RFC 3464, ``5.7.1``), as a relay would send for a recipient it could not
deliver.

``consent_writes`` builds all of it from what intake has after ``prepare``; the store
writes it with the messages (``Storage.enqueue_claimed``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32

from gateway.consent.rules import (
    CATEGORY_HEADER,
    EMPTY_RECORD,
    EXEMPT_CATEGORIES,
    TOPIC_HEADER,
    ConsentRecord,
    ConsentRules,
    Eligibility,
    evaluate,
    message_category,
    message_topic,
    normalise_address,
)
from gateway.delivery.dsn import build_dsn
from gateway.mail.message import MessageRejected, ParseLimits, parse
from gateway.pipeline.decide import Verdict
from gateway.pipeline.purpose import purpose_of
from gateway.policy.model import DealerPolicy
from gateway.types import (
    DealerId,
    Envelope,
    MessageId,
    MessageState,
    NewMessage,
    OutcomeKind,
    QueuedMessage,
    RcptOutcome,
)

__all__ = [
    "CONSENT_CODES",
    "EMPTY_WRITES",
    "ConsentRefusal",
    "ConsentWrites",
    "LedgerEntry",
    "consent_writes",
    "entry_for",
]

# The copy passed the listener's limits before the gateway's headers were added.
_LIMITS = ParseLimits(max_header_bytes=1 << 20, max_mime_depth=1000)
# Per-recipient findings that leave a recipient out for want of consent.
CONSENT_CODES = frozenset({"consent-window-expired", "no-opt-in", "unsubscribed"})


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What one commercial message relied on, as decided when it was accepted.

    ``basis`` is ``event`` (an interaction or express consent: ``event_*`` set),
    ``opt-in`` (``statement_at`` set), ``no-windows`` (rules without windows, such as
    CAN-SPAM: not opted out), ``no-rules`` (the dealer enforces none) or ``none`` (a copy
    a consent check held for an operator: ``eligible`` is False).
    """

    message_id: MessageId
    submission_id: str
    dealer_id: DealerId
    recipient: str  # normalised
    at: datetime
    category: str  # what the gateway treated it as (its primary purpose)
    topic: str
    rules: str  # the rules' name: "CASL implied-consent"
    law: str
    preset: str
    time_zone: str
    basis: str
    reason: str
    eligible: bool = True  # False: a copy held by policy, not to be released without consent
    event_kind: str = ""
    event_on: date | None = None
    last_payment: date | None = None
    ref: str = ""
    source: str = ""
    proof: str = ""
    window: str = ""
    window_ends: date | None = None
    statement_at: datetime | None = None
    label: str = ""  # the X-Mailgate-Category the CRM sent ("" if none)


@dataclass(frozen=True, slots=True)
class ConsentRefusal:
    """A recipient left out of (or refused with) a message for want of consent."""

    dealer_id: DealerId
    recipient: str  # as submitted
    submission_id: str
    code: str
    action: str  # the action policy chose: reject | drop | tempfail
    detail: str
    at: datetime
    message_went_on: bool  # other recipients were queued (the CRM got 250)
    dsn: str = ""  # the id of the DSN queued to the envelope sender, "" if none


@dataclass(frozen=True, slots=True)
class ConsentWrites:
    """What intake stores about consent with a submission's messages."""

    entries: tuple[LedgerEntry, ...] = ()
    refusals: tuple[ConsentRefusal, ...] = ()
    dsns: tuple[NewMessage, ...] = ()  # queued with the messages (system messages)


EMPTY_WRITES = ConsentWrites()


def _basis(verdict: Eligibility, rules: ConsentRules) -> str:
    if not rules.enforce:
        return "no-rules"
    if not verdict.eligible:
        return "none"
    if verdict.basis is not None:
        return "event"
    if verdict.preference is not None:
        return "opt-in"
    return "no-windows"


def entry_for(
    message: NewMessage,
    submission_id: str,
    rules: ConsentRules,
    record: ConsentRecord,
    category: str,
    topic: str,
    now: datetime,
    label: str = "",
) -> LedgerEntry:
    """The ledger entry of one copy: ``evaluate`` again, on the data the checks had."""
    verdict = evaluate(record, rules, now, category, message_topic(topic))
    event = verdict.basis
    window = rules.windows.get(event.kind) if event is not None else None
    return LedgerEntry(
        message_id=message.id,
        submission_id=submission_id,
        dealer_id=message.dealer_id,
        recipient=normalise_address(message.rcpt),
        at=now,
        category=category,
        label=label,
        topic=message_topic(topic).value,
        rules=rules.name,
        law=rules.law,
        preset=rules.preset,
        time_zone=str(rules.zone),
        basis=_basis(verdict, rules),
        reason=verdict.reason,
        eligible=verdict.eligible,
        event_kind=event.kind.value if event is not None else "",
        event_on=event.on if event is not None else None,
        last_payment=event.last_payment if event is not None else None,
        ref=event.ref if event is not None else "",
        source=event.source if event is not None else "",
        proof=event.proof if event is not None else "",
        window=str(window) if window is not None else "",
        window_ends=verdict.until,
        statement_at=verdict.preference.at if verdict.preference is not None else None,
    )


def _category(verdict: Verdict | None, label: str | None, copy: bytes, dealer: DealerPolicy) -> str:
    """The category the checks used: the purpose check's reading of the message."""
    for finding in verdict.findings if verdict is not None else ():
        if finding.code == "promotional-content":
            return "commercial"
    if label and label.strip():
        return message_category(label)
    # No label: the checks inferred one from the content (pipeline/purpose.py). The copy is
    # the message they read plus the gateway's own header fields, so it reads the same.
    try:
        return purpose_of(parse(copy, _LIMITS), dealer).category
    except MessageRejected:
        return "commercial"


def _headers(raw: bytes) -> tuple[str | None, str | None]:
    # Only the header block: BytesHeaderParser stops at the first empty line.
    parsed = BytesHeaderParser(policy=compat32).parsebytes(raw)
    category, topic = parsed.get(CATEGORY_HEADER), parsed.get(TOPIC_HEADER)
    return (str(category) if category is not None else None, str(topic) if topic else None)


def _dsn(
    refusal: ConsentRefusal, envelope: Envelope, original: bytes, hostname: str, n: int
) -> NewMessage:
    dsn_id = MessageId(f"{refusal.submission_id}.c{n}.dsn")
    outcome = RcptOutcome(OutcomeKind.FAILED, 550, "5.7.1", f"{refusal.code}: {refusal.detail}")
    about = QueuedMessage(
        id=MessageId(f"{refusal.submission_id}.c{n}"),
        dealer_id=refusal.dealer_id,
        mail_from=envelope.mail_from,
        rcpt=refusal.recipient,
        data=original,
        received_at=envelope.received_at,
        state=MessageState.FAILED,
        attempts=0,
        next_attempt_at=None,
        last_error=outcome.summary(),
        findings=(refusal.code,),
        note="",
        system=False,
        updated_at=refusal.at,
        size=len(original),
    )
    data = build_dsn(
        original=about,
        outcome=outcome,
        reporting_mta=hostname,
        from_addr=f"MAILER-DAEMON@{hostname}",
        now=refusal.at,
        message_id=f"{dsn_id}@{hostname}",
    )
    # RFC 3464 §2, RFC 5321 §4.5.5: the null reverse-path, so nothing answers a DSN.
    return NewMessage(
        id=dsn_id,
        dealer_id=refusal.dealer_id,
        mail_from="",
        rcpt=envelope.mail_from,
        data=data,
        received_at=refusal.at,
        system=True,
        note=f"delivery status notification: {refusal.recipient} refused ({refusal.code})",
    )


def consent_writes(
    *,
    dealer: DealerPolicy,
    verdict: Verdict | None,
    messages: Sequence[NewMessage],
    records: Mapping[str, ConsentRecord] | None,
    envelope: Envelope,
    original: bytes,
    submission_id: str,
    now: datetime,
    hostname: str,
) -> ConsentWrites:
    """The ledger entries, refusals and DSNs of one submission (``EMPTY_WRITES`` if none).

    ``records`` are the consent records the checks saw (``None``: the dealer enforces no
    consent, and no ledger entry is written); ``original`` the submitted bytes (a DSN
    returns their headers only).
    """
    refusals: list[ConsentRefusal] = []
    went_on = bool(messages)
    if verdict is not None:
        for rcpt, finding in verdict.dropped.items():
            if finding.code in CONSENT_CODES:
                refusals.append(
                    ConsentRefusal(
                        dealer_id=dealer.dealer_id,
                        recipient=rcpt,
                        submission_id=submission_id,
                        code=finding.code,
                        action=dealer.rule(finding.code).action.label,
                        detail=finding.detail,
                        at=now,
                        message_went_on=went_on,
                    )
                )
    dsns: list[NewMessage] = []
    if went_on and envelope.mail_from and dealer.consent.refused_dsn:
        # The CRM got 250 for the message: tell it about each recipient left out.
        for n, refusal in enumerate(refusals, start=1):
            dsn = _dsn(refusal, envelope, original, hostname, n)
            dsns.append(dsn)
            refusals[n - 1] = replace(refusal, dsn=dsn.id)
    entries: list[LedgerEntry] = []
    if records is not None and messages:
        label, topic = _headers(messages[0].data)
        category = _category(verdict, label, messages[0].data, dealer)
        if category not in EXEMPT_CATEGORIES:
            for message in messages:
                record = (
                    records.get(message.rcpt)
                    or records.get(normalise_address(message.rcpt))
                    or EMPTY_RECORD
                )
                entries.append(
                    entry_for(
                        message,
                        submission_id,
                        dealer.consent,
                        record,
                        category,
                        topic or "",
                        now,
                        (label or "").strip().lower(),
                    )
                )
    if not entries and not refusals:
        return EMPTY_WRITES
    return ConsentWrites(tuple(entries), tuple(refusals), tuple(dsns))
