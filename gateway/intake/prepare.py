"""What the gateway does to one submitted message, from DATA bytes to the copies to store (pure).

``prepare(raw, envelope, dealer, ...)`` is the whole content side of intake as one
function over frozen data, with no storage, clock, metrics, threads or settings:

1. **Line endings.** RFC 5321 §2.3.8: only CRLF ends a line. Bare CR or LF must not reach
   the next hop (SMTP smuggling, CVE-2023-51764), so they are refused or made CRLF
   (``Limits.bare_line_endings``), and the NUL variant (``<CRLF> NUL "." <CRLF>``) is
   neutralised; both before anything reads the bytes, so the checks see what is relayed.
2. **Parse once** (``mail.message.parse``) under the structural limits. Its MIME scan
   travels on the ``ParsedMessage`` to the checks, the repairs and the long-line rewrite,
   so the bytes are scanned again only after a repair has changed them.
3. **Hops.** RFC 5321 §6.3: too many ``Received:`` fields is a mail loop.
4. **Checks** (``pipeline.CHECKS``, in order) with the state the caller read beforehand
   (``State``: recipient history, consent records; suppressions come in the envelope).
5. **Decide** (``pipeline.decide``): the only place an action is chosen.
6. **Repair** what policy says to repair; a repair that does not fit holds the message.
7. **Submission-server changes** (RFC 6409 §8): lines over 998 octets folded or
   re-encoded (RFC 5321 §4.5.3.1.6), 8-bit bodies re-encoded 7-bit (quoted-printable or
   base64) with the charset declared where the message declared none (UTF-8 when the
   bytes are, else Windows-1252) and an 8-bit ``Subject:`` as RFC 2047 encoded words,
   ``Bcc:`` removed, ``Received:`` added, and
   ``Message-ID:``/``Date:`` when missing.
8. **One copy per recipient** with its tracking reference, VERP return path and
   one-click unsubscribe fields.

What recipients see: the findings are the dealer's and the operator's, never the
recipient's. They are stored with each copy (``NewMessage.findings``: admin API, logs,
metrics) and nothing naming them is added to the message; an ``X-Mailgate-Findings``
field a client wrote is removed, as a border MTA removes an ``Authentication-Results:``
claiming its own name (RFC 8601 §5), so no recipient is shown a verdict that looks like
ours.

The result (``Prepared``) says what the gateway does (``action``), the reply when it is not
"250 queued" once stored, and the unsigned copies. Signing (keys) and storing (the store)
are the caller's: ``Intake`` signs each copy and stores them in one transaction;
``mailgate check`` runs this same function with no state and says what it found, so what
the gateway does and what ``check`` reports cannot differ.

``admit`` (steps 1-3) and ``prepare_message`` (steps 4-8) are the two halves, for a
caller that needs the parsed message before it can name the dealer (``mailgate check``
without ``--dealer``); ``prepare`` is the two in a row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Literal

from gateway import replies
from gateway.consent.rules import ConsentRecord
from gateway.duplicates.fingerprints import DuplicateState, Recipients
from gateway.errors import GatewayError
from gateway.intake import repair
from gateway.mail import mimetree, rewrite
from gateway.mail.message import MessageRejected, ParsedMessage, ParseLimits, parse
from gateway.pipeline import CHECKS, check_name, run_check
from gateway.pipeline.base import CheckContext, Finding
from gateway.pipeline.decide import Verdict, action_for, decide
from gateway.pipeline.purpose import purpose_of
from gateway.policy.model import DealerPolicy
from gateway.tracking import RefCodec, message_id_for
from gateway.types import Action, Envelope, MessageState, NewMessage, Reply
from gateway.unsubscribe.links import UnsubscribeLinks, header_plan, is_commercial

__all__ = [
    "NO_STATE",
    "CheckCrashed",
    "Limits",
    "Prepared",
    "Stamp",
    "State",
    "admit",
    "prepare",
    "prepare_message",
]

# Removed from every copy: Bcc: (RFC 6409 §8.1 leaves it to the submission server; its
# recipients must not be shown) and a findings field that only we may write.
_REMOVED = frozenset({"bcc", "x-mailgate-findings"})

_REJECTIONS: Mapping[str, Reply] = {
    "header-too-large": replies.HEADER_TOO_BIG,
    "mime-too-deep": replies.MIME_TOO_DEEP,
    "too-many-parts": replies.TOO_MANY_PARTS,
}


class CheckCrashed(GatewayError):
    """A check raised; carries the check's name (the cause is ``__cause__``)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass(frozen=True, slots=True)
