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
   consent-withdrawn event (it covers every topic). Statements are ordered by their full
   time: an opt-out at 09:00 and an opt-in at 15:00 the same day leave the recipient opted
   in. A statement known only by its day (an event) is taken to be at the same time as
   every other statement of that day, and of two statements at the same time the refusal
   wins. Withdrawal is final for implied consent: a purchase after an unsubscribe is not
   a yes to email, so only new express consent or an opt-in renews it.
4. Rules that require an opt-in (GDPR) stop here: no opt-in, no commercial mail.
5. Rules without windows (CAN-SPAM) allow everyone not opted out.
6. Otherwise each implied-consent interaction opens a window from its date (a finance or
   lease sale from its last payment date, when known) and the window that ends last
   decides ("the latest date wins"). A window includes its last day: CASL s.10(10) counts
   "the two-year period immediately before the day on which the message is sent", so an
   inquiry of 2025-03-01 under a 6-month window allows mail up to 2025-09-01 inclusive.
   Only a finance or lease sale has a last payment date.

Days are the dealer's days (``consent.time_zone``, UTC unless set): "today", and the day
of an opt-in given at 23:30 in Toronto, are read on the dealer's calendar, so a window
ends at the dealer's midnight. Windows are calendar months and days (6 months after
31 August is the last day of February).

A suppression (a spam complaint, a hard bounce, an unsubscribe) outranks all of this: the
store's entry is passed in as a ``Block`` and the answer is the one RCPT TO gives.

