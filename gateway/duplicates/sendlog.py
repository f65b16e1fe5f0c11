"""The per-recipient send log around intake: read it before the checks, claim in it on store.

Intake uses ``SendLog`` at two points of a submission:

1. ``fetch`` (before the checks): normalise each envelope recipient under the dealer's
   options and read its history from the store (version and recent sends). The
   result, with the message's print, becomes ``CheckContext.duplicates``; the checks
   stay pure.
2. ``store`` (instead of a plain enqueue): one transaction that claims each stored
   recipient's send (the exact fingerprint under a unique key, and the recipient's
   version for caps and near-duplicates), records the duplicate drops, and enqueues the
   messages. If another connection or node changed a recipient's history after step 1,
   the store refuses, nothing is written, and intake starts the submission over, so the
   checks see that send. A failed enqueue therefore leaves no phantom claim, and no 250
   is ever given without one.

Claim contention never becomes a refusal where policy delivers anyway. A copy that policy
delivers although it is a duplicate rests on sends already seen, which later sends cannot
undo: an exact duplicate claims nothing, a near duplicate (or a capped copy, when near
duplicates are delivered too) is recorded without the version guard. And when contention
outlasts the retries for a dealer that delivers every kind of duplicate, intake stores its
last decision with claims that cannot be lost (``yielding``): at worst a copy lacks a tag.

It also expires old history in the background, in small batches, at most every few
minutes, so intake never waits behind one long delete.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from types import MappingProxyType

from gateway.clock import Clock
from gateway.consent.ledger import EMPTY_WRITES, ConsentWrites
from gateway.duplicates.fingerprints import (
    DuplicateDrop,
    DuplicateState,
    Recipients,
    SendClaim,
    normalise_recipient,
    options_for,
    recipient_key,
)
from gateway.metrics import Metrics
from gateway.pipeline.decide import Verdict
from gateway.policy.model import DealerPolicy
from gateway.policy.store import PolicyStore
from gateway.storage.base import Storage
from gateway.types import Action, Envelope, NewMessage

log = logging.getLogger("gateway.smtp")

# Finding code -> the ``kind`` label of drop records and of the metric.
DUPLICATE_CODES: Mapping[str, str] = MappingProxyType(
    {"duplicate-message": "exact", "near-duplicate-message": "near", "frequency-cap": "cap"}
)
DROPS_KEPT = timedelta(days=30)  # how long `mailgate duplicates list` can look back
EXPIRY_EVERY = timedelta(minutes=5)
# Small batches with a pause between them: each batch is one short transaction, so intake
# never waits behind a long delete, and the pause leaves the disk to the commits that
# answer CRMs (bench/duplicates.py measures decisions while expiry runs).
EXPIRY_BATCH = 1000
EXPIRY_PAUSE = 0.01  # seconds


def _delivers(dealer: DealerPolicy, code: str) -> bool:
    """Whether policy sends a copy that has this finding (tagged or not)."""
    return dealer.rule(code).action < Action.HOLD


def delivers_every_duplicate(dealer: DealerPolicy) -> bool:
    """Whether the dealer's policy sends exact and near duplicates and capped copies alike.

    Then contention over a claim can change a copy's tags but never whether it goes.
    """
    return all(_delivers(dealer, code) for code in DUPLICATE_CODES)


class SendLog:
    """Reads and claims recipients' sends for intake; expires old ones."""

    def __init__(
        self, storage: Storage, metrics: Metrics, clock: Clock, policies: PolicyStore
    ) -> None:
        self._storage = storage
        self._metrics = metrics
        self._clock = clock
        self._policies = policies
        self._last_expiry = clock.now()
        self._expiry: asyncio.Task[int] | None = None

    async def fetch(self, env: Envelope, dealer: DealerPolicy) -> Recipients:
        """Normalise the envelope recipients and read their histories."""
        options = options_for(dealer.checks)
        keys = {
            rcpt: normalise_recipient(
                rcpt,
                fold_local_part=options.fold_local_part,
                strip_plus_tag=options.strip_plus_tag,
            )
            for rcpt in env.rcpt_tos
        }
        rkeys = {rcpt: recipient_key(dealer.dealer_id, key) for rcpt, key in keys.items()}
        since = self._clock.now() - options.history
        found = await self._storage.recipient_histories(list(rkeys.values()), since)
        histories = {rcpt: found[rkey] for rcpt, rkey in rkeys.items()}
        return Recipients(options, MappingProxyType(keys), MappingProxyType(histories))

    async def store(
        self,
        *,
        dealer: DealerPolicy,
        verdict: Verdict | None,
        messages: Sequence[NewMessage],
        recipients: Recipients,
        state: DuplicateState | None,
        submission_id: str,
        consent: ConsentWrites = EMPTY_WRITES,
        yielding: bool = False,
    ) -> bool:
        """Enqueue ``messages`` with their claims and the verdict's duplicate drops.

        Returns False when a claim was lost (nothing stored: decide again). ``yielding``
        claims cannot be lost (see the module docstring; only for a dealer that
        ``delivers_every_duplicate``). Raises ``StorageError`` like ``Storage.enqueue``.
        """
        now = self._clock.now()
        drops = self._drops(dealer, verdict, submission_id, now)
        claims = (
            []
            if state is None
            else self._claims(dealer, messages, verdict, recipients, state, now, yielding)
        )
        if not messages and not drops and consent is EMPTY_WRITES:
            return True
        if not await self._storage.enqueue_claimed(messages, claims, drops, consent):
            log.info("duplicate claim lost, deciding again dealer=%s submission=%s",
                     dealer.dealer_id, submission_id)  # fmt: skip
            return False
        for drop in drops:
            self._metrics.duplicates_dropped.labels(dealer.dealer_id, drop.kind).inc()
            log.info(
                "duplicate %s submission=%s dealer=%s rcpt=<%s> kind=%s earlier=%s",
                drop.action, submission_id, dealer.dealer_id, drop.recipient, drop.kind,
                drop.earlier or "-",
            )  # fmt: skip
        self._maybe_expire(now)
        return True

    @staticmethod
    def _drops(
        dealer: DealerPolicy, verdict: Verdict | None, submission_id: str, now: datetime
    ) -> list[DuplicateDrop]:
        if verdict is None:
            return []
        return [
            DuplicateDrop(
                dealer_id=dealer.dealer_id,
                recipient=rcpt,
                submission_id=submission_id,
                kind=DUPLICATE_CODES[finding.code],
                code=finding.code,
                action=dealer.rule(finding.code).action.label,
                earlier=finding.data.get("earlier", ""),
                detail=finding.detail,
                at=now,
                subject=finding.data.get("subject", ""),
            )
            for rcpt, finding in verdict.dropped.items()
            if finding.code in DUPLICATE_CODES
        ]

    @staticmethod
    def _claims(
        dealer: DealerPolicy,
        messages: Sequence[NewMessage],
        verdict: Verdict | None,
        recipients: Recipients,
        state: DuplicateState,
        now: datetime,
        yielding: bool = False,
    ) -> list[SendClaim]:
        found = {
            (f.recipient, f.code)
            for f in (verdict.findings if verdict else ())
            if f.recipient is not None and f.code in DUPLICATE_CODES
        }
        # Every send keeps its signature and claims the recipient's version, transactional
        # ones too: near-duplicate detection may compare transactional mail (three quote
        # replies to one customer), and two of them decided at once must not both pass.
        # An exact duplicate that policy lets through (tag) keeps the earlier claim.
        tagged = {rcpt for rcpt, code in found if code == "duplicate-message"}
        # Delivered although alike or capped: later sends can only make such a copy an
        # exact duplicate (the exact key still guards that) or, for a capped copy, a near
        # one, which matters only when near duplicates are not delivered.
        settled = {rcpt for rcpt, code in found if code == "near-duplicate-message"}
        if _delivers(dealer, "near-duplicate-message"):
            settled |= {rcpt for rcpt, code in found if code == "frequency-cap"}
        claims: list[SendClaim] = []
        for message in messages:
            history = recipients.histories.get(message.rcpt)
            if history is None:  # not an envelope recipient (cannot happen): no claim
                continue
            claims.append(
                SendClaim(
                    recipient=history.key,
                    fingerprint=state.print.fingerprint,
                    message_id=message.id,
                    sent_at=now,
                    signature=state.print.signature,
                    category=state.print.category,
                    exact_since=now - state.options.window,
                    expected_version=None if message.rcpt in tagged else history.version,
                    claim_exact=message.rcpt not in tagged,
                    compare_version=not (yielding or message.rcpt in settled),
                    exact_yields=yielding,
                )
            )
        return claims

    # -- expiry ----------------------------------------------------------------------------

    def _retention(self) -> timedelta:
        dealers = self._policies.current.dealers.values()
        return max(
            (options_for(d.checks).history for d in dealers),
            default=timedelta(days=7),
        )

    def _maybe_expire(self, now: datetime) -> None:
        if now - self._last_expiry < EXPIRY_EVERY:
            return
        if self._expiry is not None and not self._expiry.done():
            return
        self._last_expiry = now
        self._expiry = asyncio.create_task(self.expire(now), name="duplicates-expiry")

    async def expire(self, now: datetime) -> int:
        """Delete history older than every dealer's longest window, batch by batch."""
        sends_before, drops_before = now - self._retention(), now - DROPS_KEPT
        total = 0
        try:
            while removed := await self._storage.expire_duplicates(
                sends_before, drops_before, EXPIRY_BATCH
            ):
                total += removed
                await asyncio.sleep(EXPIRY_PAUSE)
        except Exception as exc:  # housekeeping: never take intake down
            log.warning("duplicates expiry stopped after %d rows: %s", total, exc)
        if total:
            log.info("expired %d duplicate-history rows", total)
        return total
