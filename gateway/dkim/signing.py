"""DKIM signing (RFC 6376, RFC 8463): the last change to a message before it is spooled.

``Signer.sign`` receives the exact bytes that will be relayed (line endings already CRLF,
long lines already folded, headers final) and returns them with signature header fields
prepended. Signing that fails raises ``SigningError``; the message is then refused with
``451 4.3.0``, never relayed unsigned.

``DkimSigner`` signs with each of the dealer's own ``DkimSettings`` that is not retired:
RSA-SHA256 and, where configured, a second Ed25519-SHA256 signature and an operator-domain
signature. A dealer with no DKIM settings is relayed unsigned (and that is logged once).

Theory of operation. dkimpy does the parts that must be exactly right and are cheap: the
header/body split, relaxed canonicalisation, header selection and the signature header
layout. Only the private-key operation goes to OpenSSL through ``cryptography``, because
dkimpy's pure-Python RSA is several times slower than the rest of signing put together.
PKCS#1 v1.5 and Ed25519 signatures are deterministic, so the result is byte-for-byte what
``dkim.DKIM.sign`` produces for the same inputs; the unit tests and ``bench/sign.py``
check exactly that. The body hash is computed once and shared by every signature, and
by every recipient's copy of one submission (``BodyHashes``).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from dkim.canonicalization import CanonicalizationPolicy
from dkim.canonicalization import correct_empty_body as _correct_empty_body
from dkim.canonicalization import strip_trailing_lines as _strip_trailing_lines

from gateway.clock import Clock
from gateway.errors import SigningError
from gateway.policy.model import DealerPolicy, DkimSettings, PolicySet
from gateway.policy.store import PolicyStore
from gateway.types import DealerId

__all__ = [
    "OVERSIGNED",
    "SIGNED_IF_PRESENT",
    "BodyHashes",
    "DkimSigner",
    "PassThroughSigner",
    "Signer",
    "SigningKey",
    "active_identities",
    "load_signing_key",
    "relaxed_body",
    "sign_headers",
    "signed_header_names",
    "split_message",
]

log = logging.getLogger("gateway.dkim.signing")

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

# Signed once more than they occur, so that adding another instance (or the first one)
# breaks the signature: a replayed message cannot gain a second From:, a new To: or a
# Reply-To: pointing elsewhere (RFC 6376 §8.15; rspamd's "(o)" oversigning). These are
# the RFC 5322 §3.6 singletons plus the MIME and RFC 8058 fields a receiver acts on.
OVERSIGNED: tuple[bytes, ...] = (
    b"from", b"sender", b"reply-to", b"to", b"cc", b"subject", b"date", b"message-id",
    b"in-reply-to", b"references", b"mime-version", b"content-type",
    b"content-transfer-encoding", b"list-unsubscribe", b"list-unsubscribe-post",
)  # fmt: skip
# The rest of RFC 6376 §5.4.1's list, and our tracking reference: signed as they are.
SIGNED_IF_PRESENT: tuple[bytes, ...] = (
    b"content-id", b"content-description", b"resent-date", b"resent-from", b"resent-sender",
    b"resent-to", b"resent-cc", b"resent-message-id", b"list-id", b"list-help",
    b"list-subscribe", b"list-post", b"list-owner", b"list-archive", b"feedback-id",
    b"x-mailgate-ref",
)  # fmt: skip

_HEADER = b"DKIM-Signature"
# relaxed/relaxed survives the whitespace and folding changes relays make (RFC 6376 §3.4.2,
# §3.4.4); no l= tag, so nothing can be appended to the body (RFC 6376 §8.2).
_CANON = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_WSP_RUN = re.compile(rb"[\t ]+")


class Signer(Protocol):
    """Adds signatures to a finished message."""

    def sign(self, data: bytes, dealer: DealerPolicy) -> bytes:
        """Return ``data`` with signature headers prepended; raise ``SigningError``."""
        ...


class PassThroughSigner:
    """Relays messages as they are (for tests and tools that must not sign)."""

    def sign(self, data: bytes, dealer: DealerPolicy) -> bytes:
        """Return ``data`` unchanged."""
        return data


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One DKIM identity with its parsed private key."""

    identity: DkimSettings
    key: PrivateKey


def load_signing_key(identity: DkimSettings) -> SigningKey:
    """Read and parse the identity's PEM key file; raise ``SigningError`` if unusable."""
    path = identity.key_file
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise SigningError(f"key file {str(path)!r} cannot be read: {exc.strerror}") from exc
    except (ValueError, TypeError) as exc:
        raise SigningError(f"key file {str(path)!r} is not an unencrypted PEM key") from exc
    if identity.algorithm == "ed25519-sha256":
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise SigningError(f"key file {str(path)!r} is not an Ed25519 key")
    elif not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 1024:
        raise SigningError(f"key file {str(path)!r} is not an RSA key of 1024 bits or more")
    return SigningKey(identity, key)