Nothing is ever deleted: an ineligible recipient is *locked*. An interaction recorded
later opens a new window at once, unless the recipient withdrew consent or opted out:
then only express consent or an opt-in does (``Explanation.renewal`` says which).
"""

from __future__ import annotations

import calendar
import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, tzinfo
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
    "SUPPRESSED",
    "TOPIC_HEADER",
    "WINDOW_EXPIRED",
    "Block",
    "Channel",
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
    "channel_of",
    "collapse",
    "day_of",
    "evaluate",
    "explain",
    "message_category",
    "message_topic",
    "normalise_address",
    "postal_address_present",
    "renewal_summary",
]

CATEGORY_HEADER = "X-Mailgate-Category"
# Which consent a commercial message relies on: the dealer's marketing (default), its
# service follow-up, or offers made for a third party (a lender, an insurer, the maker).
TOPIC_HEADER = "X-Mailgate-Consent-Topic"
EXEMPT_CATEGORIES = frozenset({"transactional", "relationship"})

WINDOW_EXPIRED = "consent-window-expired"
NO_OPT_IN = "no-opt-in"
SUPPRESSED = "suppressed"  # not a finding: RCPT TO refuses these recipients


class Interaction(enum.StrEnum):
    """A dated event in the relationship between a dealer and a customer."""

    INQUIRY = "inquiry"  # a lead, an inquiry or a prospect opportunity
    SALE_CASH = "sale-cash"
    SALE_FINANCE = "sale-finance"  # finance or lease; the window runs from the last payment
    SALE_PARTS = "sale-parts"  # a parts counter sale
    SERVICE = "service-repair-order"
    OTHER_TRANSACTION = "other-transaction"  # any other purchase: a car wash, a detailing
    SHOWROOM = "showroom-visit"
    EMAIL_REPLY = "email-reply"
    EMAIL_OPEN = "email-open"  # the customer opened a dealer's email (CRM tracking)
    EMAIL_CLICK = "email-click"  # the customer clicked a link in one
    EXPRESS_CONSENT = "express-consent"  # with its source and proof
    WITHDRAWN = "consent-withdrawn"


IMPLIED = frozenset(Interaction) - {Interaction.EXPRESS_CONSENT, Interaction.WITHDRAWN}


class Topic(enum.StrEnum):
    """What a commercial message is about, for opt-ins recorded per channel and party."""

    DEALER_MARKETING = "dealer-marketing"
    SERVICE_FOLLOW_UP = "service-follow-up"
    THIRD_PARTY = "third-party"


class Channel(enum.StrEnum):
    """The channel an opt-in or opt-out is about: only ``email`` bears on email."""

    EMAIL = "email"
    SMS = "sms"
    PHONE = "phone"
    POST = "post"


# How CRMs and DMSs spell the channels, compared without case, spaces, hyphens or
# underscores ("E-Mail", "e_mail" and "EMAIL" are one). "mail" is email: that is what a
# CRM's "Mail opt-out" flag means next to its SMS and phone flags; paper is "post".
CHANNEL_SPELLINGS: Mapping[str, Channel] = MappingProxyType(
    {
        "email": Channel.EMAIL,
        "mail": Channel.EMAIL,
        "electronicmail": Channel.EMAIL,
        "emailaddress": Channel.EMAIL,
        "sms": Channel.SMS,
        "text": Channel.SMS,
        "textmessage": Channel.SMS,
        "mobile": Channel.SMS,
        "phone": Channel.PHONE,
        "telephone": Channel.PHONE,
        "call": Channel.PHONE,
        "voice": Channel.PHONE,
        "post": Channel.POST,
        "postal": Channel.POST,
        "postalmail": Channel.POST,
        "directmail": Channel.POST,
        "letter": Channel.POST,
    }
)
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def channel_of(text: str) -> Channel | None:
    """The channel ``text`` names (``"E-Mail"`` is email), or ``None`` for an unknown one."""
    return CHANNEL_SPELLINGS.get(_NOT_ALNUM.sub("", text.lower()))


_TOPIC_WORDS = {
    Topic.DEALER_MARKETING: "marketing email from the dealer",
    Topic.SERVICE_FOLLOW_UP: "service follow-up email",
    Topic.THIRD_PARTY: "email offers from third parties",
}

_KIND_WORDS = {
    Interaction.INQUIRY: "an inquiry",
    Interaction.SALE_CASH: "a cash sale",
    Interaction.SALE_FINANCE: "a finance or lease sale",
    Interaction.SALE_PARTS: "a parts sale",
    Interaction.SERVICE: "a service repair order",
    Interaction.OTHER_TRANSACTION: "a purchase",
    Interaction.SHOWROOM: "a showroom visit",
    Interaction.EMAIL_REPLY: "an email reply",
    Interaction.EMAIL_OPEN: "an email opened",
    Interaction.EMAIL_CLICK: "a click in an email",
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

    def longer_than(self, other: Window) -> bool:
        """True when this window ends later than ``other`` from some start day.

        Checked from the start of every month of a leap-year cycle's first year and from
        month ends, which is where calendar months differ in length.
        """
        starts = [date(2023, m, d) for m in range(1, 13) for d in (1, 28)] + [date(2024, 2, 29)]
        return any(self.end(s) > other.end(s) for s in starts)

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
        """The day its window opens: the last payment of a finance deal, else its date.

        Only a finance or lease sale has payments (CASL s. 10(10)(c), a written contract);
        a last payment stored with another kind moves nothing.
        """
        if (
            self.kind is Interaction.SALE_FINANCE
            and self.last_payment is not None
            and self.last_payment > self.on
        ):
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
    channel: str = "email"  # a ``Channel`` value; older rows may hold another spelling


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
    ``law`` names the law a legal preset implements ("CASL"); the loader refuses rules
    that loosen it and still carry its name. ``zone`` is the dealer's time zone: days are
    its days.
    """

    enforce: bool = False
    name: str = ""  # how reasons name the rules: "CASL implied-consent"
    windows: Mapping[Interaction, Window] = field(default_factory=lambda: MappingProxyType({}))
    express_consent: bool = True  # express consent counts until withdrawn
    require_opt_in: bool = False
    require_postal_address: bool = False
    require_unsubscribe: bool = False
    postal_address: str = ""
    law: str = ""
    zone: tzinfo = UTC
    preset: str = ""  # the preset the rules come from, for the evidence ledger
    refused_dsn: bool = False  # a DSN to the sender for each recipient left out (ledger.py)
    # GDPR: flag an opt-in or express consent older than this for review (None: never).
    review_after: Window | None = None
    # The dealer's CRM webhook for consent statements (gateway/consent/sync.py): its URL,
    # the secret file (relative to the policies directory) and the CRM's words per kind.
    crm_webhook_url: str = ""
    crm_secret_file: str = ""
    crm_vocabulary: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


NO_RULES = ConsentRules()  # a dealer without [consent] rules: nothing is checked