class Limits:
    """The content limits of the submission listener (``[submission]`` settings)."""

    parse: ParseLimits
    max_hops: int
    bare_line_endings: Literal["normalize", "reject"] = "normalize"


@dataclass(frozen=True, slots=True)
class Stamp:
    """What the gateway writes into every copy: who it is and how replies find their way back.

    ``hostname`` names the gateway in ``Received:`` and in a ``Message-ID:`` it adds;
    ``refs`` makes the ``X-Mailgate-Ref`` value and the VERP address; with a
    ``bounce_domain`` each copy's envelope sender is its VERP address (tracking.py); with
    ``unsubscribe`` links, commercial copies get one-click unsubscribe fields.
    """

    hostname: str
    refs: RefCodec
    bounce_domain: str = ""
    unsubscribe: UnsubscribeLinks | None = None


@dataclass(frozen=True, slots=True)
class State:
    """What the checks need from the store, read by the caller before ``prepare``.

    ``recipients``: the envelope recipients' send history for the duplicate checks;
    ``consent``: their consent records when the dealer's rules enforce consent. ``None``
    means "not read": those checks find nothing (``mailgate check`` has no recipient).
    Suppressed recipients are in ``Envelope.unsubscribed``, read at RCPT time.
    """

    recipients: Recipients | None = None
    consent: Mapping[str, ConsentRecord] | None = None


