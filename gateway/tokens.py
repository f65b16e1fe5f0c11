"""Signed tokens: HMAC-SHA256 tags, their canonical text forms and constant-time checks (pure).

Three codecs put a secret-keyed tag into text a recipient or a dealer can see and hand
back: the tracking references (``tracking.py``: ``X-Mailgate-Ref`` and the VERP return
path), the one-click unsubscribe tokens (``unsubscribe/``) and the status-page links
(``web/status.py``). They differ in what they sign and how they spell it; this module is
what they share, so that every tag is made, truncated and compared the same way:

* ``Signer(key, size=, context=)`` makes a tag: the first ``size`` bytes of
  HMAC-SHA256(key, context || data). ``context`` separates the uses of one key (a tag
  made for one purpose never verifies for another). ``verify`` recomputes the tag and
  compares it with ``hmac.compare_digest`` (constant time, so the comparison's duration
  says nothing about how many leading bytes were right), and refuses a tag of any other
  length instead of comparing a prefix.
* ``derive_key(key, label)`` is HMAC-SHA256(key, label): a separate key for one use of a
  shared secret (the unsubscribe tokens' key is derived from the reference key).
* ``encode_fields(*texts)`` is the canonical input for several fields: each UTF-8 field
  preceded by its length (4 bytes, big-endian), so ``("ab", "c")`` and ``("a", "bc")``
  never sign the same bytes.
* ``b32encode``/``b32decode`` (RFC 4648 §6 base32, lower case, no padding) and
  ``hex_decode`` read and write tags in text. The decoders are canonical: a text is
  accepted only in the one spelling the encoder writes (base32's last character can
  carry unused bits, so several spellings decode to the same bytes), and anything else
  is ``None``, never an exception, because the text comes from the outside.

A key must be at least 16 bytes (RFC 2104 §3: shorter than the hash output weakens the
MAC; the gateway's keys are 32 random bytes from the data directory). The formats the
three codecs write are frozen: tokens already in sent mail must keep verifying.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

__all__ = [
    "MIN_KEY_BYTES",
    "Signer",
    "b32decode",
    "b32encode",
    "derive_key",
    "encode_fields",
    "hex_decode",
]

MIN_KEY_BYTES = 16
_DIGEST_BYTES = hashlib.sha256().digest_size
_HEX = re.compile(r"(?:[0-9a-f]{2})+")
_B32 = re.compile(r"[a-z2-7]*")


def derive_key(key: bytes, label: bytes) -> bytes:
    """A key for one use of ``key``: HMAC-SHA256(key, label)."""
    return hmac.new(key, label, hashlib.sha256).digest()


def encode_fields(*fields: str) -> bytes:
    """The canonical bytes of several text fields: each length-prefixed (4 bytes) UTF-8."""
    out = bytearray()
    for text in fields:
        data = text.encode("utf-8")
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)


class Signer:
    """Makes and checks truncated HMAC-SHA256 tags of one size under one key and context."""

    __slots__ = ("_context", "_key", "size")

    def __init__(self, key: bytes, *, size: int, context: bytes = b"") -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a signing key must be at least {MIN_KEY_BYTES} bytes")
        if not 10 <= size <= _DIGEST_BYTES:
            # Below 80 bits a tag could be forged online by brute force (RFC 2104 §5).
            raise ValueError(f"a tag is 10 to {_DIGEST_BYTES} bytes, not {size}")
        self._key = key
        self._context = context
        self.size = size

    def tag(self, data: bytes) -> bytes:
        """The tag of ``data``: the first ``size`` bytes of HMAC-SHA256(key, context || data)."""
        return hmac.new(self._key, self._context + data, hashlib.sha256).digest()[: self.size]

    def verify(self, data: bytes, tag: bytes | None) -> bool:
        """True when ``tag`` is the tag of ``data`` (constant time; ``None`` is never valid)."""
        if tag is None or len(tag) != self.size:
            return False
        return hmac.compare_digest(tag, self.tag(data))


def b32encode(data: bytes) -> str:
    """``data`` in RFC 4648 base32, lower case, without padding."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def b32decode(text: str) -> bytes | None:
    """The bytes ``b32encode`` wrote as ``text`` (any letter case), or ``None``.

    Only the canonical spelling is accepted: the last character of a base32 text may carry
    bits that decoding drops, and a token with such bits set is not one we wrote.
    """
    lowered = text.lower()
    if not _B32.fullmatch(lowered):
        return None
    try:
        data = base64.b32decode(lowered.upper() + "=" * (-len(lowered) % 8))
    except (binascii.Error, ValueError):
        return None
    return data if b32encode(data) == lowered else None


def hex_decode(text: str) -> bytes | None:
    """The bytes of a lower-case hex ``text``, or ``None`` for anything else."""
    return bytes.fromhex(text) if _HEX.fullmatch(text) else None
