"""Consent statements for the dealer's CRM: what the gateway learnt, in the CRM's words (pure).

The gateway hears of refusals the CRM does not: a one-click unsubscribe, a spam complaint
from a mailbox provider, a withdrawal recorded through the admin API. Unless the CRM
hears of them it keeps generating the mail, and the gateway keeps refusing it. Each
becomes a ``Statement`` (one per suppression entry or withdrawal, with a stable ``id`` so
that the CRM can ignore one it already has), is written into the consent record as an
opt-out (``as_preference``: ``consent show`` names it), and is pushed to the dealer's
CRM (``consent.crm_webhook_url``, ``gateway/consent/sync.py``) and exported as CSV
(``mailgate consent statements``).

The push is a JSON ``POST`` (``payload``) signed like the gateway's alert webhook: the
``X-Mailgate-Signature`` header is ``sha256=`` and the hex HMAC-SHA256 of the body under
the dealer's shared secret (``gateway.tokens.Signer``); the body carries the time it was
made (``sent_at``), so a receiver can refuse an old one played back. ``status`` is the
word the dealer's CRM uses (``consent.crm_vocabulary``), ``kind`` ours.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.consent.rules import ConsentEvent, Preference, Topic, normalise_address
from gateway.reputation.records import UNSUBSCRIBE_REASON, Suppression
from gateway.tokens import Signer
from gateway.types import DealerId

__all__ = [
    "COMPLAINT_REASON",
    "STATEMENT_FIELDS",
    "Statement",
    "StatementKind",
    "as_preference",
    "from_suppression",
    "from_withdrawal",
    "payload",
    "signature",
    "statement_json",
]

COMPLAINT_REASON = "spam complaint"  # the reason feedback ingest gives a complaint


class StatementKind(enum.StrEnum):
    """What the customer said, as the gateway learnt it."""

    UNSUBSCRIBE = "unsubscribe"  # one-click, mailto or a provider's opt-out report
    COMPLAINT = "complaint"  # a spam complaint (feedback loop)
    WITHDRAWAL = "withdrawal"  # consent withdrawn, recorded through the API or an import


@dataclass(frozen=True, slots=True)
class Statement:
    """One refusal to tell the dealer's CRM about."""

    id: str  # stable: "s<suppression id>" or "w<address>:<date>"
    dealer_id: DealerId
    address: str
    kind: StatementKind
    at: datetime
    source: str = ""  # the report, the link, the file


def from_suppression(entry: Suppression) -> Statement | None:
    """The statement a dealer's suppression entry makes, or ``None`` (a bounce is none)."""
    if entry.dealer_id is None:
        return None  # the global list is the operator's, not a customer's word to a dealer
    if entry.reason == UNSUBSCRIBE_REASON:
        kind = StatementKind.UNSUBSCRIBE
    elif entry.reason == COMPLAINT_REASON:
        kind = StatementKind.COMPLAINT
    else:
        return None
    return Statement(
        f"s{entry.id}",
        entry.dealer_id,
        normalise_address(entry.address),
        kind,
        entry.created_at,
        entry.source,
    )


def from_withdrawal(recorded_at: datetime, event: ConsentEvent) -> Statement:
    """The statement a consent-withdrawn event makes (timed when it was recorded)."""
    return Statement(
        f"w{event.address}:{event.on.isoformat()}:{event.ref}",
        event.dealer_id,
        event.address,
        StatementKind.WITHDRAWAL,
        recorded_at,
        event.source,
    )


def as_preference(statement: Statement) -> Preference:
    """The opt-out the statement is, for the consent record (``consent show``)."""
    via = f"{statement.kind}: {statement.source}" if statement.source else str(statement.kind)
    return Preference(
        statement.dealer_id,
        statement.address,
        Topic.DEALER_MARKETING,
        False,
        statement.at,
        via[:200],
    )


STATEMENT_FIELDS = ("id", "dealer", "address", "kind", "status", "at", "source")


def statement_json(statement: Statement, vocabulary: Mapping[str, str]) -> dict[str, Any]:
    """One statement as JSON data (keys: ``STATEMENT_FIELDS``)."""
    return {
        "id": statement.id,
        "dealer": statement.dealer_id,
        "address": statement.address,
        "kind": statement.kind.value,
        "status": vocabulary.get(statement.kind.value, statement.kind.value),
        "at": statement.at.isoformat(),
        "source": statement.source,
    }


def payload(
    dealer_id: str,
    statements: Iterable[Statement],
    vocabulary: Mapping[str, str],
    sent_at: datetime,
) -> bytes:
    """The webhook body: ``{"dealer", "sent_at", "statements": [...]}``, UTF-8 JSON."""
    body = {
        "dealer": dealer_id,
        "sent_at": sent_at.isoformat(),
        "statements": [statement_json(s, vocabulary) for s in statements],
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def signature(secret: bytes, body: bytes) -> str:
    """``X-Mailgate-Signature``: ``sha256=<hex HMAC-SHA256 of body>`` (as the alert webhook)."""
    return "sha256=" + Signer(secret, size=32).tag(body).hex()
