"""Intake: the one orchestration on the hot path, from raw DATA bytes to a reply.

``Intake.accept(envelope, raw)`` normalises line endings, enforces the content limits,
parses the message once, runs the checks, lets policy decide, rewrites the headers a
submission server owns (RFC 6409 §8: Received, Message-ID, Date; Bcc removed), splits
the submission into one message per recipient with its own tracking reference, signs
each copy last, and stores them all in one durable transaction. Only then does it answer
``250 2.0.0``. Anything unexpected answers ``451 4.3.0`` and is logged with the dealer:
never a 5xx for our own fault, never a traceback to the client.

The CPU-bound part (parse, checks, rewrite, sign) of a large message runs in a worker
thread under a time budget, so it does not stall every other session on the event loop;
small messages, the common case, are processed inline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from gateway import replies
from gateway.clock import Clock
from gateway.consent.rules import ConsentRecord
from gateway.dkim.signing import Signer
from gateway.duplicates.fingerprints import DuplicateState
from gateway.duplicates.sendlog import Recipients, SendLog, delivers_every_duplicate
from gateway.errors import SigningError, StorageError
from gateway.intake import repair
from gateway.mail import rewrite
from gateway.mail.message import MessageRejected, ParsedMessage, ParseLimits, parse
from gateway.metrics import Metrics
from gateway.pipeline import CHECKS, check_name
from gateway.pipeline.base import CheckContext, Finding
from gateway.pipeline.decide import Verdict, decide
from gateway.policy.model import DealerPolicy
from gateway.policy.store import PolicyStore
from gateway.settings import SubmissionSettings
from gateway.storage.base import Storage
from gateway.tracking import RefCodec, message_id_for, new_submission_id
from gateway.types import Action, Envelope, MessageState, NewMessage, Reply
from gateway.unsubscribe.service import UnsubscribeLinks, header_plan, is_commercial

log = logging.getLogger("gateway.smtp")

INLINE_BYTES = 64 * 1024  # messages up to this size are processed on the event loop

_REJECTIONS: dict[str, Reply] = {
    "header-too-large": replies.HEADER_TOO_BIG,
    "mime-too-deep": replies.MIME_TOO_DEEP,
    "too-many-parts": replies.TOO_MANY_PARTS,
}

# Duplicate claims (sendlog.py): how often a submission is decided again after another
# connection or node sent to one of its recipients first; the marker reply says "again".
CLAIM_ATTEMPTS = 3
_CLAIM_LOST = Reply(451, "4.3.0", "duplicate claim lost")


class CheckCrashed(Exception):
    """A check raised; carries the check's name for the log line."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass(frozen=True, slots=True)
