"""One row of a CRM's consent data: the columns ``mailgate consent import`` and the API read.

``parse_row`` turns one row (a CSV line read as a dict, or the JSON body of ``POST
/api/dealers/{dealer}/consent``) into a ``ConsentEvent`` or a ``Preference``, or raises
``RowError`` saying what is wrong. Pure: the callers read the file or the request.

Columns (names lower-case; unknown columns are ignored): ``dealer`` (or the caller's
default), ``address``, ``event`` (inquiry, sale-cash, sale-finance, service-repair-order,
showroom-visit, email-reply, express-consent, consent-withdrawn, opt-in, opt-out),
``date`` (YYYY-MM-DD; opt-in/opt-out may carry a time), and optionally ``last_payment``
(finance or lease), ``reference``, ``source``, ``proof`` (express consent) and ``topic``
(opt-in/opt-out: dealer-marketing, service-follow-up, third-party; ``channel`` defaults
to email).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time

from gateway.consent.rules import (
    ConsentEvent,
    Interaction,
    Preference,
    Topic,
    normalise_address,
)
from gateway.mail.addresslists import Columns
from gateway.types import DealerId

__all__ = ["COLUMNS", "PREFERENCE_EVENTS", "REQUIRED_COLUMNS", "RowError", "parse_row"]

PREFERENCE_EVENTS = {"opt-in": True, "opt-out": False}
REQUIRED_COLUMNS = frozenset({"address", "event", "date"})
# The file format for ``gateway.mail.addresslists.read_rows``: a header is required, and
# unknown columns are ignored (a CRM export carries many the import does not read).
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
    unknown="ignore",
)


class RowError(ValueError):
    """A row that cannot be recorded; the message says why."""


def _day(text: str, column: str) -> date:
    try:
        return date.fromisoformat(text.strip()[:10])
    except ValueError:
        raise RowError(f"{column} {text!r} is not a date (YYYY-MM-DD)") from None


def _moment(text: str) -> datetime:
    text = text.strip()
    try:
        when = datetime.fromisoformat(text) if len(text) > 10 else None
    except ValueError:
        raise RowError(f"date {text!r} is not a date or time (ISO 8601)") from None
    if when is None:
        return datetime.combine(_day(text, "date"), time(), UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_row(
    row: Mapping[str, str], dealer: str | None, dealers: frozenset[str] | None
) -> ConsentEvent | Preference:
    """One row as an event or a preference; raises ``RowError`` saying what is wrong.

    ``dealer`` is the dealer of a row without a ``dealer`` column; ``dealers``, when
    given, are the dealers that exist (a row naming another is refused).
    """
    dealer_id = (row.get("dealer") or dealer or "").strip()
    if not dealer_id:
        raise RowError("no dealer (a dealer column or --dealer)")
    if dealers is not None and dealer_id not in dealers:
        raise RowError(f"dealer {dealer_id!r} has no policy file")
    address = normalise_address(row.get("address") or "")
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in address):
        raise RowError(f"address {row.get('address')!r} is not an e-mail address")
    event = (row.get("event") or "").strip().lower()
    when = row.get("date") or ""
    if not when.strip():
        raise RowError("no date")
    source = (row.get("source") or "").strip()
    if event in PREFERENCE_EVENTS:
        topic_text = (row.get("topic") or Topic.DEALER_MARKETING.value).strip().lower()
        try:
            topic = Topic(topic_text)
        except ValueError:
            raise RowError(f"topic {topic_text!r} is not one of {', '.join(Topic)}") from None
        return Preference(
            DealerId(dealer_id),
            address,
            topic,
            PREFERENCE_EVENTS[event],
            _moment(when),
            source,
            (row.get("channel") or "email").strip().lower(),
        )
    try:
        kind = Interaction(event)
    except ValueError:
        known = ", ".join([*Interaction, *PREFERENCE_EVENTS])
        raise RowError(f"event {event!r} is not one of {known}") from None
    paid = row.get("last_payment") or ""
    return ConsentEvent(
        DealerId(dealer_id),
        address,
        kind,
        _day(when, "date"),
        _day(paid, "last_payment") if paid.strip() else None,
        (row.get("reference") or "").strip(),
        source,
        (row.get("proof") or "").strip(),
    )