NO_STATE = State()


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the gateway does with one submission.

    ``action`` is the outcome as ``mailgate check`` reports it: the verdict's action, hold
    when a repair could not be applied, reject or tempfail for a refusal. ``reply`` is the
    answer: a refusal, or the 250 to give once the copies (and drops) are stored, saying
    what was queued, what was held and why, and who was left out and why. ``refused``
    names a refusal outside policy (a broken limit, an unfoldable line), for the metric
    and log line: nothing is stored then. ``verdict`` is ``None`` only when the message
    was refused before the checks. ``messages`` are the copies to sign and store, one per
    recipient left.
    """

    action: Action
    reply: Reply | None
    verdict: Verdict | None = None
    refused: str = ""
    messages: tuple[NewMessage, ...] = ()
    duplicates: DuplicateState | None = None
    repair_failed: bool = False

    @property
    def findings(self) -> tuple[Finding, ...]:
        """Every finding of the checks, in check order (none when refused before them)."""
        return self.verdict.findings if self.verdict is not None else ()


def _refusal(reply: Reply, reason: str, verdict: Verdict | None = None) -> Prepared:
    action = Action.REJECT if reply.code >= 500 else Action.TEMPFAIL
    return Prepared(action, reply, verdict, refused=reason)


def admit(raw: bytes, limits: Limits) -> ParsedMessage | Prepared:
    """Steps 1-3: fix the line endings, parse once, count hops.

    Returns the parsed message (its ``raw`` is the bytes every later step works on) or the
    refusal.
    """
    if rewrite.has_bare_line_endings(raw):
        if limits.bare_line_endings == "reject":
            return _refusal(replies.BARE_LINE_ENDING, "bare-line-ending")
        raw, _ = rewrite.normalize_line_endings(raw)
    # The NUL variant has no bare line end but still ends DATA at a receiver that ignores
    # NUL; fixed before signing too.
    raw, _ = rewrite.neutralize_nul_dot_lines(raw)
    try:
        message = parse(raw, limits.parse)
    except MessageRejected as exc:
        return _refusal(_REJECTIONS.get(exc.reply_kind, replies.MIME_TOO_DEEP), exc.reply_kind)
    if message.received_count >= limits.max_hops:
        return _refusal(replies.TOO_MANY_HOPS, "too-many-hops")
    return message


def prepare(
    raw: bytes,
    envelope: Envelope,
    dealer: DealerPolicy,
    *,
    limits: Limits,
    stamp: Stamp,
    now: datetime,
    submission_id: str,
    state: State = NO_STATE,
) -> Prepared:
    """Everything the gateway does to ``raw`` short of signing and storing it.

    Raises ``CheckCrashed`` when a check raises (the caller answers 451: a check that
    fails is never skipped) and nothing else on any input.
    """
    admitted = admit(raw, limits)
    if isinstance(admitted, Prepared):
        return admitted
    return prepare_message(
        admitted,
        envelope,
        dealer,
        limits=limits,
        stamp=stamp,
        now=now,
        submission_id=submission_id,
        state=state,
    )


def _run_checks(
    message: ParsedMessage, dealer: DealerPolicy, context: CheckContext
) -> tuple[Finding, ...]:
    findings: list[Finding] = []
    for check in CHECKS:
        try:
            findings.extend(run_check(check, message, dealer, context))
        except Exception as exc:  # a check must never take the session down
            raise CheckCrashed(check_name(check)) from exc
    return tuple(findings)


def prepare_message(
    message: ParsedMessage,
    envelope: Envelope,
    dealer: DealerPolicy,
    *,
    limits: Limits,
    stamp: Stamp,
    now: datetime,
    submission_id: str,
    state: State = NO_STATE,
) -> Prepared:
    """Steps 4-8 on a message ``admit`` let in; see ``prepare``."""
    duplicates = state.recipients.state(message) if state.recipients is not None else None
    context = CheckContext(
        envelope=envelope,
        now=now,
        duplicates=duplicates,
        consent=state.consent,
        adds_unsubscribe=stamp.unsubscribe is not None,
        purpose=purpose_of(message, dealer),
    )
    verdict = decide(_run_checks(message, dealer, context), dealer, envelope.rcpt_tos)
    if verdict.reply is not None:
        return Prepared(verdict.action, verdict.reply, verdict, duplicates=duplicates)
    recipients = [r for r in envelope.rcpt_tos if r not in verdict.dropped]
    dropped = _drop_reasons(verdict)
    if not recipients and verdict.action is Action.DROP:
        reply = replies.accepted(submission_id, dropped=dropped)
        return Prepared(Action.DROP, reply, verdict, duplicates=duplicates)
    if not recipients:
        return Prepared(Action.REJECT, replies.NO_RECIPIENTS_LEFT, verdict, duplicates=duplicates)

    held = verdict.action is Action.HOLD
    note = "; ".join(f.detail for f in verdict.findings) if held else ""
    why = _hold_reason(verdict, dealer) if held else ""
    raw: bytes = message.raw
    structure: mimetree.Structure | None = message.structure
    repair_failed = False
    if verdict.repairs:
        # Repaired even when held, so that a release delivers the repaired message.
        repaired = repair.apply(raw, verdict.repairs, structure)
        if repaired is None:
            held, repair_failed = True, True
            details = "; ".join(f.detail for f in verdict.repairs)
            note = why = f"the repair could not be applied: {details}"
        else:
            raw, structure = repaired, None  # new bytes: the spans parse found are stale
    base = _submission_copy(raw, structure, message, envelope, submission_id, stamp, limits)
    if isinstance(base, Reply):
        return _refusal(base, "header-unfoldable", verdict)
    action = Action.HOLD if repair_failed and verdict.action < Action.HOLD else verdict.action
    copies = _copies(base, message, envelope, dealer, verdict, recipients, submission_id,
                     stamp, MessageState.HELD if held else MessageState.QUEUED, note)  # fmt: skip
    held_copies = [m for m in copies if m.state is MessageState.HELD]
    if held_copies and not why:  # held per recipient (decide.py): its own finding says why
        why = held_copies[0].note
    reply = replies.accepted(
        submission_id,
        to_send=len(copies) - len(held_copies),
        held=len(held_copies),
        held_why=why,
        dropped=dropped,
    )
    return Prepared(action, reply, verdict, "", copies, duplicates, repair_failed)


def _drop_reasons(verdict: Verdict) -> list[tuple[str, str]]:
    """Each recipient left out, with the reason its finding gives (``replies.drop_reason``)."""
    return [
        (rcpt, replies.drop_reason(f.code, f.detail, f.data)) for rcpt, f in verdict.dropped.items()
    ]


def _hold_reason(verdict: Verdict, dealer: DealerPolicy) -> str:
    """What made the message held: its first finding whose action is hold, with its code."""
    for finding in verdict.findings:
        if finding.recipient is None and action_for(finding, dealer) is Action.HOLD:
            return f"{finding.code}: {finding.detail}"
    return "; ".join(f"{f.code}: {f.detail}" for f in verdict.held.values())


def _submission_copy(
    raw: bytes,
    structure: mimetree.Structure | None,
    message: ParsedMessage,
    env: Envelope,
    submission_id: str,
    stamp: Stamp,
    limits: Limits,
) -> bytes | Reply:
    """Apply the submission-server changes (RFC 6409 §8) once, for every copy to share.

    Lines are fixed first, while ``structure`` still describes ``raw`` (the fields added
    after are folded as they are written); the refusal reply when a line cannot be fixed.
    """
    try:
        # RFC 5321 §4.5.3.1.6: lines over 998 octets are folded (headers) or their part
        # re-encoded as quoted-printable (bodies); meaning is kept, nothing truncated.
        # 8-bit bodies are made 7-bit here too, before signing: the one signed copy then
        # needs no 8BITMIME at any hop, and no hop converts it and breaks the signature.
        data, _ = rewrite.transport_safe(raw, limits=limits.parse, structure=structure)
    except rewrite.LineTooLong:
        return replies.HEADER_LINE_UNFOLDABLE
    except MessageRejected as exc:  # only a repaired message is scanned here again
        return _REJECTIONS.get(exc.reply_kind, replies.MIME_TOO_DEEP)
    data = rewrite.remove_headers(data, _REMOVED)
    added: list[tuple[str, str]] = [("Received", _received(env, submission_id, stamp))]
    if message.message_id is None:
        added.append(("Message-ID", f"<{submission_id}@{stamp.hostname}>"))
    if not message.has_date:
        added.append(("Date", format_datetime(env.received_at)))
    return rewrite.prepend_headers(data, added)


def _received(env: Envelope, submission_id: str, stamp: Stamp) -> str:
    # RFC 5321 §4.4 trace field; RFC 3848: "S" for STARTTLS, "A" for AUTH (a session of a
    # dealer's relay network has no AUTH user: ESMTP or ESMTPS).
    protocol = "ESMTP" + ("S" if env.tls else "") + ("A" if env.auth_user else "")
    helo = "".join(ch for ch in env.helo if ch.isprintable() and ch not in "()")[:255]
    return (
        f"from {helo or 'unknown'} ([{env.peer}]) by {stamp.hostname} (Mailgate) "
        f"with {protocol} id {submission_id}; {format_datetime(env.received_at)}"
    )


def _copies(
    base: bytes,
    message: ParsedMessage,
    env: Envelope,
    dealer: DealerPolicy,
    verdict: Verdict,
    recipients: list[str],
    submission_id: str,
    stamp: Stamp,
    state: MessageState,
    note: str,
) -> tuple[NewMessage, ...]:
    """One unsigned copy per recipient, each with its own reference and return path."""
    codes = tuple(dict.fromkeys(f.code for f in verdict.findings))
    links = stamp.unsubscribe if stamp.unsubscribe and is_commercial(message, dealer) else None
    theirs = message.header("List-Unsubscribe")
    built: list[NewMessage] = []
    for n, rcpt in enumerate(recipients, start=1):
        message_id = message_id_for(submission_id, n)
        mail_from = env.mail_from
        if stamp.bounce_domain and env.mail_from:
            mail_from = stamp.refs.verp_address(
                message_id, dealer.dealer_id, rcpt, stamp.bounce_domain
            )
        per_rcpt = [("X-Mailgate-Ref", stamp.refs.header_value(message_id, dealer.dealer_id, rcpt))]
        copy = base
        if links is not None:
            ours = links.list_unsubscribe(links.token(dealer.dealer_id, rcpt, message_id))
            plan = header_plan(theirs, ours, dealer.unsubscribe.existing)
            if plan.remove and (
                theirs is not None or message.header("List-Unsubscribe-Post") is not None
            ):
                copy = rewrite.remove_headers(copy, plan.remove)
            per_rcpt.extend(plan.add)
        # A per-recipient hold (decide.py) keeps just this copy for an operator.
        held = verdict.held.get(rcpt) if state is MessageState.QUEUED else None
        built.append(
            NewMessage(
                id=message_id,
                dealer_id=dealer.dealer_id,
                mail_from=mail_from,
                rcpt=rcpt,
                data=rewrite.prepend_headers(copy, per_rcpt),
                received_at=env.received_at,
                state=MessageState.HELD if held else state,
                findings=codes,
                note=held.detail if held else note,
            )
        )
    return tuple(built)