def signed_header_names(names: Iterable[bytes]) -> tuple[bytes, ...]:
    """The ``h=`` list for a message whose header field names are ``names``.

    Every name in ``OVERSIGNED`` appears once more than the message has that field (so
    once when absent); names in ``SIGNED_IF_PRESENT`` appear as often as the field does.
    """
    counts = Counter(name.lower() for name in names)
    selected: list[bytes] = []
    for name in OVERSIGNED:
        selected.extend([name] * (counts[name] + 1))
    for name in SIGNED_IF_PRESENT:
        selected.extend([name] * counts[name])
    return tuple(selected)


class BodyHashes:
    """The ``bh=`` of the last body signed, for the next copy of the same submission.

    Intake signs each recipient's copy of a submission in turn, and the copies differ only
    in their header fields: their bodies are equal byte for byte, so the relaxed body
    hash (RFC 6376 §3.7, most of the cost of signing a large message) is computed once
    and reused while the body is the same. The bytes themselves are the key, so a body
    that differs in one byte is hashed afresh. Safe across threads: a lookup and a store
    each replace or read one tuple.
    """

    def __init__(self) -> None:
        self._last: tuple[bytes, bytes] | None = None
        self.computed = 0  # how many bodies were hashed (the tests count reuse by it)

    def of(self, body: bytes) -> bytes:
        """The base64 SHA-256 of ``body``'s relaxed canonical form."""
        last = self._last
        if last is not None and last[0] == body:
            return last[1]
        digest = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
        self.computed += 1
        self._last = (body, digest)
        return digest


def sign_headers(
    message: bytes,
    keys: Sequence[SigningKey],
    *,
    timestamp: int,
    body_hashes: BodyHashes | None = None,
) -> bytes:
    """Return the ``DKIM-Signature`` fields (CRLF-terminated) for ``message``, one per key.

    ``timestamp`` is the ``t=`` value (seconds since the epoch). The fields are to be
    prepended to ``message`` unchanged. ``body_hashes`` reuses the body hash of the
    previous copy with the same body. Raises ``SigningError`` if the message cannot be
    parsed as RFC 5322 or a key operation fails.
    """
    try:
        headers, body = split_message(message)
    except (dkim.MessageFormatError, IndexError) as exc:  # IndexError: a leading folded line
        raise SigningError(f"the message cannot be parsed for signing: {exc}") from exc
    include = signed_header_names(name for name, _value in headers)
    canonical = _CANON.canonicalize_headers(headers)
    body_hash = (body_hashes or BodyHashes()).of(body)
    out: list[bytes] = []
    for key in keys:
        try:
            out.append(_signature(canonical, include, body_hash, key, timestamp))
        except Exception as exc:  # an OpenSSL failure must refuse the message, not crash
            where = f"{key.identity.selector}._domainkey.{key.identity.domain}"
            raise SigningError(f"signing as {where} failed: {exc}") from exc
    return b"".join(out)


