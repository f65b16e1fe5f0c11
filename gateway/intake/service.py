"""Intake: the one orchestration on the hot path, from raw DATA bytes to a reply.

``Intake.accept(envelope, raw)`` reads what the checks need from the store (the
recipients' history, their consent records), runs the pure core
(``gateway.intake.prepare``: line endings, limits, one parse, the checks, decide, repair,
the submission-server header changes and one copy per recipient), signs each copy last,
and stores them all in one durable transaction. Only then does it answer ``250 2.0.0``.
Anything unexpected answers ``451 4.3.0`` and is logged with the dealer: never a 5xx for
our own fault, never a traceback to the client. The metrics and log lines about a
message are written here, from what ``prepare`` returned.

The CPU-bound part (prepare, sign) of a large message runs in a worker thread under a
time budget, so it does not stall every other session on the event loop; small messages,
the common case, are processed inline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from gateway import replies
from gateway.clock import Clock
from gateway.consent.ledger import consent_writes
from gateway.consent.rules import ConsentRecord
from gateway.dkim.signing import Signer
from gateway.duplicates.fingerprints import Recipients
from gateway.duplicates.sendlog import SendLog, delivers_every_duplicate
from gateway.errors import SigningError, StorageError
from gateway.intake.prepare import CheckCrashed, Limits, Prepared, Stamp, State, prepare
from gateway.mail.message import ParseLimits
from gateway.metrics import Metrics
from gateway.pipeline.decide import Verdict
from gateway.policy.model import DealerPolicy
from gateway.policy.store import PolicyStore
from gateway.settings import SubmissionSettings
from gateway.storage.base import Storage
from gateway.tracking import RefCodec, new_submission_id
from gateway.types import Envelope, Reply
from gateway.unsubscribe.links import UnsubscribeLinks

log = logging.getLogger("gateway.smtp")

INLINE_BYTES = 64 * 1024  # messages up to this size are processed on the event loop

# Duplicate claims (sendlog.py): how often a submission is decided again after another
# connection or node sent to one of its recipients first; the marker reply says "again".
CLAIM_ATTEMPTS = 3
_CLAIM_LOST = Reply(451, "4.3.0", "duplicate claim lost")


def submission_limits(settings: SubmissionSettings) -> Limits:
    """The content limits ``prepare`` applies, from the ``[submission]`` settings."""
    return Limits(
        parse=ParseLimits(
            max_header_bytes=settings.max_header_bytes,
            max_mime_depth=settings.max_mime_depth,
        ),
        max_hops=settings.max_hops,
        bare_line_endings=settings.bare_line_endings,
    )


class Intake:
    """Turns a submission into stored messages, or into a refusal."""

    def __init__(
        self,
        *,
        storage: Storage,
        policies: PolicyStore,
        refs: RefCodec,
        signer: Signer,
        clock: Clock,
        metrics: Metrics,
        settings: SubmissionSettings,
        hostname: str,
        on_enqueued: Callable[[int], None] = lambda _n: None,
        bounce_domain: str = "",
        unsubscribe: UnsubscribeLinks | None = None,
    ) -> None:
        # With a bounce domain each copy's envelope sender is its VERP address, so a
        # bounce names the exact message and recipient (tracking.py; feedback/ingest.py).
        # With links configured, commercial copies get one-click unsubscribe fields.
        self._stamp = Stamp(hostname, refs, bounce_domain, unsubscribe)
        self._storage = storage
        self._policies = policies
        self._signer = signer
        self._clock = clock
        self._metrics = metrics
        self._settings = settings
        self._on_enqueued = on_enqueued
        self._sendlog = SendLog(storage, metrics, clock, policies)
        # Large messages are prepared in threads; the work is pure Python under the GIL,
        # so more threads than cores only stretch every one of them past its time budget.
        self._threads = asyncio.Semaphore(os.cpu_count() or 2)
        self._limits = submission_limits(settings)

    async def accept(self, env: Envelope, raw: bytes) -> Reply:
        """Decide on one submission and, unless refused, store it durably."""
        started = time.perf_counter()
        try:
            reply = await self._accept(env, raw)
        except Exception:
            self._metrics.errors.labels("intake").inc()
            log.exception("intake failed dealer=%s peer=%s", env.dealer_id, env.peer)
            reply = replies.INTERNAL_ERROR
        self._metrics.accept_seconds.observe(time.perf_counter() - started)
        return reply

    async def _accept(self, env: Envelope, raw: bytes) -> Reply:
        # A lost duplicate claim means another connection or node has just sent to one of
        # the recipients: decide again with that send in view (see sendlog.py).
        for _ in range(CLAIM_ATTEMPTS):
            reply = await self._accept_once(env, raw)
            if reply is not _CLAIM_LOST:
                return reply
        dealer = self._policies.current.dealer(env.dealer_id)
        if dealer is not None and delivers_every_duplicate(dealer):
            # Contention can change the copies' tags, never whether they go: store this
            # decision with claims that cannot be lost rather than refuse (sendlog.py).
            log.info("duplicate claims kept changing; storing as decided dealer=%s peer=%s",
                     env.dealer_id, env.peer)  # fmt: skip
            reply = await self._accept_once(env, raw, yielding=True)
            if reply is not _CLAIM_LOST:
                return reply
        log.warning("duplicate claims kept changing dealer=%s peer=%s", env.dealer_id, env.peer)
        return replies.STORAGE_ERROR

    async def _prepare_in_thread(
        self,
        budget: float,
        env: Envelope,
        raw: bytes,
        dealer: DealerPolicy,
        submission_id: str,
        history: Recipients,
        consent: Mapping[str, ConsentRecord] | None,
    ) -> Prepared:
        """Run ``_prepare`` in a thread, at most one per core, under the time budget.

        The budget starts when the work does, not while it waits for a core: under a burst
        of large messages, waiting is contention, not a pathological message, and counting
        it would refuse every one of them in turn. A thread cannot be stopped, so one that
        overruns keeps its slot until it ends; the slots bound how much CPU and memory
        such leftovers can hold (reliability G5).
        """
        await self._threads.acquire()
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(
            None, self._prepare, env, raw, dealer, submission_id, history, consent
        )
        work.add_done_callback(self._thread_done)
        async with asyncio.timeout(budget):
            return await asyncio.shield(work)

    def _thread_done(self, work: asyncio.Future[Prepared]) -> None:
        self._threads.release()
        if not work.cancelled():
            work.exception()  # an overrun's outcome was already answered with 451; retrieved

    async def _accept_once(self, env: Envelope, raw: bytes, yielding: bool = False) -> Reply:
        dealer = self._policies.current.dealer(env.dealer_id)
        if dealer is None:
            return replies.UNKNOWN_DEALER
        submission_id = new_submission_id(env.received_at)
        try:
            history = await self._sendlog.fetch(env, dealer)
            # Consent (gateway/consent/rules.py): the recipients' records, for the pure checks.
            consent = (
                await self._storage.consent_records(dealer.dealer_id, env.rcpt_tos)
                if dealer.consent.enforce
                else None
            )
        except StorageError as exc:
            log.error("reading recipients' history failed dealer=%s submission=%s: %s",
                      dealer.dealer_id, submission_id, exc)  # fmt: skip
            return replies.STORAGE_ERROR
        budget = self._settings.check_time_budget.total_seconds()
        try:
            if len(raw) <= INLINE_BYTES:
                # Measured: for typical CRM mail the thread hop costs more than the work and,
                # the work being pure Python, buys no parallelism (it holds the GIL); the
                # loop is blocked for a few milliseconds at most.
                prepared = self._prepare(env, raw, dealer, submission_id, history, consent)
            else:
                prepared = await self._prepare_in_thread(
                    budget, env, raw, dealer, submission_id, history, consent
                )
        except TimeoutError:
            self._metrics.errors.labels("checks-timeout").inc()
            log.error("checks exceeded %.1fs dealer=%s submission=%s",
                      budget, dealer.dealer_id, submission_id)  # fmt: skip
            return replies.CHECKS_TIMED_OUT
        except CheckCrashed as exc:
            self._metrics.errors.labels("check").inc()
            log.error("check %s raised dealer=%s submission=%s", exc.name, dealer.dealer_id,
                      submission_id, exc_info=exc.__cause__)  # fmt: skip
            return replies.INTERNAL_ERROR
        except SigningError as exc:
            self._metrics.errors.labels("signing").inc()
            self._metrics.dkim_signing_failures.labels(dealer.dealer_id).inc()
            log.error("signing failed dealer=%s submission=%s: %s",
                      dealer.dealer_id, submission_id, exc)  # fmt: skip
            return replies.SIGNING_FAILED
        if prepared.refused:
            # Refused outside policy (a broken limit, an unfoldable line): nothing stored.
            self._metrics.refused.labels(prepared.refused).inc()
            log.info("refused dealer=%s submission=%s: %s", dealer.dealer_id, submission_id,
                     prepared.reply.line() if prepared.reply else "-")  # fmt: skip
            return prepared.reply or replies.INTERNAL_ERROR
        if prepared.verdict is not None:
            self._record(dealer, prepared.verdict)
        # The consent ledger, the consent refusals and their DSNs (gateway/consent/ledger.py).
        writes = consent_writes(
            dealer=dealer,
            verdict=prepared.verdict,
            messages=prepared.messages,
            records=consent,
            envelope=env,
            original=raw,
            submission_id=submission_id,
            now=self._clock.now(),
            hostname=self._stamp.hostname,
        )
        try:
            # The messages, their duplicate claims and drops and the consent ledger, in one commit.
            stored = await self._sendlog.store(
                dealer=dealer,
                verdict=prepared.verdict,
                messages=prepared.messages + writes.dsns,
                recipients=history,
                state=prepared.duplicates,
                submission_id=submission_id,
                consent=writes,
                yielding=yielding,
            )
        except StorageError as exc:
            log.error("enqueue failed dealer=%s submission=%s: %s",
                      dealer.dealer_id, submission_id, exc)  # fmt: skip
            return replies.STORAGE_ERROR
        if not stored:
            return _CLAIM_LOST
        for refusal in writes.refusals:
            log.info("consent refused submission=%s dealer=%s rcpt=<%s> code=%s dsn=%s",
                     submission_id, dealer.dealer_id, refusal.recipient, refusal.code,
                     refusal.dsn or "-")  # fmt: skip
        if not prepared.messages:
            return prepared.reply or replies.INTERNAL_ERROR
        self._on_enqueued(len(prepared.messages))
        for message in prepared.messages:
            log.info(
                "queued id=%s dealer=%s from=<%s> state=%s size=%d findings=%s",
                message.id, dealer.dealer_id, env.mail_from, message.state.value,
                len(message.data), ",".join(message.findings) or "-",
            )  # fmt: skip
        return prepared.reply or replies.queued(submission_id, len(prepared.messages))

    def _record(self, dealer: DealerPolicy, verdict: Verdict) -> None:
        self._metrics.received.labels(dealer.dealer_id, verdict.action.label).inc()
        for finding in verdict.findings:
            action = dealer.rule(finding.code).action
            self._metrics.findings.labels(dealer.dealer_id, finding.code, action.label).inc()

    # -- the CPU-bound part, run in a thread -------------------------------------------

    def _prepare(
        self,
        env: Envelope,
        raw: bytes,
        dealer: DealerPolicy,
        submission_id: str,
        history: Recipients,
        consent: Mapping[str, ConsentRecord] | None = None,
    ) -> Prepared:
        """The pure core, then each copy signed (the last change to its bytes)."""
        prepared = prepare(
            raw,
            env,
            dealer,
            limits=self._limits,
            stamp=self._stamp,
            now=self._clock.now(),
            submission_id=submission_id,
            state=State(history, consent),
        )
        if not prepared.messages:
            return prepared
        signed = tuple(
            replace(message, data=self._signer.sign(message.data, dealer))
            for message in prepared.messages
        )
        return replace(prepared, messages=signed)