class Prepared:
    """The outcome of the CPU-bound part of intake."""

    reply: Reply | None  # a refusal, or None when messages are ready to store
    verdict: Verdict | None
    messages: tuple[NewMessage, ...]
    submission_id: str
    duplicates: DuplicateState | None = None


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
        # With links configured, commercial copies get one-click unsubscribe fields.
        self._unsubscribe = unsubscribe
        # With a bounce domain each copy's envelope sender is its VERP address, so a
        # bounce names the exact message and recipient (tracking.py; feedback/ingest.py).
        self._bounce_domain = bounce_domain
        self._storage = storage
        self._policies = policies
        self._refs = refs
        self._signer = signer
        self._clock = clock
        self._metrics = metrics
        self._settings = settings
        self._hostname = hostname
        self._on_enqueued = on_enqueued
        self._sendlog = SendLog(storage, metrics, clock, policies)
        # Large messages are prepared in threads; the work is pure Python under the GIL,
        # so more threads than cores only stretch every one of them past its time budget.
        self._threads = asyncio.Semaphore(os.cpu_count() or 2)
        self._limits = ParseLimits(
            max_header_bytes=settings.max_header_bytes,
            max_mime_depth=settings.max_mime_depth,
        )

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
            log.error("signing failed dealer=%s submission=%s: %s",
                      dealer.dealer_id, submission_id, exc)  # fmt: skip
            return replies.SIGNING_FAILED
        if prepared.verdict is not None:
            self._record(dealer, prepared.verdict)
        if prepared.reply is not None and prepared.verdict is None:
            return prepared.reply
        try:
            # The messages, their duplicate claims and the duplicate drops, in one commit.
            stored = await self._sendlog.store(
                dealer=dealer,
                verdict=prepared.verdict,
                messages=prepared.messages,
                recipients=history,
                state=prepared.duplicates,
                submission_id=submission_id,
                yielding=yielding,
            )
        except StorageError as exc:
            log.error("enqueue failed dealer=%s submission=%s: %s",
                      dealer.dealer_id, submission_id, exc)  # fmt: skip
            return replies.STORAGE_ERROR
        if not stored:
            return _CLAIM_LOST
        if prepared.reply is not None:
            return prepared.reply
        self._on_enqueued(len(prepared.messages))
        for message in prepared.messages:
            log.info(
                "queued id=%s dealer=%s from=<%s> state=%s size=%d findings=%s",
                message.id, dealer.dealer_id, env.mail_from, message.state.value,
                len(message.data), ",".join(message.findings) or "-",
            )  # fmt: skip
        return replies.queued(submission_id, len(prepared.messages))

    def _record(self, dealer: DealerPolicy, verdict: Verdict) -> None:
        self._metrics.received.labels(dealer.dealer_id, verdict.action.label).inc()
        for finding in verdict.findings:
            action = dealer.rule(finding.code).action
            self._metrics.findings.labels(dealer.dealer_id, finding.code, action.label).inc()

    # -- the CPU-bound part, run in a thread ---------------------------------------------

    def _prepare(
        self,
        env: Envelope,
        raw: bytes,
        dealer: DealerPolicy,
        submission_id: str,
        history: Recipients,
        consent: Mapping[str, ConsentRecord] | None = None,
    ) -> Prepared:
        def refuse(reply: Reply, reason: str) -> Prepared:
            self._metrics.refused.labels(reason).inc()
            log.info("refused dealer=%s submission=%s: %s", dealer.dealer_id, submission_id,
                     reply.line())  # fmt: skip
            return Prepared(reply, None, (), submission_id)

        # RFC 5321 §2.3.8: only CRLF ends a line. Bare CR/LF must not reach the next hop
        # (SMTP smuggling, CVE-2023-51764) and must be fixed before signing.
        if rewrite.has_bare_line_endings(raw):
            if self._settings.bare_line_endings == "reject":
                return refuse(replies.BARE_LINE_ENDING, "bare-line-ending")
            raw, _ = rewrite.normalize_line_endings(raw)
        # The NUL variant of the same attack (<CRLF> NUL "." <CRLF>) has no bare line end
        # but still ends DATA at a receiver that ignores NUL; fixed before signing too.
        raw, _ = rewrite.neutralize_nul_dot_lines(raw)
        try:
            message = parse(raw, self._limits)
        except MessageRejected as exc:
            return refuse(_REJECTIONS.get(exc.reply_kind, replies.MIME_TOO_DEEP), exc.reply_kind)
        if message.received_count >= self._settings.max_hops:
            return refuse(replies.TOO_MANY_HOPS, "too-many-hops")

        duplicates = history.state(message)
        findings = self._run_checks(message, dealer, env, duplicates, consent)
        verdict = decide(findings, dealer, env.rcpt_tos)
        if verdict.reply is not None:
            return Prepared(verdict.reply, verdict, (), submission_id)
        recipients = [r for r in env.rcpt_tos if r not in verdict.dropped]
        if not recipients and verdict.action is Action.DROP:
            return Prepared(replies.nothing_to_send(submission_id), verdict, (), submission_id)
        if not recipients:
            return Prepared(replies.NO_RECIPIENTS_LEFT, verdict, (), submission_id)

        state = MessageState.HELD if verdict.action is Action.HOLD else MessageState.QUEUED
        note = "; ".join(f.detail for f in verdict.findings) if state is MessageState.HELD else ""
        if verdict.repairs:
            # Repaired even when held, so that a release delivers the repaired message.
            repaired = repair.apply(raw, verdict.repairs)
            if repaired is None:
                state = MessageState.HELD
                details = "; ".join(f.detail for f in verdict.repairs)
                note = f"the repair could not be applied: {details}"
            else:
                raw = repaired
        base = self._rewrite(raw, message, env, submission_id)
        if base is None:
            return refuse(replies.HEADER_LINE_UNFOLDABLE, "header-unfoldable")
        codes = tuple(dict.fromkeys(f.code for f in verdict.findings))
        links = self._unsubscribe if self._unsubscribe and is_commercial(message, dealer) else None
        built: list[NewMessage] = []
        for n, rcpt in enumerate(recipients, start=1):
            message_id = message_id_for(submission_id, n)
            mail_from = env.mail_from
            if self._bounce_domain and env.mail_from:
                mail_from = self._refs.verp_address(
                    message_id, dealer.dealer_id, rcpt, self._bounce_domain
                )
            per_rcpt = [
                ("X-Mailgate-Ref", self._refs.header_value(message_id, dealer.dealer_id, rcpt))
            ]
            if verdict.tags:
                per_rcpt.append(("X-Mailgate-Findings", ", ".join(verdict.tags)))
            copy = base
            if links is not None:
                ours = links.list_unsubscribe(links.token(dealer.dealer_id, rcpt, message_id))
                plan = header_plan(
                    message.header("List-Unsubscribe"), ours, dealer.unsubscribe.existing
                )
                if plan.remove and (
                    message.header("List-Unsubscribe") is not None
                    or message.header("List-Unsubscribe-Post") is not None
                ):
                    copy = rewrite.remove_headers(copy, plan.remove)
                per_rcpt.extend(plan.add)
            data = self._signer.sign(rewrite.prepend_headers(copy, per_rcpt), dealer)
            # A per-recipient hold (decide.py) keeps just this copy for an operator.
            held = verdict.held.get(rcpt) if state is MessageState.QUEUED else None
            built.append(
                NewMessage(
                    id=message_id,
                    dealer_id=dealer.dealer_id,
                    mail_from=mail_from,
                    rcpt=rcpt,
                    data=data,
                    received_at=env.received_at,
                    state=MessageState.HELD if held else state,
                    findings=codes,
                    note=held.detail if held else note,
                )
            )
        return Prepared(None, verdict, tuple(built), submission_id, duplicates)

    def _run_checks(
        self,
        message: ParsedMessage,
        dealer: DealerPolicy,
        env: Envelope,
        duplicates: DuplicateState | None = None,
        consent: Mapping[str, ConsentRecord] | None = None,
    ) -> tuple[Finding, ...]:
        context = CheckContext(
            envelope=env, now=self._clock.now(), duplicates=duplicates, consent=consent
        )
        findings: list[Finding] = []
        for check in CHECKS:
            try:
                findings.extend(check(message, dealer, context))
            except Exception as exc:  # a check must never take the session down
                raise CheckCrashed(check_name(check)) from exc
        return tuple(findings)

    def _rewrite(
        self, raw: bytes, message: ParsedMessage, env: Envelope, submission_id: str
    ) -> bytes | None:
        """Apply the submission-server header changes (RFC 6409 §8) to the shared copy."""
        data = rewrite.remove_headers(raw, {"bcc"})
        added: list[tuple[str, str]] = [("Received", self._received(env, submission_id))]
        if message.message_id is None:
            added.append(("Message-ID", f"<{submission_id}@{self._hostname}>"))
        if not message.has_date:
            added.append(("Date", format_datetime(env.received_at)))
        data = rewrite.prepend_headers(data, added)
        try:
            # RFC 5321 §4.5.3.1.6: lines over 998 octets are folded (headers) or their part
            # re-encoded as quoted-printable (bodies); meaning is kept, nothing truncated.
            data, _changed = rewrite.fold_long_lines(data, limits=self._limits)
        except rewrite.LineTooLong:
            return None
        return data

    def _received(self, env: Envelope, submission_id: str) -> str:
        # RFC 5321 §4.4 trace field; "ESMTPSA" = ESMTP + STARTTLS + AUTH (RFC 3848).
        protocol = "ESMTPSA" if env.tls else "ESMTPA"
        helo = "".join(ch for ch in env.helo if ch.isprintable() and ch not in "()")[:255]
        when: datetime = env.received_at
        return (
            f"from {helo or 'unknown'} ([{env.peer}]) by {self._hostname} (Mailgate) "
            f"with {protocol} id {submission_id}; {format_datetime(when)}"
        )
