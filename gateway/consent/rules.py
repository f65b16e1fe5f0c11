"""Consent and eligibility windows: who a dealer may send commercial email to, and why (pure).

This module owns the rules of issue 10: the relationship records a dealer's CRM or DMS
feeds in (dated ``ConsentEvent``s and per-topic ``Preference``s), the rules a dealer's
policy selects (``ConsentRules``, from a preset in ``policies/presets/`` plus the dealer's
overrides), and one function, ``evaluate``, that says whether a recipient may get a
message of a given category today, in words a dealer understands. ``explain`` lays out the
whole record for ``mailgate consent show``. Nothing here does I/O.

Theory of operation
-------------------
A recipient's standing is decided in this order; the first rule that applies wins.

1. Transactional and relationship messages (``X-Mailgate-Category``) are exempt from
   windows and opt-ins (CAN-SPAM §7702(17) "transactional or relationship message";
   CASL s.6(6)). They still meet complaints, bounces and suppressions elsewhere.
2. A dealer whose rules do not enforce consent is not checked at all.
3. The latest *explicit* statement about the message's topic decides when there is one:
   an opt-in or opt-out preference for that topic, an express-consent event (it covers the
   dealer's own marketing and service follow-up, never third parties' offers) or a
   consent-withdrawn event (it covers every topic). A statement made on the same day as a
   contrary one loses to the refusal. Withdrawal is final for implied consent: a purchase
   after an unsubscribe is not a yes to email, so only new express consent or an opt-in
   renews it.
4. Rules that require an opt-in (GDPR) stop here: no opt-in, no commercial mail.
5. Rules without windows (CAN-SPAM) allow everyone not opted out.
6. Otherwise each implied-consent interaction opens a window from its date (a finance or
   lease sale from its last payment date, when known) and the window that ends last
   decides ("the latest date wins"). A window includes its last day: CASL s.10(10) counts
   "the two-year period immediately before the day on which the message is sent", so an
   inquiry of 2025-03-01 under a 6-month window allows mail up to 2025-09-01 inclusive.

Dates are UTC calendar dates; windows are calendar months and days (6 months after
31 August is the last day of February).

Nothing is ever deleted: an ineligible recipient is *locked*, and any later interaction
recorded for it opens a new window at once.
"""

from __future__ import annotations

import calendar
import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from types import MappingProxyType

# Consent records are keyed by the gateway's one normal form of an address; the name
# stays for the stores and the import that read and write those keys.
from gateway.mail.addresses import normalise as normalise_address
from gateway.types import DealerId

__all__ = [
    "CATEGORY_HEADER",
    "EMPTY_RECORD",
    "EXEMPT_CATEGORIES",
    "IMPLIED",
    "NO_OPT_IN",
    "NO_RULES",
    "TOPIC_HEADER",
    "WINDOW_EXPIRED",
    "ConsentEvent",
    "ConsentRecord",
    "ConsentRules",
    "Eligibility",
    "EventLine",
    "Explanation",
    "Interaction",
    "Preference",
    "Topic",
    "Window",
    "collapse",
    "evaluate",
    "explain",
    "message_category",
    "message_topic",
    "normalise_address",
    "postal_address_present",
]

CATEGORY_HEADER = "X-Mailgate-Category"
# Which consent a commercial message relies on: the dealer's marketing (default), its
# service follow-up, or offers made for a third party (a lender, an insurer, the maker).
TOPIC_HEADER = "X-Mailgate-Consent-Topic"
EXEMPT_CATEGORIES = frozenset({"transactional", "relationship"})

WINDOW_EXPIRED = "consent-window-expired"
NO_OPT_IN = "no-opt-in"


class Interaction(enum.StrEnum):
    """A dated event in the relationship between a dealer and a customer."""

    INQUIRY = "inquiry"  # a lead, an inquiry or a prospect opportunity
    SALE_CASH = "sale-cash"
    SALE_FINANCE = "sale-finance"  # finance or lease; the window runs from the last payment
    SERVICE = "service-repair-order"
    SHOWROOM = "showroom-visit"
    EMAIL_REPLY = "email-reply"
    EXPRESS_CONSENT = "express-consent"  # with its source and proof
    WITHDRAWN = "consent-withdrawn"


IMPLIED = frozenset(Interaction) - {Interaction.EXPRESS_CONSENT, Interaction.WITHDRAWN}


