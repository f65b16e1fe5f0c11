"""Consent operations over the store: explain one recipient, tally a dealer, keep the gauges.

The seam the CLI (``mailgate consent``) and the admin API share: ``ConsentOps.explain``
answers "may this dealer email this address, and why", ``ConsentOps.record`` posts events
one by one, ``ConsentOps.tally`` counts a dealer's eligible and locked recipients, and
``ConsentGauges`` refreshes ``mailgate_consent_recipients{dealer,state}`` from the tallies
(every ``GAUGE_REFRESH`` in the gateway: evaluating every recipient is a scan, not a
per-message cost). The rules themselves are pure, in ``gateway/consent/rules.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.clock import Clock
from gateway.consent.rules import (
    Block,
    ConsentEvent,
    Eligibility,
    Explanation,
    Preference,
    evaluate,
    explain,
    normalise_address,
)
from gateway.errors import StorageError
from gateway.metrics import Metrics
from gateway.policy.model import DealerPolicy
from gateway.policy.store import PolicyStore
from gateway.storage.base import Storage

log = logging.getLogger("gateway.consent.rules")

GAUGE_REFRESH = timedelta(minutes=15)
PAGE = 2000


@dataclass(frozen=True, slots=True)
class Tally:
    """A dealer's recipients on record, by standing for the dealer's own marketing."""

    eligible: int = 0
    locked: int = 0


class ConsentOps:
    """Consent reads and writes for operators and the admin API."""

    def __init__(self, storage: Storage, clock: Clock) -> None:
        self._storage = storage
        self._clock = clock

    async def explain(
        self, dealer: DealerPolicy, address: str, at: datetime | None = None
    ) -> Explanation:
        """The recipient's events, the window each opens, its standing and what renews it."""
        key = normalise_address(address)
        now = at or self._clock.now()
        records = await self._storage.consent_records(dealer.dealer_id, [key])
        return explain(
            key, records[key], dealer.consent, now, block=await self.block(dealer, key, now)
        )

    async def block(self, dealer: DealerPolicy, address: str, now: datetime) -> Block | None:
        """The recipient's active suppression as the rules read it: what RCPT TO looks up."""
        entry = await self._storage.find_suppression(dealer.dealer_id, address, now)
        if entry is None:
            return None
        return Block(entry.reason, entry.created_at, entry.source, entry.commercial_only)

    async def record(
        self, events: Sequence[ConsentEvent], preferences: Sequence[Preference] = ()
    ) -> int:
        """Record events and preferences (idempotent); rows new or changed."""
        return await self._storage.record_consent(events, preferences, self._clock.now())

    async def tally(self, dealer: DealerPolicy, at: datetime | None = None) -> Tally:
        """Count the dealer's recipients eligible and locked for its own marketing now."""
        now = at or self._clock.now()
        eligible = locked = 0
        after = ""
        while True:
            page = await self._storage.consent_page(dealer.dealer_id, after, PAGE)
            for _address, record in page:
                if evaluate(record, dealer.consent, now).eligible:
                    eligible += 1
                else:
                    locked += 1
            if len(page) < PAGE:
                return Tally(eligible, locked)
            after = page[-1][0]
            await asyncio.sleep(0)  # a long scan must not starve the SMTP sessions


class ConsentGauges:
    """Keeps ``mailgate_consent_recipients`` current for dealers whose rules enforce consent."""

    def __init__(
        self, storage: Storage, policies: PolicyStore, clock: Clock, metrics: Metrics
    ) -> None:
        self._ops = ConsentOps(storage, clock)
        self._policies = policies
        self._metrics = metrics

    async def refresh(self) -> dict[str, Tally]:
        """Tally every enforcing dealer and set its two gauge values."""
        tallies: dict[str, Tally] = {}
        for dealer in self._policies.current.dealers.values():
            if not dealer.consent.enforce:
                continue
            tally = await self._ops.tally(dealer)
            tallies[dealer.dealer_id] = tally
            self._metrics.consent_recipients.labels(dealer.dealer_id, "eligible").set(
                tally.eligible
            )
            self._metrics.consent_recipients.labels(dealer.dealer_id, "locked").set(tally.locked)
        return tallies

    async def run(self, every: timedelta = GAUGE_REFRESH) -> None:
        """Refresh now and then every ``every``, until cancelled; store errors are logged."""
        while True:
            try:
                await self.refresh()
            except StorageError as exc:
                log.warning("consent gauges: refresh failed: %s", exc)
            await asyncio.sleep(every.total_seconds())


def _eligibility_json(e: Eligibility) -> dict[str, Any]:
    return {
        "eligible": e.eligible,
        "reason": e.reason,
        "code": e.code,
        "until": e.until.isoformat() if e.until else None,
        "basis": e.basis.kind.value if e.basis else None,
    }


def explanation_json(shown: Explanation) -> dict[str, Any]:
    """``shown`` as plain JSON data (``consent show --json`` and the admin API)."""
    rules = shown.rules
    block = shown.block
    return {
        "address": shown.address,
        "rules": {
            "enforce": rules.enforce,
            "name": rules.name,
            "law": rules.law or None,
            "preset": rules.preset or None,
            "time_zone": str(rules.zone),
            "windows": {kind.value: str(window) for kind, window in rules.windows.items()},
            "express_consent": rules.express_consent,
            "require_opt_in": rules.require_opt_in,
        },
        "suppression": None
        if block is None
        else {
            "reason": block.reason,
            "since": block.since.isoformat(),
            "source": block.source,
            "commercial_only": block.commercial_only,
        },
        "events": [
            {
                "kind": line.event.kind.value,
                "on": line.event.on.isoformat(),
                "last_payment": line.event.last_payment.isoformat()
                if line.event.last_payment
                else None,
                "ref": line.event.ref,
                "source": line.event.source,
                "proof": line.event.proof,
                "window": str(line.window) if line.window else None,
                "window_ends": line.ends.isoformat() if line.ends else None,
                "void": line.void or None,
            }
            for line in shown.events
        ],
        "preferences": [
            {
                "channel": p.channel,
                "topic": p.topic.value,
                "granted": p.granted,
                "at": p.at.isoformat(),
                "source": p.source,
            }
            for p in shown.preferences
        ],
        "eligibility": {
            topic.value: _eligibility_json(e) for topic, e in shown.eligibility.items()
        },
        "transactional": _eligibility_json(shown.transactional),
        "renewal": shown.renewal,
    }
