"""The purpose check: judge a message by its primary purpose, not by its label (pure).

CAN-SPAM and CASL exempt transactional and relationship messages, and the CRM says which
a message is with ``X-Mailgate-Category``. A label is a claim, not a fact: "Year-end SALE:
0% APR" sent as ``transactional`` would skip every consent check. The FTC's rule on the
primary purpose (16 C.F.R. 316.3(a)(2)) gives a test a gateway can apply to a message that
mixes both kinds of content; it is commercial when

(i)  a recipient reading the subject line would likely conclude that it advertises or
     promotes a product or service, or
(ii) the transactional or relationship content does not appear, in whole or in
     substantial part, at the beginning of the body.

``classify`` reads the subject, the opening of the body (``OPENING_WORDS``) and the whole
body for two kinds of evidence, each a weighted phrase list: *offers* (prices pitched as
"as low as $", "$329/mo", APR financing, "% off", "save $20", cash back, coupons and promo
codes, "limited time", "ends Sunday", sale, clearance, "book now") and *transactions*
(receipt, invoice, order and repair-order numbers, amount due, payment, appointment
confirmations, "ready for pickup", recalls, statements, quotes asked for, passwords,
accounts). Amounts alone are not offers: receipts and quotes are full of them. The result
(``Purpose``) is the category the gateway treats the message as:

* labelled ``transactional`` or ``relationship``, and the subject test or the opening test
  reads it as an offer: ``commercial``, and the ``promotional-content`` finding says why
  (its action is the dealer's policy; the consent checks treat it as commercial either way);
* not labelled (and ``infer_unlabelled``): ``transactional`` when its subject or opening
  shows a transaction and neither test reads it as an offer, else ``commercial``, the
  safe default (the consent ledger records the category the checks used);
* anything else: the label.

The phrase lists were tuned on real transactional templates (Postmark's, Lee Munroe's)
and hand-written dealer mail; ``bench/purpose.py`` reports precision, recall and the
false-positive rate on real receipts, with a held-out part.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

from gateway.consent.rules import CATEGORY_HEADER, EXEMPT_CATEGORIES
from gateway.mail.message import ParsedMessage
from gateway.pipeline.base import CheckContext, Finding
from gateway.pipeline.phrases import Hit, PhraseTable, Text
from gateway.policy.model import DealerPolicy
from gateway.policy.options import PromotionalContentOptions

__all__ = [
    "OPENING_WORDS",
    "Purpose",
    "classify",
    "effective_category",
    "promotional_content",
]

OPENING_WORDS = 60  # "the beginning of the body": about the first two short paragraphs
MAX_TEXT = 8_000  # characters of body read: an offer says what it is early
DEFAULT_THRESHOLD = 3.0


_MONEY = r"\$\s?\d[\d,]*(?:\.\d\d)?"

# (name, weight, phrases): a name counts once per text, however many of its phrases match.
_OFFER_PHRASES: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("APR financing", 2.0, (r"\b\d+(?:\.\d+)?\s?%\s*(?:apr\b|financing)", r"\bapr financing\b")),
    ("percent off", 2.0, (r"\b\d{1,2}\s?%\s*off\b", r"\bpercent off\b", r"\bsave \d{1,2}\s?%")),
    (
        "price pitch",
        2.0,
        (
            rf"\b(?:as low as|starting (?:at|from)|from only|only|just)\s*{_MONEY}",
            rf"{_MONEY}\s*(?:/\s?mo\b|/\s?month|per month|a month|bi-?weekly\b)(?!\s*payment)",
            rf"\b(?:save|saving|savings of)\s+(?:up to\s+)?{_MONEY}",
            rf"{_MONEY}\s+off\b",
            rf"{_MONEY}\s+(?:in\s+)?(?:[\w-]+\s+)?(?:dealer cash|cash back|rebate|bonus|gift card)",
            rf"\(an? {_MONEY} value\)",
            r"\btop dollar\b",
            r"\bcash back\b",
        ),
    ),
    (
        "coupon",
        2.0,
        (
            r"\bcoupons?\b",
            r"\bpromo(?:tional)? code\b",
            r"\b(?:use|with|enter) code\b",
            r"\bdiscount code\b",
            r"\bvoucher\b",
        ),
    ),
    (
        "sale",
        1.5,
        (
            r"\bsales? event\b",
            r"\b(?:big|biggest|year-end|spring|summer|fall|winter|holiday)\b[^.\n]{0,20}\bsale\b",
            r"\bon sale\b",
            r"\bsale\b(?=[:!])",
            r"\bclearance\b",
            r"\bblowout\b",
            r"\bblack friday\b",
            r"\bemployee pricing\b",
            r"\btrade-in (?:event|bonus)\b",
            r"\bdoorbusters?\b",
        ),
    ),
    (
        "urgency",
        1.0,
        (
            r"\blimited[- ]time\b",
            r"\b(?:offer|offers|sale|event) (?:ends?|expires?)\b",
            r"\bends (?:soon|sunday|monday|tonight|today)\b",
            r"\bthis (?:weekend|month) only\b",
            r"\btoday only\b",
            r"\bwhile supplies last\b",
            r"\bdon'?t miss\b",
            r"\bhurry\b",
            r"\bact (?:now|fast)\b",
            r"\blast chance\b",
            r"\bfinal days\b",
            r"\bexpire (?:at the end|in \d+ days)\b",
            r"\bbook before\b",
        ),
    ),
    (
        "offer",
        1.0,
        (
            r"\bspecial (?:offers?|financing|pricing)\b",
            r"\bexclusive (?:offer|deal|pricing)\b",
            r"\b(?:deals?|specials)\b",
            r"\boffers?\b",
            r"\bincentives?\b",
            r"\brebates?\b",
            r"\bbonus\b",
            r"\bcomplimentary\b",
            r"\bfree\b(?! of charge)",
            r"\bbuy \w+,? get\b",
            r"\bgift card\b",
        ),
    ),
    (
        "call to buy",
        1.0,
        (
            r"\bshop (?:now|the|our|tires|deals)\b",
            r"\bbuy now\b",
            r"\border now\b",
            r"\bclaim (?:yours|your|now)\b",
            r"\bget a quote\b",
            r"\brsvp\b",
            r"\bbrowse (?:inventory|our)\b",
            r"\bsee (?:all )?(?:the )?offers?\b",
            r"\bview offers\b",
            r"\brefer (?:a friend|now)\b",
        ),
    ),
)

_TRANSACTION_PHRASES: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    (
        "receipt",
        2.0,
        (
            r"\breceipt\b",
            r"\bthank you for your payment\b",
            r"\btotal paid\b",
            r"\bpaid by\b",
            r"\bno payment is due\b",
        ),
    ),
    (
        "invoice",
        2.0,
        (
            r"\binvoice\b",
            r"\bamount due\b",
            r"\bpayment due\b",
            r"\bdue date\b",
            r"\bpayment (?:amount|failed|could not|couldn.t)\b",
            r"\bcouldn.t process your payment\b",
            r"\bsubmit payment\b",
        ),
    ),
    (
        "order",
        2.0,
        (
            r"\border (?:number|#|\d)",
            r"\byour (?:parts )?order\b",
            r"\bhas shipped\b",
            r"\btracking number\b",
            r"\brepair order\b",
            r"\bRO-?\d+",
            r"\bstock [A-Z]?\d+",
        ),
    ),
    (
        "appointment",
        2.0,
        (
            r"\bappointment is (?:confirmed|booked|scheduled)\b",
            r"\b(?:is|are) (?:confirmed|booked) for\b",
            r"\bready for (?:pickup|delivery)\b",
            r"\bdelivery appointment\b",
            r"\byour (?:service |delivery )?appointment\b",
            r"\breschedule\b",
        ),
    ),
    (
        "notice",
        2.0,
        (
            r"\brecall\b",
            r"\bsafety\b",
            r"\bcampaign \d",
            r"\bstatement\b",
            r"\bloan account\b",
            r"\bapplication (?:for .{0,40})?(?:has been |is )?approved\b",
            r"\bwarranty in good standing\b",
            r"\bdue for (?:its|your)\b",
            r"\bour records show\b",
            r"\bscheduled maintenance\b",
        ),
    ),
    (
        "quote asked for",
        2.0,
        (
            r"\bquote you (?:requested|asked for)\b",
            r"\bthe quote you\b",
            r"\bthank you for your inquiry\b",
            r"\bquote is valid\b",
        ),
    ),
    (
        "account",
        2.0,
        (
            r"\bpassword\b",
            r"\breset\b",
            r"\bsign in\b",
            r"\baccount (?:has been )?created\b",
            r"\bverify your\b",
            r"\bverification code\b",
            r"\binvited you\b",
            r"\bnew comment\b",
            r"\btrial (?:period|ends|has)\b",
            r"\byour account\b",
            r"\blog ?in (?:page|information|details)\b",
            r"\busername\b",
            r"\bowner portal\b",
        ),
    ),
    (
        "purchase",
        1.0,
        (
            r"\bthanks? (?:you )?for your (?:purchase|business|order)\b",
            r"\bsubtotal\b",
            r"\btotal\b",
            r"\bcongratulations\b",
            r"\bhas arrived\b",
        ),
    ),
)


_OFFERS = PhraseTable.build(_OFFER_PHRASES)
_TRANSACTIONS = PhraseTable.build(_TRANSACTION_PHRASES)

_STYLE = re.compile(r"<(style|script|head|title)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


def _html_text(markup: str) -> str:
    text = _TAG.sub(" ", _COMMENT.sub(" ", _STYLE.sub(" ", markup[: MAX_TEXT * 4])))
    return html.unescape(text)


def body_text(msg: ParsedMessage) -> str:
    """The text a reader sees, its first ``MAX_TEXT`` characters: text parts, else the HTML."""
    parts = [t[:MAX_TEXT] for t in msg.text_parts if t.strip()]
    if not parts:
        parts = [_html_text(h)[: MAX_TEXT * 2] for h in msg.html_parts]
    # split()/join() fold white space as re.sub(r"\s+", " ") does (the same test of a
    # space, Py_UNICODE_ISSPACE), in C.
    return " ".join(" ".join(parts)[: MAX_TEXT * 2].split())[:MAX_TEXT].strip()


@dataclass(frozen=True, slots=True)
class _Hits:
    """The first place each name of a table matches in a text, in the order found."""

    first: Mapping[str, Hit]  # read-only: a body's hits are shared (_body_hits)

    def score(self, before: int | None = None) -> float:
        """The weights of the names found (only those starting before ``before``)."""
        return sum(h.weight for h in self.first.values() if before is None or h.start < before)

    def words(self) -> list[str]:
        """``name ('matched words')`` for each name, in the order found."""
        return [f"{name} ({hit.words!r})" for name, hit in self.first.items()]


def _scan(text: Text, table: PhraseTable) -> _Hits:
    return _Hits(MappingProxyType(table.scan(text)))


@dataclass(frozen=True, slots=True)
class Purpose:
    """What a message is, judged from its content, and the label it came with.

    ``category`` is what the gateway treats it as (``commercial``, ``transactional``,
    ``relationship``, or another label as sent); ``label`` the ``X-Mailgate-Category``
    value (``""`` when absent); ``offer``/``transaction`` the two scores and ``signals``
    the offers found, for the finding's words; ``why`` the test that decided.
    """

    category: str
    label: str
    offer: float = 0.0
    transaction: float = 0.0
    signals: tuple[str, ...] = ()
    why: str = ""
    # The kinds of transaction the subject or the opening shows ("receipt", "order",
    # "appointment", ...): what the duplicate checks may exempt by purpose.
    kinds: frozenset[str] = frozenset()

    @property
    def overridden(self) -> bool:
        """Labelled exempt, treated as commercial."""
        return self.label in EXEMPT_CATEGORIES and self.category == "commercial"

    @property
    def inferred(self) -> bool:
        """No label: the category is the gateway's reading."""
        return not self.label


