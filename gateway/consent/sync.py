"""Closing the loop with the CRM: consent statements written and pushed to the dealer's CRM.

``CrmSync.sync(dealer)`` reads what happened since its last run (the dealer's suppression
entries by id, the withdrawals by the time they were recorded; ``Storage.consent_sync_state``
keeps the position), turns each into a ``Statement`` (``gateway/consent/crm.py``), writes
the unsubscribes and complaints into the consent record as opt-outs, and, when the
dealer's policy names a CRM webhook, posts them there signed with the dealer's secret. The
position moves only once the CRM answered 2xx, so a CRM that is down gets the same
statements again on the next run (each has a stable ``id``); without a webhook it moves at
once (``mailgate consent statements`` exports the same statements as CSV either way).
``run`` does this for every dealer every ``SYNC_EVERY`` in the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta

from gateway.clock import Clock
from gateway.consent.crm import (
    Statement,
    StatementKind,
    as_preference,
    from_suppression,
    from_withdrawal,
    payload,
    signature,
)
from gateway.errors import StorageError
from gateway.policy.model import DealerPolicy
from gateway.policy.store import PolicyStore
from gateway.storage.base import Storage
from gateway.tokens import MIN_KEY_BYTES

__all__ = ["SYNC_EVERY", "CrmSync", "post"]

log = logging.getLogger("gateway.consent")

SYNC_EVERY = timedelta(minutes=1)
PAGE = 500  # statements per push
TIMEOUT = 10.0  # seconds for the CRM to answer
BACKLOG_PAGES = 20  # pushes per dealer and run, at most

Post = Callable[[str, bytes, dict[str, str], float], int]


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST ``body`` to ``url``; the HTTP status (a 4xx or 5xx raises ``HTTPError``)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return int(response.status)


class CrmSync:
    """Writes consent statements into the record and pushes them to the dealers' CRMs."""

    def __init__(
        self, storage: Storage, policies: PolicyStore, clock: Clock, sender: Post = post
    ) -> None:
        self._storage = storage
        self._policies = policies
        self._clock = clock
        self._post = sender

    def _secret(self, dealer: DealerPolicy) -> bytes:
        path = self._policies.directory / dealer.consent.crm_secret_file
        secret = path.read_bytes().strip()
        if len(secret) < MIN_KEY_BYTES:
            raise ValueError(f"{path}: the CRM webhook secret needs {MIN_KEY_BYTES} bytes or more")
        return secret

    async def sync(self, dealer: DealerPolicy) -> int:
        """One push for ``dealer``: the statements recorded (and sent) now."""
        dealer_id = dealer.dealer_id
        now = self._clock.now()
        after_id, after_time = await self._storage.consent_sync_state(dealer_id)
        entries = await self._storage.list_suppressions(dealer_id, after_id=after_id, limit=PAGE)
        withdrawals = await self._storage.consent_withdrawals(dealer_id, after_time, PAGE)
        statements: list[Statement] = [s for e in entries if (s := from_suppression(e))]
        statements += [from_withdrawal(at, event) for at, event in withdrawals]
        new_id = entries[-1].id if entries else after_id
        new_time = withdrawals[-1][0] if withdrawals else after_time
        if new_id == after_id and new_time == after_time:
            return 0
        opt_outs = [as_preference(s) for s in statements if s.kind is not StatementKind.WITHDRAWAL]
        if opt_outs:
            # "Written as consent statements": the record names them (consent show).
            await self._storage.record_consent([], opt_outs, now)
        url = dealer.consent.crm_webhook_url
        if url and statements:
            try:
                body = payload(dealer_id, statements, dealer.consent.crm_vocabulary, now)
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": "mailgate",
                    "X-Mailgate-Signature": signature(self._secret(dealer), body),
                }
                status = await asyncio.to_thread(self._post, url, body, headers, TIMEOUT)
            except (OSError, ValueError) as exc:  # urllib's errors are OSErrors
                await self._failed(dealer, after_id, after_time, f"{exc}")
                return 0
            if not 200 <= status < 300:
                await self._failed(dealer, after_id, after_time, f"HTTP {status}")
                return 0
        await self._storage.set_consent_sync_state(
            dealer_id, new_id, new_time, len(statements), "", now
        )
        if statements:
            log.info("consent statements dealer=%s count=%d pushed=%s", dealer_id,
                     len(statements), "yes" if url else "no webhook")  # fmt: skip
        return len(statements)

    async def _failed(
        self, dealer: DealerPolicy, after_id: int, after_time: datetime | None, why: str
    ) -> None:
        log.warning("consent statements for dealer=%s not pushed: %s", dealer.dealer_id, why)
        await self._storage.set_consent_sync_state(
            dealer.dealer_id, after_id, after_time, 0, why[:500], self._clock.now()
        )

    async def run(self, every: timedelta = SYNC_EVERY) -> None:
        """Sync every dealer, then again every ``every``, until cancelled."""
        while True:
            for dealer in list(self._policies.current.dealers.values()):
                try:
                    for _ in range(BACKLOG_PAGES):  # a backlog: the next pages at once
                        if not await self.sync(dealer):
                            break
                except StorageError as exc:
                    log.warning("consent statements: store error for %s: %s", dealer.dealer_id, exc)
            await asyncio.sleep(every.total_seconds())
