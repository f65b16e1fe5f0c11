"""Per-recipient duplicate and frequency checks: one customer, one message (pure).

Each check reads ``ctx.duplicates`` (gathered by intake before the run: the message's
fingerprint, signature and category, and each recipient's sends within the dealer's
longest window) and yields at most one finding per recipient, with ``recipient`` set so
that ``decide()`` leaves out just that recipient. ``data`` names the earlier message
(``earlier``), its time (``at``) and the ``kind`` (exact, near, cap) for the drop record
and the metric.

The checks only *read*. Whether a recipient that passes really is the first is settled
when intake stores the message: the store refuses a claim if the recipient's history
moved since it was read, and intake runs the checks again (see ``Storage.enqueue_claimed``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from gateway.duplicates.fingerprints import (
    Category,
    DuplicateState,
    PriorSend,
    RecipientHistory,
    similarity,
)
from gateway.mail.message import ParsedMessage
from gateway.pipeline.base import CheckContext, Finding
from gateway.pipeline.purpose import purpose_of
from gateway.policy.model import DealerPolicy
from gateway.policy.options import NearDuplicateOptions

DAY = timedelta(days=1)
WEEK = timedelta(days=7)


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _finding(code: str, rcpt: str, kind: str, earlier: PriorSend | None, detail: str,
             msg: ParsedMessage, **extra: str) -> Finding:  # fmt: skip
    data = {"kind": kind, "earlier": earlier.message_id if earlier else "", **extra}
    # The subject names the repeated template in the drop record and the dealer's report.
    data["subject"] = (msg.subject or "")[:200]
    if earlier is not None:
        data["at"] = earlier.sent_at.isoformat()
    return Finding(code, detail, recipient=rcpt, data=data)


def _first_per_person(state: DuplicateState, rcpts: tuple[str, ...]) -> dict[str, str]:
    """Map a recipient that repeats an earlier one of the same envelope to that one."""
    first: dict[str, str] = {}
    repeats: dict[str, str] = {}
    for rcpt in rcpts:
        key = state.keys.get(rcpt, rcpt)
        if key in first:
            repeats[rcpt] = first[key]
        else:
            first[key] = rcpt
    return repeats


def _exact(state: DuplicateState, history: RecipientHistory, now: datetime) -> PriorSend | None:
    since = now - state.options.window
    for send in history.sends:
        if send.sent_at >= since and send.fingerprint == state.print.fingerprint:
            return send
    return None


def _near(
    state: DuplicateState, history: RecipientHistory, now: datetime
) -> tuple[float, PriorSend] | None:
    since = now - state.options.window
    best: tuple[float, PriorSend] | None = None
    for send in history.sends:
        # Like with like: a quote reply is compared with quote replies, an offer with offers.
        if (
            send.sent_at < since
            or send.category is not state.print.category
            or not send.signature
            or send.fingerprint == state.print.fingerprint
        ):
            continue
        score = similarity(state.print.signature, send.signature)
        if score >= state.options.threshold and (best is None or score > best[0]):
            best = (score, send)
    return best


def duplicate_message(
    msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext
) -> Iterator[Finding]:
    """Find recipients who already got this exact message within the window.

    Also finds a recipient listed twice in one envelope under two spellings of one address
    (``John@`` and ``john@``, ``john+x@`` and ``john@``, as policy normalises them).
    """
    state = ctx.duplicates
    if state is None:
        return
    repeats = _first_per_person(state, ctx.envelope.rcpt_tos)
    for rcpt in ctx.envelope.rcpt_tos:
        if rcpt in repeats:
            yield _finding(
                "duplicate-message",
                rcpt,
                "exact",
                None,
                f"{rcpt} is the same recipient as {repeats[rcpt]} in this message",
                msg,
            )
            continue
        history = state.recipients.get(rcpt)
        send = None if history is None else _exact(state, history, ctx.now)
        if send is not None:
            yield _finding(
                "duplicate-message",
                rcpt,
                "exact",
                send,
                f"{rcpt} already got this message as {send.message_id} at {_when(send.sent_at)}",
                msg,
            )


def _near_applies(msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext) -> bool:
    """Whether near-duplicate detection applies to this message.

    Policy (``near-duplicate-message``): ``transactional`` extends it from commercial to
    transactional mail (three near-identical quote replies to one customer are one
    message); ``exempt_purposes`` names the kinds of transaction (``pipeline/purpose.py``)
    that are always sent, judged by the content, never by the label: a receipt without a
    label is exempt, an offer labelled transactional is not.
    """
    state = ctx.duplicates
    assert state is not None
    options = dealer.options(NearDuplicateOptions)
    if state.print.category is not Category.COMMERCIAL and not options.transactional:
        return False
    exempt = set(options.exempt_purposes.replace(",", " ").split())
    purpose = ctx.purpose if ctx.purpose is not None else purpose_of(msg, dealer)
    return purpose.category == "commercial" or not (purpose.kinds & exempt)


def near_duplicate_message(
    msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext
) -> Iterator[Finding]:
    """Find recipients who got a message of the same category this similar within the window.

    A transactional message is compared with the recipient's transactional mail when
    policy says so, and a receipt (by its purpose) never is (``_near_applies``); an exact
    copy is ``duplicate_message``'s to report.
    """
    state = ctx.duplicates
    if state is None or not _near_applies(msg, dealer, ctx):
        return
    repeats = _first_per_person(state, ctx.envelope.rcpt_tos)
    for rcpt in ctx.envelope.rcpt_tos:
        history = state.recipients.get(rcpt)
        if history is None or rcpt in repeats or _exact(state, history, ctx.now):
            continue
        best = _near(state, history, ctx.now)
        if best is not None:
            score, send = best
            yield _finding(
                "near-duplicate-message",
                rcpt,
                "near",
                send,
                f"{rcpt} got a message {score:.0%} alike as {send.message_id} "
                f"at {_when(send.sent_at)}",
                msg,
                similarity=f"{score:.2f}",
            )


def frequency_cap(msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext) -> Iterator[Finding]:
    """Find recipients at the dealer's cap of commercial messages per day or per week.

    The windows roll: "per day" is the 24 hours before now. Transactional mail is neither
    capped nor counted. A copy the other two checks report is theirs to report.
    """
    state = ctx.duplicates
    if state is None or state.print.category is not Category.COMMERCIAL:
        return
    options = state.options
    repeats = _first_per_person(state, ctx.envelope.rcpt_tos)
    for rcpt in ctx.envelope.rcpt_tos:
        history = state.recipients.get(rcpt)
        if history is None or rcpt in repeats:
            continue
        if _exact(state, history, ctx.now) or _near(state, history, ctx.now):
            continue
        commercial = [s for s in history.sends if s.category is Category.COMMERCIAL]
        for limit, span, label in ((options.per_day, DAY, "day"), (options.per_week, WEEK, "week")):
            if limit <= 0:
                continue
            counted = [s for s in commercial if s.sent_at > ctx.now - span]
            if len(counted) >= limit:
                latest = max(counted, key=lambda s: s.sent_at)
                yield _finding(
                    "frequency-cap",
                    rcpt,
                    "cap",
                    latest,
                    f"{rcpt} already got {len(counted)} commercial message(s) in the last "
                    f"{label} (limit {limit}), the latest {latest.message_id}",
                    msg,
                    limit=f"{limit}/{label}",
                )
                break