@dataclass(frozen=True, slots=True)
class _Reading:
    offer: bool
    offer_score: float
    transaction_score: float
    signals: tuple[str, ...]
    why: str
    shows_transaction: bool  # the subject or the opening does
    kinds: frozenset[str]


@lru_cache(maxsize=32)
def _body_hits(body: str) -> tuple[int, _Hits, _Hits]:
    """Where the opening ends, and the offers and transactions found in ``body``.

    Kept for the last few bodies seen: a campaign sends one body under many subjects.
    """
    opening = len(" ".join(body.split(" ", OPENING_WORDS)[:OPENING_WORDS]))
    text = Text.of(body)  # folded once for both tables
    return opening, _scan(text, _OFFERS), _scan(text, _TRANSACTIONS)


def _read(subject: str, body: str, threshold: float) -> _Reading:
    opening, body_offers, body_deals = _body_hits(body)
    heading = Text.of(subject)
    subject_offers, subject_deals = _scan(heading, _OFFERS), _scan(heading, _TRANSACTIONS)
    subject_offer, subject_deal = subject_offers.score(), subject_deals.score()
    opening_offer, opening_deal = body_offers.score(opening), body_deals.score(opening)
    body_offer = body_offers.score()
    signals = tuple(dict.fromkeys(subject_offers.words() + body_offers.words()))
    transaction = max(subject_deal + opening_deal, body_deals.score())
    shows = subject_deal + opening_deal >= 2
    kinds = frozenset(subject_deals.first) | frozenset(
        name for name, hit in body_deals.first.items() if hit.start < opening
    )

    def offer(why: str, score: float) -> _Reading:
        return _Reading(True, score, transaction, signals, why, shows, kinds)

    # 16 C.F.R. 316.3(a)(2)(i): the subject line reads as an offer.
    if subject_offer >= 2 and subject_offer > subject_deal:
        return offer("the subject is an offer", body_offer + subject_offer)
    # (ii): no transaction at the beginning, and the body is an offer.
    if opening_deal == 0 and subject_deal == 0 and body_offer >= threshold:
        return offer("the opening shows no transaction and the body is an offer", body_offer)
    # Transactional words at the top of a message that is offers all through.
    if opening_offer >= threshold and opening_offer > 2 * (opening_deal + subject_deal):
        return offer("the opening is an offer", body_offer)
    return _Reading(False, body_offer, transaction, signals, "", shows, kinds)


