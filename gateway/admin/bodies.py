"""The JSON request bodies the admin API accepts (pydantic models).

Unknown keys are errors, as everywhere at our edges; the OpenAPI description takes the
request schemas from these models (``admin/endpoints.py``), so what is documented is what
is validated.
"""

from __future__ import annotations

import builtins
import re
from datetime import UTC, date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.config import JsonDict

from gateway.admin.ops import BLANK, MAX_IMPORT, MAX_LIMIT
from gateway.consent.csvformat import PREFERENCE_EVENTS
from gateway.consent.rules import CHANNEL_SPELLINGS, Channel, Interaction, Topic

# What each pattern below allows is what the handlers then accept: a schema-valid request is
# never refused for its form, and what the schema refuses is refused (400) by these models
# before any handler runs. Character classes are spelled out (no \d, \s) because JSON
# Schema (ECMA-262), pydantic (Rust regex) and Python's re disagree on what they match.

# Something other than the blanks check_reason strips: a reason cannot be blank.
SOMETHING = r"[^ \t\n\r\x0b\x0c]"
assert BLANK == " \t\n\r\x0b\x0c"  # the same characters
# A positive duration parse_duration reads ("90s", "72h", "1.5d"), at most ~1,900 years so
# that now + duration stays a date.
DURATION = r"^ *[1-9][0-9]{0,4}(\.[0-9]{1,3})? *(ms|s|m|h|d|w)? *$"
# The characters Python's str.isspace() calls whitespace (consent.csvformat refuses them).
_SPACES = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
    "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# An address as RCPT TO takes it (``mail.addresses.check``), which the consent import also
# requires: a dot-atom local part without the routing characters % and !, and a DNS domain
# of letters, digits and hyphens with an alphabetic top-level label (no IP literal).
_ATOM = "[A-Za-z0-9#$&'*+/=?^_`{|}~-]{1,64}"
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
CONSENT_ADDRESS = f"^{_ATOM}(?:\\.{_ATOM}){{0,8}}@(?:{_LABEL}\\.){{1,8}}[A-Za-z]{{2,24}}$"
# Canonical base64 (RFC 4648 §4, padded, no line breaks): what b64decode(validate=True) takes.
BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
# A channel as ``consent.rules.channel_of`` reads it: one of its spellings, in any case, with
# anything but letters and digits anywhere ("E-Mail", "e_mail"), or empty (email).
_SEP = "[^0-9A-Za-z]*"


def _spelled(channels: frozenset[Channel]) -> str:
    """A pattern for the spellings of ``channels``, or the empty string."""
    return (
        f"^(|{_SEP}("
        + "|".join(
            _SEP.join(f"[{c}{c.upper()}]" if c.isalpha() else c for c in spelling)
            for spelling, channel in sorted(CHANNEL_SPELLINGS.items())
            if channel in channels
        )
        + f"){_SEP})$"
    )


CHANNEL = _spelled(frozenset(Channel))
EMAIL_CHANNEL = _spelled(frozenset({Channel.EMAIL}))  # an interaction: about e-mail, or empty
# What a pattern means, for the 400 answer (pydantic would quote the pattern).
PATTERN_WORDS = {
    SOMETHING: "must not be blank",
    DURATION: "not a duration: give a positive number and a unit, e.g. 30m, 72h or 5d",
    CONSENT_ADDRESS: "not one e-mail address as RCPT TO accepts it (local@domain, no angle "
    "brackets)",
    CHANNEL: "not a channel: email, sms, phone or post (E-mail, E-Mail and mail are email)",
    BASE64: "not base64 (RFC 4648, padded, without line breaks)",
}
EVENTS = (*(i.value for i in Interaction), *PREFERENCE_EVENTS)
TOPICS = ("", *(t.value for t in Topic))
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_DAY_SCHEMA: JsonDict = {"type": "string", "format": "date"}
# A consent statement is not dated after tomorrow (B9); a schema cannot say "tomorrow", so
# it bounds the year by the one this process started in (what falls between tomorrow and the
# new year is the only part it cannot tell the client in advance).
_THIS_YEAR = datetime.now(UTC).year
NOT_FUTURE_YEAR = (
    "^([01][0-9]{3}|" + "|".join(str(year) for year in range(2000, _THIS_YEAR + 1)) + ")-"
)
_MOMENT_SCHEMA: JsonDict = {
    "anyOf": [_DAY_SCHEMA, {"type": "string", "format": "date-time"}],
    "pattern": NOT_FUTURE_YEAR,
}
_PAYMENT_SCHEMA: JsonDict = {"anyOf": [{"const": ""}, _DAY_SCHEMA]}


def _day(text: str) -> str:
    """``text`` if it is an RFC 3339 full-date (a real day), else ``ValueError``."""
    if not _DATE.fullmatch(text):
        raise ValueError("not a date (YYYY-MM-DD)")
    date.fromisoformat(text)
    return text


def _moment(text: str) -> str:
    """An RFC 3339 full-date or date-time, normalised for ``datetime.fromisoformat``."""
    if _DATE.fullmatch(text):
        return _day(text)
    if not _DATE_TIME.fullmatch(text):
        raise ValueError("not a date (YYYY-MM-DD) or an RFC 3339 date-time")
    normal = text[:10] + "T" + text[11:].upper()
    datetime.fromisoformat(normal)
    return normal


