"""Consent operations over the store: explain one recipient, tally a dealer, keep the gauges.

The seam the CLI (``mailgate consent``) and the admin API share: ``ConsentOps.explain``
answers "may this dealer email this address, and why" (suppressions included: the answer
RCPT TO gives), ``ConsentOps.record`` posts events one by one, ``ConsentOps.tally`` counts
a dealer's eligible and locked recipients, ``standings`` pages through every recipient's
standing (``expiring`` and ``locked`` lists), ``evidence`` through the consent ledger and
``refusals`` through the recipients left out for want of consent; ``ConsentGauges``
refreshes ``mailgate_consent_recipients{dealer,state}`` from the tallies (every
``GAUGE_REFRESH`` in the gateway: evaluating every recipient is a scan, not a per-message
cost). The rules themselves are pure, in ``gateway/consent/rules.py``; the rows the
exports write, in ``gateway/consent/reports.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.clock import Clock
from gateway.consent.crm import Statement, from_suppression, from_withdrawal
from gateway.consent.erasure import Erasures
from gateway.consent.ledger import ConsentRefusal, LedgerEntry
from gateway.consent.reports import Standing
from gateway.consent.rules import (
    Block,
    ConsentEvent,
    Eligibility,
    Explanation,
    Preference,
    day_of,
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

    async def blocks(self, dealer: DealerPolicy, now: datetime) -> dict[str, Block]:
        """Every active suppression that applies to ``dealer`` (its list, then the global)."""
        found: dict[str, Block] = {}
        for scope, global_only in ((None, True), (dealer.dealer_id, False)):
            after = 0
            while True:
                page = await self._storage.list_suppressions(
                    scope, global_only=global_only, active_at=now, after_id=after, limit=PAGE
                )
                for e in page:
                    # The dealer's own entry wins, as in find_suppression.
                    found[e.address] = Block(e.reason, e.created_at, e.source, e.commercial_only)
                if len(page) < PAGE:
                    break
                after = page[-1].id
        return found

    async def standings(
        self, dealer: DealerPolicy, at: datetime | None = None
    ) -> AsyncIterator[list[Standing]]:
        """Every recipient on record with its standing for the dealer's own marketing.

        A page at a time, in address order; suppressions are taken into account.
        """
        now = at or self._clock.now()
        blocks = await self.blocks(dealer, now)
        today = day_of(now, dealer.consent)
        after = ""
        while True:
            page = await self._storage.consent_page(dealer.dealer_id, after, PAGE)
            rules = dealer.consent
            yield [
                Standing.of(address, evaluate(record, rules, now, block=blocks.get(address)), today)
                for address, record in page
            ]
            if len(page) < PAGE:
                return
            after = page[-1][0]
            await asyncio.sleep(0)

    async def expiring(
        self, dealer: DealerPolicy, within: timedelta, at: datetime | None = None
    ) -> AsyncIterator[list[Standing]]:
        """Eligible recipients whose consent ends within ``within``, in address order."""
        now = at or self._clock.now()
        last = day_of(now, dealer.consent) + within
        async for page in self.standings(dealer, now):
            kept = [s for s in page if s.eligible and s.until is not None and s.until <= last]
            if kept:
                yield kept

    async def review(
        self, dealer: DealerPolicy, at: datetime | None = None
    ) -> AsyncIterator[list[Standing]]:
        """Recipients whose opt-in or express consent is older than ``review_after``."""
        async for page in self.standings(dealer, at):
            kept = [s for s in page if s.review_since is not None]
            if kept:
                yield kept

    async def locked(
        self, dealer: DealerPolicy, at: datetime | None = None
    ) -> AsyncIterator[list[Standing]]:
        """Recipients on record that may not get the dealer's commercial mail, with why."""
        async for page in self.standings(dealer, at):
            kept = [s for s in page if not s.eligible]
            if kept:
                yield kept

    async def evidence(
        self,
        dealer: DealerPolicy,
        address: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncIterator[list[LedgerEntry]]:
        """The consent ledger of one customer and/or a period, a page at a time."""
        after: tuple[datetime, str] | None = None
        while True:
            page = await self._storage.consent_ledger(
                dealer.dealer_id, address, since, until, after, PAGE
            )
            if page:
                yield page
            if len(page) < PAGE:
                return
            after = (page[-1].at, page[-1].message_id)

    async def statements(
        self, dealer: DealerPolicy, since: datetime | None = None
    ) -> AsyncIterator[list[Statement]]:
        """The dealer's consent statements (unsubscribes, complaints, withdrawals), by page.

        Made afresh from the suppression list and the withdrawals, as the CRM push makes them.
        """
        after = 0
        while True:
            page = await self._storage.list_suppressions(dealer.dealer_id, after_id=after,
                                                         limit=PAGE)  # fmt: skip
            found = [s for e in page if (s := from_suppression(e))]
            kept = [s for s in found if since is None or s.at >= since]
            if kept:
                yield kept
            if len(page) < PAGE:
                break
            after = page[-1].id
        moment = since
        while True:
            withdrawn = await self._storage.consent_withdrawals(dealer.dealer_id, moment, PAGE)
            if withdrawn:
                yield [from_withdrawal(at, event) for at, event in withdrawn]
            if len(withdrawn) < PAGE:
                return
            moment = withdrawn[-1][0]

    async def erase(
        self, dealer: DealerPolicy, address: str, erasures: Erasures, by: str, reason: str
    ) -> dict[str, int]:
        """Erase ``address`` for the dealer, keeping its keyed hash suppressed (Art. 17)."""
        return await self._storage.erase_consent(
            dealer.dealer_id,
            address,
            erasures.key(dealer.dealer_id, address),
            self._clock.now(),
            by,
            reason,
        )

    async def refusals(
        self, dealer: DealerPolicy, since: datetime | None = None, limit: int = 100
    ) -> list[ConsentRefusal]:
        """Recipients left out of a message for want of consent, newest first."""
        return await self._storage.consent_refusals(dealer.dealer_id, since, limit)

    async def tally(self, dealer: DealerPolicy, at: datetime | None = None) -> Tally:
        """Count the dealer's recipients eligible and locked for its own marketing now.

        The same answers as ``standings`` (suppressions included), so the gauges and the
        status page count what ``consent show`` says.
        """
        eligible = locked = 0
        async for page in self.standings(dealer, at):
            for standing in page:
                if standing.eligible:
                    eligible += 1
                else:
                    locked += 1
        return Tally(eligible, locked)


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
        "review_since": e.review_since.isoformat() if e.review_since else None,
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