def classify(
    msg: ParsedMessage, threshold: float = DEFAULT_THRESHOLD, infer_unlabelled: bool = True
) -> Purpose:
    """Judge ``msg`` (see the module docstring); never raises."""
    label = (msg.header(CATEGORY_HEADER) or "").strip().lower()
    if label and label not in EXEMPT_CATEGORIES:
        return Purpose(label, label)  # commercial, or a value the other checks read as such
    if not label and not infer_unlabelled:
        return Purpose("commercial", "")
    read = _read(msg.subject or "", body_text(msg), threshold)
    scores = (read.offer_score, read.transaction_score, read.signals)
    if read.offer:
        return Purpose("commercial", label, *scores, read.why, read.kinds)
    if label:
        return Purpose(label, label, *scores, "", read.kinds)
    if read.shows_transaction:
        why = "its subject or opening shows a transaction and no offer"
        return Purpose("transactional", "", *scores, why, read.kinds)
    return Purpose("commercial", "", *scores, "nothing shows a transaction", read.kinds)


def purpose_of(msg: ParsedMessage, dealer: DealerPolicy) -> Purpose:
    """``classify`` with the dealer's options (``promotional-content`` in policy)."""
    options = dealer.options(PromotionalContentOptions)
    return classify(msg, options.threshold, options.infer_unlabelled)


def effective_category(msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext) -> str:
    """The category the checks treat ``msg`` as: the purpose intake read, else read now."""
    purpose = ctx.purpose if ctx.purpose is not None else purpose_of(msg, dealer)
    return purpose.category


def promotional_content(
    msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext
) -> Iterator[Finding]:
    """Find offers in mail labelled transactional or relationship."""
    purpose = ctx.purpose if ctx.purpose is not None else purpose_of(msg, dealer)
    if not purpose.overridden:
        return
    listed = ", ".join(purpose.signals[:4]) or "offers"
    yield Finding(
        "promotional-content",
        f"labelled {purpose.label}, but {purpose.why} ({listed}); its primary purpose is "
        "commercial (16 C.F.R. 316.3), so consent rules apply",
        data={
            "label": purpose.label,
            "category": "commercial",
            "offer": f"{purpose.offer:g}",
            "transaction": f"{purpose.transaction:g}",
        },
    )
