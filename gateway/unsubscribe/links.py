"""One-click unsubscribe links (RFC 8058, RFC 2369): tokens and header fields (pure).

This module owns what the pipeline and intake need to know about unsubscribing, with no
I/O: whether a message is commercial (``is_commercial``), the token that names one
recipient of one message (``UnsubscribeLinks.token``/``verify``), the ``List-Unsubscribe``
value, and how it combines with one the CRM wrote (``header_plan``). What a click does to
the store is ``gateway.unsubscribe.service``.

Each commercial copy gets ``List-Unsubscribe: <https://…/u/TOKEN>, <mailto:…>`` and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``, added by intake before signing (RFC
8058 §4: both fields must be covered by the DKIM signature, which ``signing.OVERSIGNED``
does). The token names the dealer, the recipient and the message, with an HMAC-SHA256
tag (128 bits) under a key derived from the gateway's reference key, in lower-case
base32: it cannot be forged or guessed from another recipient's, and it needs no lookup,
so a link works for as long as the key does (the sent log is kept for 30 days; people
unsubscribe from year-old mail).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from gateway.duplicates.fingerprints import CATEGORY_HEADER, Category, category_of
from gateway.mail.message import ParsedMessage
from gateway.policy.model import DealerPolicy
from gateway.policy.options import FrequencyCapOptions
from gateway.tokens import Signer, b32decode, b32encode, derive_key
from gateway.types import DealerId, MessageId

__all__ = [
    "POST_VALUE",
    "ExistingHeader",
    "HeaderPlan",
    "Unsubscribe",
    "UnsubscribeLinks",
    "header_plan",
    "is_commercial",
]

POST_VALUE = "List-Unsubscribe=One-Click"  # RFC 8058 §3.1
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


class UnsubscribeLinks:
    """Makes and checks tokens; builds the header values (pure)."""

    def __init__(self, key: bytes, base_url: str, mailto: str = "") -> None:
        # Domain separation: the reference key also signs X-Mailgate-Ref and VERP.
        self._signer = Signer(derive_key(key, b"mailgate one-click unsubscribe"), size=_TAG_BYTES)
        self._base = base_url.rstrip("/")
        self._mailto = mailto

    def token(self, dealer_id: str, recipient: str, message_id: str) -> str:
        """The token for one recipient of one message."""
        payload = _VERSION + "\n".join((dealer_id, recipient.lower(), message_id)).encode()
        return b32encode(payload + self._signer.tag(payload))

    def verify(self, token: str) -> Unsubscribe | None:
        """What ``token`` asks for, or ``None`` when it is malformed or forged."""
        # b32decode takes only the spelling the gateway wrote (the last character carries
        # unused bits, so several spellings decode to the same bytes).
        raw = b32decode(token) if len(token) <= 1024 else None
        if raw is None or len(raw) <= _TAG_BYTES + 1 or not raw.startswith(_VERSION):
            return None
        payload, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if not self._signer.verify(payload, tag):
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


def is_commercial(message: ParsedMessage, dealer: DealerPolicy) -> bool:
    """Whether ``message`` is commercial: its ``X-Mailgate-Category``, else the dealer's default.

    The default is the one the frequency cap uses (``frequency-cap.default_category``), so
    a message is never capped as commercial yet sent without an unsubscribe link.
    """
    # CAN-SPAM (15 U.S.C. 7702(17)) exempts relationship messages as well as transactional
    # ones; the duplicate checks only know those two categories, so look at it here first.
    if (message.header(CATEGORY_HEADER) or "").strip().lower() == "relationship":
        return False
    fallback = Category(dealer.options(FrequencyCapOptions).default_category)
    return category_of(message, fallback) is Category.COMMERCIAL
