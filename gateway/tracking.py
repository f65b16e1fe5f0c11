"""Tracking references: the ``X-Mailgate-Ref`` header and the VERP return path (pure).

This module owns the identifiers that let a complaint or a bounce be traced back to one
queued message, and the HMAC that makes such a reference unforgeable. A reference names
the queue message id; the MAC binds it to the dealer and the recipient, so feedback that
names a message id with a wrong or guessed MAC is ignored, and a valid reference cannot
be replayed for another dealer or recipient. The MAC is made and checked by
``gateway.tokens`` (the signer every signed token of the gateway uses).

Formats::

    submission id   16 characters of lower-case Crockford base32: a 48-bit millisecond
                    timestamp then 32 random bits, so ids sort by time as strings
    message id      "<submission id>.<n>"                      (one per recipient)
    header value    "v1.<message id>.<mac>"
    VERP address    "b-<message id>-<mac>@<bounce domain>"     (local part <= 64 octets)
    mac             HMAC-SHA256 over "mailgate-ref-v1" then the length-prefixed message
                    id, dealer id and lower-cased recipient (``tokens.encode_fields``);
                    first 80 bits, RFC 4648 base32, lower case, no padding
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.tokens import Signer, b32decode, b32encode, encode_fields
from gateway.types import MessageId

MAC_BYTES = 10  # 80 bits: forging one needs about 2**80 tries online
MAX_LOCAL_PART = 64  # RFC 5321 §4.5.3.1.1
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"  # ASCII order equals numeric order
_DOMAIN_TAG = b"mailgate-ref-v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_MESSAGE_ID = r"[0-9a-z]{1,26}\.[0-9]{1,6}"
_MAC = r"[a-z2-7]{16}"
_HEADER = re.compile(rf"v1\.({_MESSAGE_ID})\.({_MAC})")
_VERP = re.compile(rf"b-({_MESSAGE_ID})-({_MAC})")


@dataclass(frozen=True, slots=True)
class RefToken:
    """A reference read back from feedback: a message id and the MAC that came with it."""

    message_id: MessageId
    mac: str


class RefCodec:
    """Creates and checks tracking references with one secret key."""

    __slots__ = ("_signer",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the tracking key must be at least 16 bytes")
        self._signer = Signer(key, size=MAC_BYTES, context=_DOMAIN_TAG)

    @staticmethod
    def _signed(message_id: str, dealer_id: str, rcpt: str) -> bytes:
        # str.lower, not addresses.normalise: the signed bytes are frozen (references in
        # sent mail must keep verifying), and for a recipient the listener accepted the
        # two agree anyway (no spaces, brackets or root dot are left by then).
        return encode_fields(message_id, dealer_id, rcpt.lower())

    def mac(self, message_id: str, dealer_id: str, rcpt: str) -> str:
        """Return the MAC binding ``message_id`` to the dealer and the (lower-cased) recipient."""
        return b32encode(self._signer.tag(self._signed(message_id, dealer_id, rcpt)))

    def header_value(self, message_id: str, dealer_id: str, rcpt: str) -> str:
        """Return the ``X-Mailgate-Ref`` value for one queued message."""
        _check_message_id(message_id)
        return f"v1.{message_id}.{self.mac(message_id, dealer_id, rcpt)}"

    def verify(self, token: RefToken, dealer_id: str, rcpt: str) -> bool:
        """Tell whether ``token`` was made by this key for this dealer and recipient."""
        signed = self._signed(token.message_id, dealer_id, rcpt)
        return self._signer.verify(signed, b32decode(token.mac))

    def verp_address(self, message_id: str, dealer_id: str, rcpt: str, domain: str) -> str:
        """Return the return path for one queued message, e.g. ``b-<id>-<mac>@bounces.example``."""
        _check_message_id(message_id)
        local = f"b-{message_id}-{self.mac(message_id, dealer_id, rcpt)}"
        if len(local) > MAX_LOCAL_PART:
            raise ValueError(f"VERP local part {local!r} is longer than {MAX_LOCAL_PART}")
        return f"{local}@{domain.lower()}"


def _check_message_id(message_id: str) -> None:
    if not re.fullmatch(_MESSAGE_ID, message_id):
        raise ValueError(f"{message_id!r} is not a queue message id")


def parse_header(value: str) -> RefToken | None:
    """Read an ``X-Mailgate-Ref`` value; ``None`` when it is not one of ours."""
    match = _HEADER.fullmatch(value.strip().lower())
    if match is None:
        return None
    return RefToken(MessageId(match.group(1)), match.group(2))


def parse_verp(address: str) -> RefToken | None:
    """Read a VERP return path; ``None`` when it is not one of ours.

    The local part is matched case-insensitively: some MTAs change its case.
    """
    local, at, _ = address.strip().strip("<>").rpartition("@")
    if not at:
        return None
    match = _VERP.fullmatch(local.lower())
    if match is None:
        return None
    return RefToken(MessageId(match.group(1)), match.group(2))


def _crockford(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))


def new_submission_id(now: datetime, rand: Callable[[int], bytes] = os.urandom) -> str:
    """Make a submission id: 48-bit milliseconds since the epoch, then 32 random bits.

    ``now`` must be timezone-aware. The 80 bits are written as 16 Crockford base32
    characters, whose ASCII order is their numeric order, so ids sort by time.
    """
    if now.tzinfo is None:
        raise ValueError("new_submission_id needs a timezone-aware datetime")
    millis = (now - _EPOCH) // timedelta(milliseconds=1)
    if not 0 <= millis < 1 << 48:
        raise ValueError(f"{now} is outside the range of a submission id")
    value = (millis << 32) | int.from_bytes(rand(4), "big")
    return _crockford(value, 16)


def message_id_for(submission_id: str, n: int) -> MessageId:
    """Return the queue id of copy ``n`` (one per recipient) of a submission."""
    if n < 0:
        raise ValueError("copy numbers start at 0")
    message_id = f"{submission_id}.{n}"
    _check_message_id(message_id)
    return MessageId(message_id)
