"""The rows consent exports write: standings, ledger entries, refusals (pure).

One definition per export, shared by the CLI (``mailgate consent expiring|locked|evidence|
refused``) and the admin API, so a CSV from either has the same columns in the same order
and the JSON the same keys. Every value is text in the CSV (dates ISO 8601, times ISO 8601
with their offset, booleans ``true``/``false``, absent values empty); the JSON keeps the
types.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from gateway.consent.ledger import ConsentRefusal, LedgerEntry
from gateway.consent.rules import Eligibility

__all__ = [
    "LEDGER_FIELDS",
    "REFUSAL_FIELDS",
    "STANDING_FIELDS",
    "Standing",
    "csv_text",
    "ledger_json",
    "refusal_json",
    "standing_json",
]


@dataclass(frozen=True, slots=True)
class Standing:
    """One recipient's standing for the dealer's own marketing, as a list shows it."""

    address: str
    eligible: bool
    reason: str
    code: str | None = None
    until: date | None = None  # the last eligible day, when consent ends
    days_left: int | None = None  # days from today to ``until``
    basis: str = ""  # the event kind the answer rests on, if one
    basis_on: date | None = None
    review_since: date | None = None  # consent due for review since (GDPR), if so

    @classmethod
    def of(cls, address: str, verdict: Eligibility, today: date) -> Standing:
        """The standing ``verdict`` gives ``address`` on the dealer's day ``today``."""
        return cls(
            address=address,
            eligible=verdict.eligible,
            reason=verdict.reason,
            code=verdict.code,
            until=verdict.until,
            days_left=(verdict.until - today).days if verdict.until is not None else None,
            basis=verdict.basis.kind.value if verdict.basis is not None else "",
            basis_on=verdict.basis.on if verdict.basis is not None else None,
            review_since=verdict.review_since,
        )


STANDING_FIELDS = ("address", "eligible", "until", "days_left", "code", "basis", "basis_on",
                   "review_since", "reason")  # fmt: skip
LEDGER_FIELDS = (
    "message_id", "submission_id", "dealer", "recipient", "at", "category", "label", "topic",
    "rules", "law", "preset", "time_zone", "basis", "eligible", "event", "event_on", "last_payment",
    "reference", "source", "proof", "window", "window_ends", "statement_at", "reason",
)  # fmt: skip
REFUSAL_FIELDS = ("at", "recipient", "submission_id", "code", "action", "message_went_on", "dsn",
                  "detail")  # fmt: skip


def _iso(value: date | datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def standing_json(s: Standing) -> dict[str, Any]:
    """One standing as JSON data (keys: ``STANDING_FIELDS``)."""
    return {
        "address": s.address,
        "eligible": s.eligible,
        "until": _iso(s.until),
        "days_left": s.days_left,
        "code": s.code,
        "basis": s.basis or None,
        "basis_on": _iso(s.basis_on),
        "review_since": _iso(s.review_since),
        "reason": s.reason,
    }


def ledger_json(e: LedgerEntry) -> dict[str, Any]:
    """One ledger entry as JSON data (keys: ``LEDGER_FIELDS``)."""
    return {
        "message_id": e.message_id,
        "submission_id": e.submission_id,
        "dealer": e.dealer_id,
        "recipient": e.recipient,
        "at": _iso(e.at),
        "category": e.category,
        "label": e.label or None,
        "topic": e.topic,
        "rules": e.rules,
        "law": e.law or None,
        "preset": e.preset or None,
        "time_zone": e.time_zone,
        "basis": e.basis,
        "eligible": e.eligible,
        "event": e.event_kind or None,
        "event_on": _iso(e.event_on),
        "last_payment": _iso(e.last_payment),
        "reference": e.ref or None,
        "source": e.source or None,
        "proof": e.proof or None,
        "window": e.window or None,
        "window_ends": _iso(e.window_ends),
        "statement_at": _iso(e.statement_at),
        "reason": e.reason,
    }


def refusal_json(r: ConsentRefusal) -> dict[str, Any]:
    """One refusal as JSON data (keys: ``REFUSAL_FIELDS``)."""
    return {
        "at": _iso(r.at),
        "recipient": r.recipient,
        "submission_id": r.submission_id,
        "code": r.code,
        "action": r.action,
        "message_went_on": r.message_went_on,
        "dsn": r.dsn or None,
        "detail": r.detail,
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def csv_text(
    fields: Sequence[str], rows: Iterable[Mapping[str, Any]], header: bool = True
) -> Iterator[str]:
    """CSV text for ``rows`` (JSON data keyed by ``fields``), a chunk per row after the header."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180 §2
    if header:
        writer.writerow(fields)
    for row in rows:
        writer.writerow([_cell(row.get(name)) for name in fields])
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    if out.getvalue():
        yield out.getvalue()
