"""One row of a CRM's consent data: the columns ``mailgate consent import`` and the API read.

``COLUMNS`` is the file format for the shared reader (``gateway.mail.addresslists``:
unknown, repeated and missing columns are refused by name before any row), ``map_header``
applies an operator's column mapping to a CRM export's header first, and ``parse_row``
turns one row (a CSV line read as a dict, or the JSON body of ``POST
/api/dealers/{dealer}/consent``) into a ``ConsentEvent`` or a ``Preference``, or raises
``RowError`` saying what is wrong. Pure: the callers read the file or the request, and
pass the time (``RowContext.now``).

Columns (names compared without case; others are refused unless the import is told to
ignore them, or mapped onto these with ``--map``):

* ``dealer`` (or the caller's default), ``address``: one address as RCPT TO accepts it
  (``gateway.mail.addresses.check``: no angle brackets, no second address, no ``;``);
* ``event``: one of ``EVENTS`` (the interactions, ``express-consent``,
  ``consent-withdrawn``, ``opt-in``, ``opt-out``);
* ``date``: ``YYYY-MM-DD``; an opt-in or opt-out may carry a time
  (``2025-01-02T10:00:00-05:00``; without an offset it is the dealer's local time).
  Dates are strict (no ISO week dates, no trailing digits) and never later than today
  plus ``CLOCK_SKEW``;
* ``last_payment``: a finance or lease sale only (``sale-finance``), not before its date;
* ``reference``, ``source``, ``proof`` (what shows express consent);
* ``topic`` (opt-in/opt-out: dealer-marketing, service-follow-up, third-party);
* ``channel``: email (the default; ``E-mail``, ``E-Mail``, ``mail`` are email), sms, phone
  or post. Only email statements bear on email; an event row must be about email.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from gateway.consent.rules import (
    Channel,
    ConsentEvent,
    ConsentRules,
    Interaction,
    Preference,
    Topic,
    channel_of,
    day_of,
    normalise_address,
)
from gateway.mail.addresses import check as address_problem
from gateway.mail.addresslists import Columns
from gateway.types import DealerId

__all__ = [
    "CLOCK_SKEW",
    "COLUMNS",
    "COLUMNS_IGNORING_UNKNOWN",
    "EVENTS",
    "PREFERENCE_EVENTS",
    "REQUIRED_COLUMNS",
    "RowContext",
    "RowError",
    "map_header",
    "parse_row",
]

PREFERENCE_EVENTS = {"opt-in": True, "opt-out": False}
EVENTS = (*(kind.value for kind in Interaction), *PREFERENCE_EVENTS)
REQUIRED_COLUMNS = frozenset({"address", "event", "date"})
# The file format for ``gateway.mail.addresslists.read_rows``: a header is required and an
# unknown column refuses the file (issue 17 B11: a misspelt "Last Payment" was dropped and
# every finance sale imported without its payments), unless the import is told to leave
# such columns out (``COLUMNS_IGNORING_UNKNOWN``) or maps them (``map_header``).
COLUMNS = Columns(
    names=(
        "dealer",
        "address",
        "event",
        "date",
        "last_payment",
        "reference",
        "source",
        "proof",
        "topic",
        "channel",
    ),
    required=REQUIRED_COLUMNS,
    unknown="refuse",
)
COLUMNS_IGNORING_UNKNOWN = Columns(COLUMNS.names, REQUIRED_COLUMNS, unknown="ignore")
# A DMS clock a little ahead, or a row dated in a time zone east of the dealer's: a day.
CLOCK_SKEW = timedelta(days=1)

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MOMENT = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})?$"
)


class RowError(ValueError):
    """A row (or a header) that cannot be recorded; the message says why."""


@dataclass(frozen=True, slots=True)
class RowContext:
    """What a row is read against.

    ``now`` bounds dates (nothing later than now plus ``CLOCK_SKEW``); ``dealer`` is the
    dealer of a row without a ``dealer`` column; ``rules``, when given, are the dealers
    that exist, with their rules (a row naming another dealer is refused; a time without
    an offset is read in the dealer's time zone, UTC otherwise).
    """

    now: datetime
    dealer: str | None = None
    rules: Mapping[str, ConsentRules] | None = None


def _fold(name: str) -> str:
    return " ".join(name.strip().lower().split())


def map_header(cells: Sequence[str], mapping: Mapping[str, str]) -> list[str]:
    """The header ``cells`` with a CRM's own names replaced by ours (``--map``).

    ``mapping`` maps a header name (compared without case or extra spaces) onto one of
    ``COLUMNS``, for exports whose headers differ (``{"Email Address": "address"}``).
    Raises ``RowError`` for a mapping onto no column.
    """
    wanted = {_fold(k): v.strip().lower() for k, v in mapping.items()}
    for source, target in wanted.items():
        if target not in COLUMNS.names:
            raise RowError(
                f"the mapping {source!r}={target!r} names no column; "
                f"use one of {', '.join(COLUMNS.names)}"
            )
    return [wanted.get(_fold(cell), cell) for cell in cells]


def _day(text: str, column: str) -> date:
    text = text.strip()
    if _DATE.match(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise RowError(f"{column} {text!r} is not a date (YYYY-MM-DD)")


def _moment(text: str, rules: ConsentRules) -> datetime:
    text = text.strip()
    if _DATE.match(text):
        return datetime.combine(_day(text, "date"), datetime.min.time(), rules.zone)
    if _MOMENT.match(text):
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            # RFC 3339 §4.4 leaves a time without an offset local: the dealer's.
            return when if when.tzinfo else when.replace(tzinfo=rules.zone)
    raise RowError(
        f"date {text!r} is not a date or time (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM])"
    )


def _not_future(day: date, column: str, ctx: RowContext, rules: ConsentRules) -> date:
    latest = day_of(ctx.now + CLOCK_SKEW, rules)
    if day > latest:
        raise RowError(f"{column} {day.isoformat()} is in the future")
    return day


def _address(text: str) -> str:
    candidate = text.strip()
    problem = address_problem(candidate)
    if problem is not None:
        raise RowError(
            f"address {text!r} is not one e-mail address as RCPT TO accepts it "
            "(local@domain, no angle brackets, one address per row)"
        )
    return normalise_address(candidate)


def _channel(text: str) -> Channel:
    channel = channel_of(text or "email")
    if channel is None:
        raise RowError(
            f"channel {text.strip()!r} is not one of {', '.join(Channel)} "
            "(E-mail, E-Mail and mail are email)"
        )
    return channel


def parse_row(row: Mapping[str, str], ctx: RowContext) -> ConsentEvent | Preference:
    """One row as an event or a preference; raises ``RowError`` saying what is wrong."""
    dealer_id = (row.get("dealer") or ctx.dealer or "").strip()
    if not dealer_id:
        raise RowError("no dealer (a dealer column or --dealer)")
    rules = ConsentRules()
    if ctx.rules is not None:
        if dealer_id not in ctx.rules:
            raise RowError(f"dealer {dealer_id!r} has no policy file")
        rules = ctx.rules[dealer_id]
    address = _address(row.get("address") or "")
    event = (row.get("event") or "").strip().lower()
    when = row.get("date") or ""
    if not when.strip():
        raise RowError("no date")
    source = (row.get("source") or "").strip()
    channel = _channel(row.get("channel") or "")
    paid = (row.get("last_payment") or "").strip()
    if event in PREFERENCE_EVENTS:
        topic_text = (row.get("topic") or Topic.DEALER_MARKETING.value).strip().lower()
        try:
            topic = Topic(topic_text)
        except ValueError:
            raise RowError(f"topic {topic_text!r} is not one of {', '.join(Topic)}") from None
        if paid:
            raise RowError("last_payment is for a finance or lease sale (sale-finance) only")
        at = _moment(when, rules)
        if at > ctx.now + CLOCK_SKEW:
            raise RowError(f"date {when.strip()!r} is in the future")
        return Preference(
            DealerId(dealer_id), address, topic, PREFERENCE_EVENTS[event], at, source, channel.value
        )
    try:
        kind = Interaction(event)
    except ValueError:
        raise RowError(f"event {event!r} is not one of {', '.join(EVENTS)}") from None
    if channel is not Channel.EMAIL:
        raise RowError(
            f"a {kind} event on channel {channel} says nothing about email; leave it out"
        )
    on = _not_future(_day(when, "date"), "date", ctx, rules)
    last_payment = None
    if paid:
        if kind is not Interaction.SALE_FINANCE:
            raise RowError(
                f"last_payment is for a finance or lease sale (sale-finance) only, not {kind}"
            )
        last_payment = _not_future(_day(paid, "last_payment"), "last_payment", ctx, rules)
        if last_payment < on:
            raise RowError(f"last_payment {paid} is before the sale of {on.isoformat()}")
    return ConsentEvent(
        DealerId(dealer_id),
        address,
        kind,
        on,
        last_payment,
        (row.get("reference") or "").strip(),
        source,
        (row.get("proof") or "").strip(),
    )