class Body(BaseModel):
    """The base of every body: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ReasonBody(Body):
    """A change that needs a reason; ``by`` names the operator (default: the token)."""

    reason: str = Field(min_length=1, max_length=500, pattern=SOMETHING)
    by: str = Field(default="", max_length=100)


class DealerChangeBody(ReasonBody):
    """Suspend or resume a dealer.

    ``reason`` is what the dealer is shown (the SMTP reply to its CRM, its status page, the
    alert e-mail): write it for the dealer. ``note`` is internal: it stays in the history
    and the logs and is shown to operators only.
    """

    note: str = Field(default="", max_length=1000)


class SuspendBody(DealerChangeBody):
    """Suspend a dealer, optionally for a time (``for``: e.g. ``72h``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    duration: str | None = Field(default=None, alias="for", max_length=20, pattern=DURATION)


class SuppressBody(Body):
    """Add addresses to one list (a dealer id, or ``*`` for the global list)."""

    list: str = Field(min_length=1, max_length=100)
    addresses: builtins.list[str] = Field(min_length=1, max_length=MAX_LIMIT)
    reason: str = Field(min_length=1, max_length=500, pattern=SOMETHING)
    by: str = Field(default="", max_length=100)
    expires_at: datetime | None = None


class LiftBody(Body):
    """Lift one address's active entry on one list."""

    list: str = Field(min_length=1, max_length=100)
    address: str = Field(min_length=1, max_length=320)
    reason: str = Field(min_length=1, max_length=500, pattern=SOMETHING)
    by: str = Field(default="", max_length=100)


class ImportEntry(Body):
    """One row of an import."""

    address: str = Field(max_length=320)
    reason: str = Field(default="", max_length=500)


class ImportBody(Body):
    """Entries to add to one list (up to 10,000 per request)."""

    list: str = Field(min_length=1, max_length=100)
    reason: str = Field(default="imported", min_length=1, max_length=500, pattern=SOMETHING)
    source: str = Field(default="", max_length=200)
    entries: builtins.list[ImportEntry] = Field(max_length=MAX_IMPORT)


class ConsentEventBody(Body):
    """One interaction or opt-in, as a row of ``mailgate consent import`` (same fields)."""

    # Only a finance or lease sale has a last payment (B10), and only an opt-in or opt-out
    # may be about another channel: said in the schema too, so that a body the document
    # calls valid is one the handler takes.
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {"not": {"properties": {"event": {"const": "sale-finance"}}}},
                    "then": {"properties": {"last_payment": {"const": ""}}},
                },
                {
                    "if": {"not": {"properties": {"event": {"enum": list(PREFERENCE_EVENTS)}}}},
                    "then": {
                        "properties": {
                            "channel": {"type": "string", "pattern": EMAIL_CHANNEL},
                            # an interaction is dated by its day
                            "date": {**_DAY_SCHEMA, "pattern": NOT_FUTURE_YEAR},
                        }
                    },
                },
            ]
        }
    )

    address: str = Field(min_length=3, max_length=254, pattern=CONSENT_ADDRESS)
    event: Literal[EVENTS] = Field(description="an interaction, or opt-in / opt-out")  # type: ignore[valid-type]
    date: str = Field(
        max_length=40,
        description="the day (YYYY-MM-DD); opt-in and opt-out may give an RFC 3339 date-time",
        json_schema_extra=_MOMENT_SCHEMA,
    )
    last_payment: str = Field(
        default="",
        max_length=10,
        description="finance or lease: the last payment's day (YYYY-MM-DD), or empty",
        json_schema_extra=_PAYMENT_SCHEMA,
    )
    reference: str = Field(default="", max_length=200)
    source: str = Field(default="", max_length=200)
    proof: str = Field(default="", max_length=500)
    topic: Literal[TOPICS] = Field(default="", description="opt-in / opt-out: the topic")  # type: ignore[valid-type]
    channel: str = Field(default="email", max_length=20, pattern=CHANNEL)

    @field_validator("date")
    @classmethod
    def _date_is_a_date(cls, value: str) -> str:
        return _moment(value)

    @field_validator("last_payment")
    @classmethod
    def _payment_is_a_day(cls, value: str) -> str:
        return _day(value) if value else value


class CheckBody(Body):
    """A message to check (``POST /api/check``): a whole message, or a template.

    Exactly one of ``eml`` (the message as text), ``eml_base64`` (its bytes in base64, for
    8-bit or binary content) and ``html`` (a template, sent as the body with ``subject``).
    The size limit is the submission listener's (``submission.max_message_size``).
    """

    # "Exactly one of", said in the schema too: the OpenAPI document is the contract, and a
    # body it calls valid must be one the handler accepts.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": [name], "properties": {name: {"type": "string"}}}
                for name in ("eml", "eml_base64", "html")
            ]
        }
    )

    eml: str | None = None
    eml_base64: str | None = Field(
        default=None,
        pattern=BASE64,
    )
    html: str | None = None
    subject: str = Field(default="", max_length=2000)
    with_text: bool = False  # with html: the CRM also sends a plain-text version
