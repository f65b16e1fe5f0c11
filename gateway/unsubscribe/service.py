"""One-click unsubscribe (RFC 8058, RFC 2369): the links, their tokens and what a click does.

Each commercial copy gets ``List-Unsubscribe: <https://…/u/TOKEN>, <mailto:…>`` and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``, added by intake before signing (RFC
8058 §4: both fields must be covered by the DKIM signature, which ``signing.OVERSIGNED``
does). The token names the dealer, the recipient and the message, with an HMAC-SHA256
tag (128 bits) under a key derived from the gateway's reference key, in lower-case
base32: it cannot be forged or guessed from another recipient's, and it needs no lookup,
so a link works for as long as the key does (the sent log is kept for 30 days; people
unsubscribe from year-old mail).

A POST to the link suppresses the recipient for the dealer at once, through the feedback
store: an ``unsubscribe`` event plus a suppression in one transaction, idempotent on the
event's replay key (message, kind, recipient). So a second click changes nothing, and a
replayed token does not undo an operator's later ``mailgate suppress remove``.

A GET shows a page with a button that POSTs (RFC 8058 §3.2: the GET must not unsubscribe,
because mail scanners fetch every link). The mailto (RFC 2369) goes to the inbound report
address with the token in the subject; the inbound listener applies it the same way.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from typing import Literal
from urllib.parse import quote

from gateway.clock import Clock
from gateway.duplicates.fingerprints import CATEGORY_HEADER, Category, category_of
from gateway.mail.message import ParsedMessage
from gateway.policy.model import DealerPolicy
from gateway.reputation.records import UNSUBSCRIBE_REASON, EventKind, FeedbackEvent, Suppression
from gateway.storage.base import Storage
from gateway.types import DealerId, MessageId

__all__ = [
    "POST_VALUE",
    "REASON",
    "ExistingHeader",
    "HeaderPlan",
    "Unsubscribe",
    "UnsubscribeLinks",
    "Unsubscribes",
    "header_plan",
    "is_commercial",
    "token_in_message",
]

log = logging.getLogger("gateway.feedback")

POST_VALUE = "List-Unsubscribe=One-Click"  # RFC 8058 §3.1
REASON = UNSUBSCRIBE_REASON  # the same reason the feedback loop's opt-outs record
ExistingHeader = Literal["keep", "replace", "add"]
_VERSION = b"\x01"
_TAG_BYTES = 16
_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """What a valid token asks for."""

    dealer_id: DealerId
    recipient: str
    message_id: MessageId


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _unb32(text: str) -> bytes | None:
    text = text.upper()
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        return None


class UnsubscribeLinks:
    """Makes and checks tokens; builds the header values (pure)."""

    def __init__(self, key: bytes, base_url: str, mailto: str = "") -> None:
        # Domain separation: the reference key also signs X-Mailgate-Ref and VERP.
        self._key = hmac.new(key, b"mailgate one-click unsubscribe", hashlib.sha256).digest()
        self._base = base_url.rstrip("/")
        self._mailto = mailto

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_TAG_BYTES]

    def token(self, dealer_id: str, recipient: str, message_id: str) -> str:
        """The token for one recipient of one message."""
        payload = _VERSION + "\n".join((dealer_id, recipient.lower(), message_id)).encode()
        return _b32(payload + self._tag(payload))

    def verify(self, token: str) -> Unsubscribe | None:
        """What ``token`` asks for, or ``None`` when it is malformed or forged."""
        raw = _unb32(token) if len(token) <= 1024 else None
        if raw is None or len(raw) <= _TAG_BYTES + 1 or not raw.startswith(_VERSION):
            return None
        if _b32(raw) != token.lower():
            # The last base32 character carries unused bits: several spellings decode to
            # the same bytes. Only the one the gateway wrote is a token.
            return None
        payload, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(payload)):
            return None
        try:
            dealer, recipient, message = payload[1:].decode().split("\n")
        except ValueError:  # includes UnicodeDecodeError
            return None
        return Unsubscribe(DealerId(dealer), recipient, MessageId(message))

    def url(self, token: str) -> str:
        """The one-click https URL."""
        return f"{self._base}/u/{token}"

    def list_unsubscribe(self, token: str) -> str:
        """Our ``List-Unsubscribe`` value: the https URL first, then the mailto."""
        value = f"<{self.url(token)}>"
        if self._mailto:
            value += f", <mailto:{self._mailto}?subject={quote('unsubscribe ' + token)}>"
        return value


@dataclass(frozen=True, slots=True)
class HeaderPlan:
    """Header fields to remove from a copy (lower-case names) and fields to add."""

    remove: frozenset[str]
    add: tuple[tuple[str, str], ...]


def header_plan(existing: str | None, ours: str, mode: ExistingHeader) -> HeaderPlan:
    """How to combine the CRM's ``List-Unsubscribe`` (``existing``) with ``ours``.

    ``keep``: a message that has one is left as it is; ``replace``: the CRM's fields go
    and ours are added; ``add``: one field with our URIs first and the CRM's after (RFC
    2369 §3.2 allows a list; RFC 8058 receivers POST to the first https URI). A message
    without one always gets ours.
    """
    post = ("List-Unsubscribe-Post", POST_VALUE)
    if not existing or not existing.strip():
        # Removing is a no-op unless the CRM sent a stray List-Unsubscribe-Post alone.
        return HeaderPlan(_HEADERS, (("List-Unsubscribe", ours), post))
    if mode == "keep":
        return HeaderPlan(frozenset(), ())
    if mode == "add":
        return HeaderPlan(_HEADERS, (("List-Unsubscribe", f"{ours}, {existing.strip()}"), post))
    return HeaderPlan(_HEADERS, (("List-Unsubscribe", ours), post))


_SUBJECT_TOKEN = re.compile(r"\bunsubscribe\s+([a-z2-7]{24,1024})\b", re.IGNORECASE)


def token_in_message(raw: bytes) -> str | None:
    """The one-click token in the subject of a mail sent to our mailto, or ``None``.

    Mail clients send the mailto's ``subject=`` as it is (``unsubscribe TOKEN``), some
    with ``Re:`` or other text around it; the token is verified by the caller.
    """
    headers = BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
    try:
        subject = str(headers.get("Subject", ""))
    except (ValueError, LookupError):  # an undecodable encoded-word
        return None
    found = _SUBJECT_TOKEN.search(subject)
    return found.group(1).lower() if found else None


def is_commercial(message: ParsedMessage, dealer: DealerPolicy) -> bool:
    """Whether ``message`` is commercial: its ``X-Mailgate-Category``, else the dealer's default.

    The default is the one the frequency cap uses (``frequency-cap.default_category``), so
    a message is never capped as commercial yet sent without an unsubscribe link.
    """
    # CAN-SPAM (15 U.S.C. 7702(17)) exempts relationship messages as well as transactional
    # ones; the duplicate checks only know those two categories, so look at it here first.
    if (message.header(CATEGORY_HEADER) or "").strip().lower() == "relationship":
        return False
    rule = dealer.checks.get("frequency-cap")
    default = str(rule.options.get("default_category", "commercial")) if rule else "commercial"
    try:
        fallback = Category(default)
    except ValueError:
        fallback = Category.COMMERCIAL
    return category_of(message, fallback) is Category.COMMERCIAL


class Unsubscribes:
    """Applies a one-click unsubscribe to the store."""

    def __init__(self, links: UnsubscribeLinks, storage: Storage, clock: Clock) -> None:
        self._links = links
        self._storage = storage
        self._clock = clock

    def verify(self, token: str) -> Unsubscribe | None:
        """What ``token`` asks for, or ``None`` for a forged or malformed one."""
        return self._links.verify(token)

    async def unsubscribe(self, request: Unsubscribe, source: str) -> bool:
        """Suppress the recipient for the dealer; ``False`` when this token was used already.

        Raises ``StorageError`` when the store fails (the caller answers 503, and the
        receiver's retry or the person's next click tries again).
        """
        now = self._clock.now()
        event = FeedbackEvent(
            dealer_id=request.dealer_id,
            kind=EventKind.UNSUBSCRIBE,
            message_id=request.message_id,
            recipient=request.recipient,
            at=now,
            detail="one-click",
            source=source,
        )
        entry = Suppression(request.dealer_id, request.recipient, REASON, request.message_id, now)
        recorded = await self._storage.record_feedback(event, entry)
        log.info("unsubscribe %s dealer=%s message=%s via %s", "recorded" if recorded else
                 "already recorded", request.dealer_id, request.message_id, source)  # fmt: skip
        return recorded
