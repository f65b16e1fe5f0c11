"""Password hashing for SMTP AUTH credentials: scrypt, self-describing, constant-time.

The stored form is ``scrypt$<log2 N>$<r>$<p>$<salt b64>$<hash b64>`` so parameters can be
raised later without invalidating existing hashes. Hashing costs tens of milliseconds of
CPU by design; callers on the event loop run it in a thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

_LOG_N, _R, _P = 14, 8, 1  # ~16 MiB and ~40 ms per hash: slow to brute-force, fine per login
_DKLEN = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, log_n: int = _LOG_N) -> str:
    """Return a new scrypt hash of ``password`` with a random salt."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=1 << log_n, r=_R, p=_P, dklen=_DKLEN,
        maxmem=256 * 1024 * 1024,
    )  # fmt: skip
    return f"scrypt${log_n}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: bytes, stored: str) -> bool:
    """True if ``password`` matches ``stored``; False for a wrong password or a bad hash."""
    try:
        scheme, log_n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(
            password, salt=_unb64(salt), n=1 << int(log_n), r=int(r), p=int(p),
            dklen=len(expected), maxmem=256 * 1024 * 1024,
        )  # fmt: skip
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# A hash of a random password, verified against when the username is unknown so that an
# unknown user and a wrong password take the same time (reliability C2).
DUMMY_HASH = hash_password(os.urandom(12).hex())