def split_message(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """``dkim.rfc822_parse(message)``: the header fields and the body, CRLF-separated.

    A message as intake leaves it (every line ending in CRLF) is split at the first empty
    line, and only the header section goes through dkimpy's line-by-line parser; anything
    else goes through it whole. Raises ``dkim.MessageFormatError`` on a malformed header.
    """
    head, blank, body = message.partition(b"\r\n\r\n")
    if not blank or message.startswith(b"\r\n") or message.count(b"\n") != message.count(b"\r\n"):
        return dkim.rfc822_parse(message)  # type: ignore[no-any-return]
    headers, _ = dkim.rfc822_parse(head + b"\r\n\r\n")
    return headers, body


def relaxed_body(body: bytes) -> bytes:
    """The relaxed body canonicalisation (RFC 6376 §3.4.4), exactly as dkimpy computes it.

    dkimpy runs two regular-expression substitutions over the whole body, replacing even
    single spaces with a space; this strips line ends with ``rstrip`` and runs a
    substitution only on the lines that have a tab or a run of spaces, which is most of
    the cost of signing a large message otherwise. The unit tests hold it to dkimpy's.
    """
    lines = body.split(b"\r\n")
    last = len(lines) - 1
    for index, line in enumerate(lines):
        # A last line without CRLF keeps its trailing space (dkimpy only strips "WSP CRLF").
        if index != last:
            line = line.rstrip(b" \t")
        if b"\t" in line or b"  " in line:
            line = _WSP_RUN.sub(b" ", line)
        lines[index] = line
    return _correct_empty_body(_strip_trailing_lines(b"\r\n".join(lines)))  # type: ignore[no-any-return]


def _signature(
    canonical: list[tuple[bytes, bytes]],
    include: tuple[bytes, ...],
    body_hash: bytes,
    key: SigningKey,
    timestamp: int,
) -> bytes:
    identity = key.identity
    domain = identity.domain.encode("ascii")
    # The tags, their order and the folding are dkimpy's (DKIM.sign and gen_header), so
    # the field is identical to the one it would produce.
    fields = [
        (b"v", b"1"),
        (b"a", identity.algorithm.encode("ascii")),
        (b"c", _CANON.to_c_value()),
        (b"d", domain),
        (b"i", b"@" + domain),
        (b"q", b"dns/txt"),
        (b"s", identity.selector.encode("ascii")),
        (b"t", str(timestamp).encode("ascii")),
        (b"h", b" : ".join(include)),
        (b"bh", body_hash),
        # A long placeholder forces b= onto its own line, so folding the real value
        # later leaves every other tag where it was hashed.
        (b"b", b"0" * 60),
    ]
    value = dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(_HEADER))
    unsigned = (_HEADER, b" " + dkim.RE_BTAG.sub(b"\\1", value))
    hasher = hashlib.sha256()
    # RFC 6376 §3.7: the selected fields bottom-up, then this field with an empty b=.
    dkim.hash_headers(hasher, _CANON, canonical, include, unsigned, dict(fields))
    digest = hasher.digest()
    private = key.key
    if isinstance(private, rsa.RSAPrivateKey):
        signature = private.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    else:
        # RFC 8463 §3: Ed25519 signs the SHA-256 hash of the canonicalised header data.
        signature = private.sign(digest)
    fields[-1] = (b"b", base64.b64encode(signature))
    value = b"; ".join(b"=".join(f) for f in fields) + b"\r\n"
    return _HEADER + b": " + dkim.fold(value, namelen=len(_HEADER))  # type: ignore[no-any-return]


class DkimSigner:
    """Signs each message with its own dealer's DKIM identities.

    Keys are read on first use and cached until the policy store holds a different set,
    so a policy reload (SIGHUP, the admin API) picks up new and rotated keys. An identity
    whose ``retire_at`` has passed (by ``clock``) no longer signs. Safe to call from
    several threads at once.
    """

    def __init__(self, policies: PolicyStore, clock: Clock) -> None:
        self._policies = policies
        self._clock = clock
        self._lock = threading.Lock()
        self._keys_for: PolicySet | None = None
        self._keys: dict[DkimSettings, SigningKey] = {}
        self._unsigned: set[DealerId] = set()
        self.body_hashes = BodyHashes()  # one body hash for every copy of a submission

    def sign(self, data: bytes, dealer: DealerPolicy) -> bytes:
        """Return ``data`` with one signature per active identity of ``dealer`` prepended.

        Raises ``SigningError`` when the dealer has DKIM settings but none can sign
        (unreadable key, every identity retired): such mail must not leave unsigned.
        """
        if not dealer.dkim:
            self._note_unsigned(dealer.dealer_id)
            return data
        now = self._clock.now()
        identities = active_identities(dealer.dkim, now)
        if not identities:
            raise SigningError("every DKIM identity of the dealer is retired")
        keys = [self._key(identity) for identity in identities]
        timestamp = int(now.timestamp())
        return sign_headers(data, keys, timestamp=timestamp, body_hashes=self.body_hashes) + data

    def _key(self, identity: DkimSettings) -> SigningKey:
        with self._lock:
            current = self._policies.current
            if current is not self._keys_for:
                self._keys.clear()
                self._keys_for = current
            key = self._keys.get(identity)
            if key is None:
                key = self._keys[identity] = load_signing_key(identity)
            return key

    def _note_unsigned(self, dealer_id: DealerId) -> None:
        with self._lock:
            if dealer_id in self._unsigned:
                return
            self._unsigned.add(dealer_id)
        log.warning("dealer=%s has no DKIM settings: its mail is relayed unsigned", dealer_id)


def active_identities(
    identities: Iterable[DkimSettings], now: datetime
) -> tuple[DkimSettings, ...]:
    """The identities that sign at ``now``: those without a ``retire_at`` in the past."""
    return tuple(i for i in identities if i.retire_at is None or now < i.retire_at)
