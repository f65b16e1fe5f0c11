"""SMTP AUTH for dealers: credential lookup, scrypt verification, per-IP throttling.

Outcomes are deliberately coarse: a wrong password and an unknown user look the same to
the client (same reply, same cost: an unknown user is verified against a dummy hash).
Failures are counted per client IP only, so an attacker hammering from one address can
never lock the real dealer out from its own (reliability C3). When the credential store
cannot be reached the answer is ``454 4.7.0``, never ``535``: a 535 makes many CRMs
disable the account (RFC 4954 §6).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import logging
import os
import time
from collections import deque
from dataclasses import dataclass

from gateway.errors import StorageError
from gateway.passwords import DUMMY_HASH, verify_password
from gateway.policy.store import PolicyStore
from gateway.storage.base import Storage
from gateway.types import DealerId

log = logging.getLogger("gateway.smtp")


class AuthStatus(enum.Enum):
    """The result of one login attempt."""

    OK = "ok"
    INVALID = "failed"
    THROTTLED = "throttled"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    """What a login attempt established."""

    status: AuthStatus
    username: str = ""
    dealer_id: DealerId | None = None


class FailureLimiter:
    """Counts failures per key in a sliding window (monotonic time, so clock steps are moot)."""

    def __init__(self, limit: int, window: float, max_keys: int = 100_000) -> None:
        self._limit = limit
        self._window = window
        self._max_keys = max_keys
        self._events: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            return deque()
        while events and events[0] <= now - self._window:
            events.popleft()
        if not events:
            del self._events[key]
        return events

    def blocked(self, key: str) -> bool:
        """True when ``key`` has reached the limit within the window."""
        return len(self._recent(key, time.monotonic())) >= self._limit

    def record(self, key: str) -> None:
        """Count one failure for ``key``."""
        now = time.monotonic()
        if key not in self._events and len(self._events) >= self._max_keys:
            # Bounded memory under a spray from many addresses: forget the oldest key.
            self._events.pop(next(iter(self._events)))
        events = self._events.setdefault(key, deque())
        events.append(now)
        self._recent(key, now)


class Authenticator:
    """Verifies dealer credentials against the store and the current policy set."""

    def __init__(
        self,
        storage: Storage,
        policies: PolicyStore,
        limiter: FailureLimiter,
        cache_seconds: float = 300.0,
    ) -> None:
        self._storage = storage
        self._policies = policies
        self._limiter = limiter
        self._cache_seconds = cache_seconds
        # Successful verifications keyed by a keyed hash of (user, password, stored hash):
        # a CRM opening many connections pays for scrypt once per cache period, and a
        # password change (new stored hash) invalidates the entry at once.
        self._cache_key = os.urandom(32)
        self._cache: dict[bytes, float] = {}

    def _token(self, username: str, password: bytes, stored: str) -> bytes:
        material = b"\0".join((username.encode(), password, stored.encode()))
        return hmac.new(self._cache_key, material, hashlib.sha256).digest()

    async def login(self, username: str, password: bytes, peer_ip: str) -> AuthOutcome:
        """Check one login from ``peer_ip``."""
        if self._limiter.blocked(peer_ip):
            return AuthOutcome(AuthStatus.THROTTLED, username)
        try:
            credential = await self._storage.get_credential(username)
        except StorageError:
            log.warning("credential store unavailable during AUTH from %s", peer_ip)
            return AuthOutcome(AuthStatus.UNAVAILABLE, username)
        stored = credential.password_hash if credential else DUMMY_HASH
        token = self._token(username, password, stored)
        now = time.monotonic()
        if credential is not None and self._cache.get(token, 0.0) > now:
            ok = True
        else:
            ok = await asyncio.to_thread(verify_password, password, stored)
            ok = ok and credential is not None
            if ok:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[token] = now + self._cache_seconds
        dealer = None
        if ok and credential is not None:
            dealer = self._policies.current.dealer_for_user(username)
            if dealer is None or dealer.dealer_id != credential.dealer_id:
                # The credential names a dealer that the policy no longer binds to this
                # user: treat as invalid rather than guess which one is right.
                log.warning("AUTH user %r is not bound to dealer %s in policy",
                            username, credential.dealer_id)  # fmt: skip
                ok = False
        if not ok:
            self._limiter.record(peer_ip)
            return AuthOutcome(AuthStatus.INVALID, username)
        assert dealer is not None
        return AuthOutcome(AuthStatus.OK, username, dealer.dealer_id)
