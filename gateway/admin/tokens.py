"""Admin API bearer tokens: created once, shown once, stored only as scrypt hashes.

The token file has one token per line, ``<name> <scrypt hash>`` (``#`` starts a comment),
so a token can be revoked by deleting its line; the file is re-read when it changes.
A token is 32 random bytes, so the scrypt cost protects a stolen file, not a guessable
secret; to keep that cost off every request, a token that verified once is remembered
(by its SHA-256) until the file changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError
from gateway.passwords import hash_password, verify_password

PREFIX = "mgt_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def new_token() -> str:
    """A new random token (``mgt_`` and 43 URL-safe characters)."""
    return PREFIX + secrets.token_urlsafe(32)


def create_token(path: Path, name: str) -> str:
    """Append a new token named ``name`` to ``path`` (created 0600) and return it.

    Raises ``ConfigError`` for a bad name or a name already in the file.
    """
    if not _NAME.match(name):
        raise ConfigError(f"token name {name!r}: use letters, digits and . _ @ - (max 64)")
    if any(entry.name == name for entry in read_tokens(path)):
        raise ConfigError(f"{path}: a token named {name!r} exists; delete its line first")
    token = new_token()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(f"{name} {hash_password(token)}\n")
    return token


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One line of the token file."""

    name: str
    hash: str


def read_tokens(path: Path) -> list[TokenEntry]:
    """The entries of ``path`` (empty when it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the admin token file: {exc}") from exc
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, digest = line.partition(" ")
        if digest.strip():
            entries.append(TokenEntry(name, digest.strip()))
    return entries


class TokenCheck:
    """Verifies bearer tokens against the token file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._entries: list[TokenEntry] = []
        self._verified: dict[bytes, str] = {}
        # scrypt costs ~16 MiB and tens of ms: bound how many run at once.
        self._slots = asyncio.Semaphore(2)

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp or stamp is None:
            self._entries = read_tokens(self.path)
            self._verified.clear()
            self._stamp = stamp

    @property
    def configured(self) -> bool:
        """True when the file holds at least one token."""
        self._refresh()
        return bool(self._entries)

    async def check(self, token: str) -> str | None:
        """The name of the token, or ``None`` when it is not a valid token."""
        self._refresh()
        if not token.startswith(PREFIX) or len(token) > 200:
            return None
        key = hashlib.sha256(token.encode()).digest()
        known = self._verified.get(key)
        if known is not None:
            return known
        async with self._slots:
            for entry in self._entries:
                ok = await asyncio.to_thread(verify_password, token.encode(), entry.hash)
                if ok:
                    self._verified[key] = entry.name
                    return entry.name
        return None