class Topic(enum.StrEnum):
    """What a commercial message is about, for opt-ins recorded per channel and party."""

    DEALER_MARKETING = "dealer-marketing"
    SERVICE_FOLLOW_UP = "service-follow-up"
    THIRD_PARTY = "third-party"


_TOPIC_WORDS = {
    Topic.DEALER_MARKETING: "marketing email from the dealer",
    Topic.SERVICE_FOLLOW_UP: "service follow-up email",
    Topic.THIRD_PARTY: "email offers from third parties",
}

_KIND_WORDS = {
    Interaction.INQUIRY: "an inquiry",
    Interaction.SALE_CASH: "a cash sale",
    Interaction.SALE_FINANCE: "a finance or lease sale",
    Interaction.SERVICE: "a service repair order",
    Interaction.SHOWROOM: "a showroom visit",
    Interaction.EMAIL_REPLY: "an email reply",
    Interaction.EXPRESS_CONSENT: "express consent",
    Interaction.WITHDRAWN: "a withdrawal of consent",
}


_WINDOW = re.compile(r"^\s*(\d{1,4})\s*(days?|d|months?|mo|years?|y)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Window:
    """A calendar period: whole months plus days."""

    months: int = 0
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> Window:
        """Parse ``"6 months"``, ``"2 years"``, ``"90 days"`` (or ``6mo``, ``2y``, ``90d``).

        Raises ``ValueError`` naming the accepted forms.
        """
        m = _WINDOW.match(text)
        if m is None:
            raise ValueError(f"not a window: {text!r} (use e.g. '90 days', '6 months', '2 years')")
        n, unit = int(m.group(1)), m.group(2).lower()
        if unit.startswith("d"):
            return cls(days=n)
        if unit.startswith("y"):
            return cls(months=12 * n)
        return cls(months=n)

    def end(self, start: date) -> date:
        """The last day of the window that opens on ``start``."""
        month0 = start.month - 1 + self.months
        year, month = start.year + month0 // 12, month0 % 12 + 1
        day = min(start.day, calendar.monthrange(year, month)[1])
        return date.fromordinal(date(year, month, day).toordinal() + self.days)

    def __str__(self) -> str:
        parts = []
        if self.months:
            years, months = divmod(self.months, 12)
            parts.append(_plural(self.months, "month") if months else _plural(years, "year"))
        if self.days or not parts:
            parts.append(_plural(self.days, "day"))
        return " and ".join(parts)


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    """One interaction the CRM or DMS recorded for a dealer and a recipient.

    The natural key is (dealer, address, kind, on, ref): importing the same event again
    changes nothing, except that a finance or lease sale takes a later ``last_payment``.
    """

    dealer_id: DealerId
    address: str  # normalised (``normalise_address``)
    kind: Interaction
    on: date
    last_payment: date | None = None  # finance or lease only
    ref: str = ""  # the CRM's id for it (deal, repair order, lead number), "" if none
    source: str = ""  # where it came from: a CRM name, a web form, a file
    proof: str = ""  # express consent: what shows it (a form id, a recording, a signed page)

    @property
    def anchor(self) -> date:
        """The day its window opens: the last payment of a finance deal, else its date."""
        if self.last_payment is not None and self.last_payment > self.on:
            return self.last_payment
        return self.on

    def describe(self) -> str:
        """``a service repair order on 2024-03-01`` (with the last payment when it counts)."""
        text = f"{_KIND_WORDS[self.kind]} on {self.on.isoformat()}"
        if self.anchor != self.on:
            text += f" (last payment {self.anchor.isoformat()})"
        return text


def collapse(events: Iterable[ConsentEvent]) -> list[ConsentEvent]:
    """``events`` with one entry per natural key, as the store keeps them.

    Of two entries with one key the later last payment date wins and an empty source or
    proof is filled from the other; the order of first appearance is kept. A store writes
    a batch in one statement, and a statement may not touch one row twice.
    """
    kept: dict[tuple[str, str, str, date, str], ConsentEvent] = {}
    for event in events:
        key = (event.dealer_id, event.address, event.kind.value, event.on, event.ref)
        old = kept.get(key)
        if old is None:
            kept[key] = event
            continue
        payments = [d for d in (old.last_payment, event.last_payment) if d is not None]
        kept[key] = replace(
            old,
            last_payment=max(payments) if payments else None,
            source=old.source or event.source,
            proof=old.proof or event.proof,
        )
    return list(kept.values())


@dataclass(frozen=True, slots=True)
class Preference:
    """An opt-in or opt-out for one channel and topic, as the CRM recorded it last."""

    dealer_id: DealerId
    address: str  # normalised
    topic: Topic
    granted: bool
    at: datetime
    source: str = ""
    channel: str = "email"


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """Everything stored about one recipient of one dealer."""

    events: tuple[ConsentEvent, ...] = ()
    preferences: tuple[Preference, ...] = ()


EMPTY_RECORD = ConsentRecord()


@dataclass(frozen=True, slots=True)
class ConsentRules:
    """The consent rules of one dealer (``[consent]`` in policy, merged over presets).

    ``windows`` maps each implied-consent interaction to the window it opens; a kind that
    is absent opens none. With no windows at all every recipient not opted out is allowed
    (CAN-SPAM). ``require_opt_in`` wants an opt-in for the message's topic (GDPR).
    """

    enforce: bool = False
    name: str = ""  # how reasons name the rules: "CASL implied-consent"
    windows: Mapping[Interaction, Window] = field(default_factory=lambda: MappingProxyType({}))
    express_consent: bool = True  # express consent counts until withdrawn
    require_opt_in: bool = False
    require_postal_address: bool = False
    require_unsubscribe: bool = False
    postal_address: str = ""


NO_RULES = ConsentRules()  # a dealer without [consent] rules: nothing is checked


@dataclass(frozen=True, slots=True)
class Eligibility:
    """Whether one recipient may get one message, and why.

    ``until`` is the last day of eligibility (``None``: no end while nothing changes, or
    not eligible); ``basis`` the event the decision rests on (``None``: no event, e.g. an
    exemption or a preference). ``code`` is the finding code when not eligible.
    """

    eligible: bool
    reason: str
    until: date | None = None
    basis: ConsentEvent | None = None
    code: str | None = None


def message_category(value: str | None) -> str:
    """The category named by an ``X-Mailgate-Category`` value; ``commercial`` by default."""
    text = (value or "").strip().lower()
    return text or "commercial"


def message_topic(value: str | None) -> Topic:
    """The topic named by an ``X-Mailgate-Consent-Topic`` value.

    The dealer's own marketing when absent or unknown: mail made for a third party must
    say so, as the CRM knows and the gateway cannot guess.
    """
    text = (value or "").strip().lower()
    try:
        return Topic(text)
    except ValueError:
        return Topic.DEALER_MARKETING


_Statement = tuple[date, bool, str, ConsentEvent | None]  # day, granted, words, event


def _statements(record: ConsentRecord, topic: Topic) -> list[_Statement]:
    found: list[_Statement] = []
    for pref in record.preferences:
        # Only email preferences bear on email (an SMS opt-out says nothing about email).
        if pref.topic is topic and pref.channel == "email":
            what = "opted in to" if pref.granted else "opted out of"
            via = f" ({pref.source})" if pref.source else ""
            day = pref.at.date()
            found.append((day, pref.granted, f"{what} {_TOPIC_WORDS[topic]} on {day}{via}", None))
    for event in record.events:
        via = f" ({event.source})" if event.source else ""
        if event.kind is Interaction.WITHDRAWN:
            found.append((event.on, False, f"withdrew consent on {event.on}{via}", event))
        elif event.kind is Interaction.EXPRESS_CONSENT and topic is not Topic.THIRD_PARTY:
            found.append((event.on, True, f"gave express consent on {event.on}{via}", event))
    return found


def _latest_statement(record: ConsentRecord, topic: Topic) -> _Statement | None:
    # Latest day first; on the same day a refusal beats a grant (granted False sorts first).
    found = _statements(record, topic)
    return max(found, key=lambda s: (s[0], not s[1])) if found else None


def _windows(record: ConsentRecord, rules: ConsentRules) -> list[tuple[date, ConsentEvent]]:
    """Each implied-consent event with the last day of the window it opens."""
    out = []
    for event in record.events:
        window = rules.windows.get(event.kind)
        if window is not None and event.kind in IMPLIED:
            out.append((window.end(event.anchor), event))
    return out


def evaluate(
    record: ConsentRecord,
    rules: ConsentRules,
    now: datetime,
    category: str = "commercial",
    topic: Topic = Topic.DEALER_MARKETING,
) -> Eligibility:
    """Decide whether the recipient of ``record`` may get a ``category`` message ``now``.

    See the module docstring for the order of the rules. The reason is a sentence
    fragment meant for an SMTP reply and for ``mailgate consent show``.
    """
    if category in EXEMPT_CATEGORIES:
        return Eligibility(True, f"{category} message: consent windows and opt-ins do not apply")
    if not rules.enforce:
        return Eligibility(True, "the dealer's policy enforces no consent rules")
    name = rules.name or "consent"
    statement = _latest_statement(record, topic)
    if statement is not None:
        _day, granted, words, event = statement
        if not granted:
            return Eligibility(False, f"the recipient {words}", None, event, NO_OPT_IN)
        if rules.express_consent or rules.require_opt_in:
            return Eligibility(True, f"the recipient {words}; valid until withdrawn", None, event)
    if rules.require_opt_in:
        return Eligibility(
            False,
            f"no opt-in to {_TOPIC_WORDS[topic]} on record ({name} rules need one)",
            code=NO_OPT_IN,
        )
    if not rules.windows:
        return Eligibility(True, f"no consent windows under the {name} rules; not opted out")
    today = now.date()
    windows = _windows(record, rules)
    if not windows:
        return Eligibility(
            False,
            f"no interaction on record opens a window under the {name} rules",
            code=WINDOW_EXPIRED,
        )
    end, event = max(windows, key=lambda w: (w[0], w[1].anchor))
    if end >= today:
        return Eligibility(
            True,
            f"within the {name} window: last interaction, {event.describe()}, "
            f"ends {end.isoformat()}",
            end,
            event,
        )
    return Eligibility(
        False,
        f"outside the {name} window: last interaction, {event.describe()}, ended {end.isoformat()}",
        None,
        event,
        WINDOW_EXPIRED,
    )


@dataclass(frozen=True, slots=True)
class EventLine:
    """One event as ``consent show`` lists it: the window it opens and until when."""

    event: ConsentEvent
    window: Window | None  # None: the rules give this kind no window
    ends: date | None


@dataclass(frozen=True, slots=True)
class Explanation:
    """A recipient's whole standing for a dealer: events, preferences, verdict, renewal."""

    address: str
    rules: ConsentRules
    events: tuple[EventLine, ...]
    preferences: tuple[Preference, ...]
    eligibility: Mapping[Topic, Eligibility]
    renewal: str


def _renewal(rules: ConsentRules) -> str:
    if not rules.enforce:
        return "nothing to renew: the dealer's policy enforces no consent rules"
    if rules.require_opt_in:
        return "an opt-in recorded for the topic (express consent covers the dealer's own mail)"
    if not rules.windows:
        return "nothing to renew: only an opt-out or a withdrawal stops commercial mail"
    opened = ", ".join(
        f"{_KIND_WORDS[kind]} opens {window}"
        for kind, window in sorted(rules.windows.items(), key=lambda kw: kw[0].value)
    )
    express = "; express consent opens it until withdrawn" if rules.express_consent else ""
    return f"a new interaction: {opened}{express}"


def explain(
    address: str,
    record: ConsentRecord,
    rules: ConsentRules,
    now: datetime,
    topics: Iterable[Topic] = tuple(Topic),
) -> Explanation:
    """Lay out ``record`` under ``rules`` at ``now`` for an operator or a dealer."""
    lines = []
    for event in sorted(record.events, key=lambda e: (e.on, e.kind.value, e.ref)):
        window = rules.windows.get(event.kind) if event.kind in IMPLIED else None
        lines.append(EventLine(event, window, window.end(event.anchor) if window else None))
    verdicts = {topic: evaluate(record, rules, now, "commercial", topic) for topic in topics}
    return Explanation(
        address=address,
        rules=rules,
        events=tuple(lines),
        preferences=tuple(sorted(record.preferences, key=lambda p: (p.topic.value, p.at))),
        eligibility=MappingProxyType(verdicts),
        renewal=_renewal(rules),
    )


_NOT_WORD = re.compile(r"[^0-9a-z]+")
_TAG = re.compile(r"<[^>]*>")


def _words(text: str) -> str:
    return " ".join(_NOT_WORD.split(text.lower())).strip()


def postal_address_present(postal_address: str, texts: Sequence[str], htmls: Sequence[str]) -> bool:
    """Whether the dealer's postal address appears in the message's text or HTML.

    Compared word by word, ignoring case, punctuation, line breaks and HTML tags, so
    ``"12 Main St., Springfield"`` matches ``12 MAIN ST<br>Springfield``.
    """
    wanted = _words(postal_address)
    if not wanted:
        return False
    for text in (*texts, *(_TAG.sub(" ", h).replace("&nbsp;", " ") for h in htmls)):
        if f" {wanted} " in f" {_words(text)} ":
            return True
    return False