def day_of(moment: datetime, rules: ConsentRules) -> date:
    """The dealer's calendar day of ``moment`` (a naive time is taken as UTC)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(rules.zone).date()


@dataclass(frozen=True, slots=True)
class Block:
    """A suppression of the recipient, as the store holds it (``find_suppression``).

    ``commercial_only``: an unsubscribe, which stops commercial mail and leaves receipts
    alone; otherwise (a spam complaint, a hard bounce, an operator's entry) RCPT TO
    refuses every message to the address.
    """

    reason: str
    since: datetime
    source: str = ""
    commercial_only: bool = False

    def words(self) -> str:
        """``suppressed since 2026-01-02 (spam complaint)``."""
        return f"suppressed since {self.since:%Y-%m-%d} ({self.reason})"


@dataclass(frozen=True, slots=True)
class Eligibility:
    """Whether one recipient may get one message, and why.

    ``until`` is the last day of eligibility (``None``: no end while nothing changes, or
    not eligible); ``basis`` the event the decision rests on (``None``: no event, e.g. an
    exemption or a preference); ``preference`` the opt-in or opt-out it rests on, if one.
    ``code`` is the finding code when not eligible (``SUPPRESSED`` for a suppression,
    which RCPT TO refuses before any check).
    """

    eligible: bool
    reason: str
    until: date | None = None
    basis: ConsentEvent | None = None
    code: str | None = None
    preference: Preference | None = None
    # The statement it rests on is older than the rules' ``review_after``: still valid, but
    # the dealer should ask the customer to confirm it (the day it became due).
    review_since: date | None = None


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


@dataclass(frozen=True, slots=True)
class _Statement:
    """An explicit yes or no about a topic: an opt-in or opt-out, express consent, withdrawal."""

    day: date  # the dealer's day
    at: datetime | None  # the full time, None when only the day is known (events)
    granted: bool
    words: str
    event: ConsentEvent | None = None
    preference: Preference | None = None


def _statements(record: ConsentRecord, rules: ConsentRules, topic: Topic) -> list[_Statement]:
    found: list[_Statement] = []
    for pref in record.preferences:
        # Only email preferences bear on email (an SMS opt-out says nothing about email).
        if pref.topic is topic and channel_of(pref.channel) is Channel.EMAIL:
            what = "opted in to" if pref.granted else "opted out of"
            via = f" ({pref.source})" if pref.source else ""
            day = day_of(pref.at, rules)
            words = f"{what} {_TOPIC_WORDS[topic]} on {day}{via}"
            found.append(_Statement(day, pref.at, pref.granted, words, preference=pref))
    for event in record.events:
        via = f" ({event.source})" if event.source else ""
        if event.kind is Interaction.WITHDRAWN:
            words = f"withdrew consent on {event.on}{via}"
            found.append(_Statement(event.on, None, False, words, event))
        elif event.kind is Interaction.EXPRESS_CONSENT and topic is not Topic.THIRD_PARTY:
            words = f"gave express consent on {event.on}{via}"
            found.append(_Statement(event.on, None, True, words, event))
    return found


def _latest_statement(
    record: ConsentRecord, rules: ConsentRules, topic: Topic
) -> _Statement | None:
    """The statement that decides: the latest by full time; a refusal wins a tie.

    A statement known only by its day ties with every statement of that day, since which
    came first cannot be known; among ties the refusal wins (the safe reading).
    """
    found = _statements(record, rules, topic)
    if not found:
        return None
    last_day = max(s.day for s in found)
    that_day = [s for s in found if s.day == last_day]
    timed = [s for s in that_day if s.at is not None]
    latest_time = max((s.at for s in timed if s.at is not None), default=None)
    contenders = [s for s in that_day if s.at is None or s.at == latest_time]
    refusals = [s for s in contenders if not s.granted]
    return (refusals or contenders)[-1]


def _windows(record: ConsentRecord, rules: ConsentRules) -> list[tuple[date, ConsentEvent]]:
    """Each implied-consent event with the last day of the window it opens."""
    out = []
    for event in record.events:
        window = rules.windows.get(event.kind)
        if window is not None and event.kind in IMPLIED:
            out.append((window.end(event.anchor), event))
    return out


def _blocked(block: Block, category: str) -> Eligibility | None:
    if block.commercial_only and category in EXEMPT_CATEGORIES:
        return None
    via = f", {block.source}" if block.source else ""
    what = "commercial mail" if block.commercial_only else "all mail"
    return Eligibility(
        False,
        f"the recipient is {block.words()}{via}: {what} to it is refused",
        code=SUPPRESSED,
    )


def evaluate(
    record: ConsentRecord,
    rules: ConsentRules,
    now: datetime,
    category: str = "commercial",
    topic: Topic = Topic.DEALER_MARKETING,
    block: Block | None = None,
) -> Eligibility:
    """Decide whether the recipient of ``record`` may get a ``category`` message ``now``.

    See the module docstring for the order of the rules; ``block`` is the recipient's
    active suppression, if any, and decides first. The reason is a sentence fragment
    meant for an SMTP reply and for ``mailgate consent show``.
    """
    if block is not None:
        refused = _blocked(block, category)
        if refused is not None:
            return refused
    if category in EXEMPT_CATEGORIES:
        return Eligibility(True, f"{category} message: consent windows and opt-ins do not apply")
    if not rules.enforce:
        return Eligibility(True, "the dealer's policy enforces no consent rules")
    name = rules.name or "consent"
    statement = _latest_statement(record, rules, topic)
    if statement is not None:
        if not statement.granted:
            return Eligibility(
                False,
                f"the recipient {statement.words}",
                None,
                statement.event,
                NO_OPT_IN,
                statement.preference,
            )
        if rules.express_consent or rules.require_opt_in:
            review = None
            if rules.review_after is not None:
                due = rules.review_after.end(statement.day)
                review = due if due < day_of(now, rules) else None
            words = f"the recipient {statement.words}; valid until withdrawn"
            if review is not None:
                words += f" (older than {rules.review_after}: due for review since {review})"
            return Eligibility(
                True,
                words,
                None,
                statement.event,
                preference=statement.preference,
                review_since=review,
            )
    if rules.require_opt_in:
        return Eligibility(
            False,
            f"no opt-in to {_TOPIC_WORDS[topic]} on record ({name} rules need one)",
            code=NO_OPT_IN,
        )
    if not rules.windows:
        return Eligibility(True, f"no consent windows under the {name} rules; not opted out")
    today = day_of(now, rules)
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
    """One event as ``consent show`` lists it: the window it opens and until when.

    ``void`` says why an interaction that would open a window opens none under the rules
    as they apply to this recipient now (a withdrawal, rules that need an opt-in); empty
    when it counts.
    """

    event: ConsentEvent
    window: Window | None  # None: the rules give this kind no window (or it is void)
    ends: date | None
    void: str = ""


@dataclass(frozen=True, slots=True)
class Explanation:
    """A recipient's whole standing for a dealer: events, preferences, verdict, renewal.

    ``transactional`` is the answer for transactional mail (only a suppression stops it);
    ``block`` the suppression, if any.
    """

    address: str
    rules: ConsentRules
    events: tuple[EventLine, ...]
    preferences: tuple[Preference, ...]
    eligibility: Mapping[Topic, Eligibility]
    renewal: str
    transactional: Eligibility = Eligibility(True, "transactional mail is not checked")
    block: Block | None = None


def renewal_summary(rules: ConsentRules) -> str:
    """What makes a locked customer eligible again under ``rules``, for the status page."""
    if not rules.enforce:
        return "The dealer's policy enforces no consent rules."
    if rules.require_opt_in:
        return "A locked customer becomes eligible again only when the CRM records an opt-in."
    if not rules.windows:
        return (
            "A locked customer opted out or withdrew consent: only a new opt-in or express "
            "consent makes them eligible again."
        )
    express = " or express consent" if rules.express_consent else ""
    return (
        f"A locked customer becomes eligible again with their next recorded interaction{express}, "
        "except one who withdrew consent or opted out: only a new opt-in or express consent "
        "renews that customer."
    )


def _renewal(rules: ConsentRules, refusal: _Statement | None) -> str:
    if not rules.enforce:
        return "nothing to renew: the dealer's policy enforces no consent rules"
    if refusal is not None:
        # Rule 3: after a withdrawal or opt-out, interactions do not renew consent.
        return (
            f"only express consent or an opt-in recorded after the recipient {refusal.words}; "
            "new interactions do not renew consent after a withdrawal or an opt-out"
        )
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
    block: Block | None = None,
) -> Explanation:
    """Lay out ``record`` under ``rules`` at ``now`` for an operator or a dealer.

    The verdicts are ``evaluate``'s, and the event lines and the renewal follow the rules
    as they applied: after a withdrawal an interaction opens no window, and the renewal
    says so.
    """
    verdicts = {topic: evaluate(record, rules, now, "commercial", topic, block) for topic in topics}
    # Event lines are shown for the dealer's own marketing; a withdrawal covers every topic.
    latest = _latest_statement(record, rules, Topic.DEALER_MARKETING) if rules.enforce else None
    refusal = latest if latest is not None and not latest.granted else None
    lines = []
    for event in sorted(record.events, key=lambda e: (e.on, e.kind.value, e.ref)):
        window = rules.windows.get(event.kind) if event.kind in IMPLIED else None
        void = ""
        if event.kind in IMPLIED and rules.enforce and rules.require_opt_in:
            void = f"opens no window: the {rules.name or 'consent'} rules need an opt-in"
        elif window is not None and refusal is not None:
            void = f"opens no window: the recipient {refusal.words}"
        if void:
            window = None
        lines.append(EventLine(event, window, window.end(event.anchor) if window else None, void))
    return Explanation(
        address=address,
        rules=rules,
        events=tuple(lines),
        preferences=tuple(sorted(record.preferences, key=lambda p: (p.topic.value, p.at))),
        eligibility=MappingProxyType(verdicts),
        renewal=_renewal(rules, refusal),
        transactional=evaluate(record, rules, now, "transactional", block=block),
        block=block,
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
