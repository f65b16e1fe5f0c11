"""Consent checks: commercial mail only to recipients the dealer's rules allow (pure).

``consent_window_expired`` and ``no_opt_in`` read ``ctx.consent`` (each envelope
recipient's events and preferences, gathered by intake before the run) and yield at most
one finding per recipient, with ``recipient`` set, so that ``decide()`` leaves out or holds
just that recipient and, when none is left, refuses the message with the reason.
``missing_postal_address`` looks for the dealer's postal address in commercial mail, and
``missing_unsubscribe`` for a way to unsubscribe (a ``List-Unsubscribe`` field, or an
unsubscribe or opt-out link in the body) where the rules require one and the gateway does
not add its own one-click link.

Whether a message is commercial is its primary purpose (``pipeline/purpose.py``): the
``X-Mailgate-Category`` label, unless its content shows an offer (or, without a label, a
transaction). Why at DATA and not at RCPT: both arrive after the last RCPT. Refusing at
RCPT would refuse receipts, recall notices and appointment confirmations (exempt by law)
along with offers. CRMs send one message per customer, so a refused recipient still gets its own
``550 5.7.1`` with the reason at the end of DATA; in a message to several recipients the
others go on and the refused ones are recorded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from gateway.consent.rules import (
    EMPTY_RECORD,
    EXEMPT_CATEGORIES,
    NO_OPT_IN,
    TOPIC_HEADER,
    WINDOW_EXPIRED,
    Eligibility,
    evaluate,
    message_topic,
    normalise_address,
    postal_address_present,
)
from gateway.mail.message import ParsedMessage
from gateway.pipeline.base import CheckContext, Finding
from gateway.pipeline.purpose import effective_category
from gateway.policy.model import DealerPolicy
from gateway.unsubscribe.links import is_commercial


def _ineligible(
    msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext, code: str
) -> Iterator[Finding]:
    records = ctx.consent
    if records is None or not dealer.consent.enforce:
        return
    category = effective_category(msg, dealer, ctx)
    topic = message_topic(msg.header(TOPIC_HEADER))
    for rcpt in ctx.envelope.rcpt_tos:
        record = records.get(rcpt) or records.get(normalise_address(rcpt)) or EMPTY_RECORD
        verdict = evaluate(record, dealer.consent, ctx.now, category, topic)
        if verdict.code == code:
            yield Finding(code, f"{rcpt}: {verdict.reason}", recipient=rcpt, data=_data(verdict))


def _data(verdict: Eligibility) -> dict[str, str]:
    data = {"reason": verdict.reason}
    if verdict.basis is not None:
        data["basis"] = verdict.basis.kind.value
        data["on"] = verdict.basis.on.isoformat()
    return data


def consent_window_expired(
    msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext
) -> Iterator[Finding]:
    """Find recipients of commercial mail outside every implied-consent window."""
    return _ineligible(msg, dealer, ctx, WINDOW_EXPIRED)


def no_opt_in(msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext) -> Iterator[Finding]:
    """Find recipients of commercial mail without a required opt-in, or who opted out."""
    return _ineligible(msg, dealer, ctx, NO_OPT_IN)


def missing_postal_address(
    msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext
) -> Iterator[Finding]:
    """Find commercial mail that does not show the dealer's postal address where required."""
    rules = dealer.consent
    if not (rules.enforce and rules.require_postal_address and rules.postal_address):
        return
    if effective_category(msg, dealer, ctx) in EXEMPT_CATEGORIES:
        return
    if not postal_address_present(rules.postal_address, msg.text_parts, msg.html_parts):
        yield Finding(
            "missing-postal-address",
            f"the {rules.name or 'consent'} rules need {rules.postal_address!r} in the message",
        )


# What an unsubscribe link says, in the two languages CASL mail must offer (s. 6(2)(c) and
# the CRTC's guidance on French): its text, its URL or the words next to a bare URL.
_UNSUBSCRIBE = re.compile(
    r"unsubscrib|opt[\s_-]?out|stop receiving|email preferences|manage (?:your )?(?:email |"
    r"communication |subscription )?preferences|d[ée]sabonn|d[ée]sinscri|ne plus recevoir",
    re.IGNORECASE,
)
_ANCHOR = re.compile(r"<a\b([^>]*)>(.*?)</a\s*>", re.IGNORECASE | re.DOTALL)
_HREF = re.compile(r"""href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)
_LINK = re.compile(r"(?:https?://|mailto:)\S+", re.IGNORECASE)
_NEAR = 200  # characters between the words and a bare link in a text part


def unsubscribe_offered(msg: ParsedMessage) -> bool:
    """Whether ``msg`` offers a way to unsubscribe: RFC 2369 ``List-Unsubscribe`` or a link."""
    if (msg.header("List-Unsubscribe") or "").strip():
        return True
    for html in msg.html_parts:
        for anchor in _ANCHOR.finditer(html):
            href = _HREF.search(anchor.group(1))
            target = next((g for g in href.groups() if g), "") if href else ""
            if target and (_UNSUBSCRIBE.search(target) or _UNSUBSCRIBE.search(anchor.group(2))):
                return True
    for text in msg.text_parts:
        for words in _UNSUBSCRIBE.finditer(text):
            start, end = max(words.start() - _NEAR, 0), words.end() + _NEAR
            if _LINK.search(text, start, end):
                return True
    return False


def missing_unsubscribe(
    msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext
) -> Iterator[Finding]:
    """Find commercial mail without a way to unsubscribe where the rules require one."""
    rules = dealer.consent
    if not (rules.enforce and rules.require_unsubscribe):
        return
    if effective_category(msg, dealer, ctx) in EXEMPT_CATEGORIES:
        return
    if ctx.adds_unsubscribe and is_commercial(msg, dealer):
        return  # intake adds List-Unsubscribe and List-Unsubscribe-Post to every copy
    if not unsubscribe_offered(msg):
        yield Finding(
            "missing-unsubscribe",
            f"the {rules.name or 'consent'} rules need a way to unsubscribe in every commercial "
            "message: no List-Unsubscribe field and no unsubscribe link",
        )
