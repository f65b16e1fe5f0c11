"""The delivery worker pool: claims due messages, relays them and records every outcome.

Owns the loop between the queue and the upstream. A feeder claims only as many messages
as there are idle workers (so leases are not held by messages waiting in memory), on a
poll interval or at once when ``notify()`` is called after an enqueue. Each worker owns
one ``Upstream`` and so one reusable connection.

Every claimed message ends in exactly one of: ``complete`` (delivered or failed, with a
DSN where due), ``defer`` (retry later), ``release`` (shutdown or suspended dealer),
``hold`` (something unexpected happened: an operator looks at it), or, when the store
itself fails, an expiring lease, which makes it claimable again. Nothing is dropped
silently and one bad message never stops the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from gateway.clock import Clock
from gateway.delivery.backoff import RetryPolicy, next_attempt
from gateway.delivery.client import Upstream, attempt_budget, deferred
from gateway.delivery.dsn import build_dsn
from gateway.errors import StorageError
from gateway.metrics import Metrics
from gateway.settings import DeliverySettings
from gateway.storage.base import Storage
from gateway.types import (
    DealerId,
    MessageId,
    MessageState,
    NewMessage,
    OutcomeKind,
    QueuedMessage,
    RcptOutcome,
)

log = logging.getLogger("gateway.delivery")

# The worker's own deadline sits a little beyond the client's, so the client normally
# reports its own timeout (with the stage) and this one is only a backstop.
_DEADLINE_SLACK = timedelta(seconds=5)
# A backward step of the wall clock larger than this is treated as a clock correction.
_CLOCK_STEP = timedelta(minutes=1)
_RESCUE_BATCH = 10_000


def retry_policy(settings: DeliverySettings) -> RetryPolicy:
    """The retry schedule of the ``[delivery]`` settings, for ``backoff.next_attempt``."""
    return RetryPolicy(
        first_retry=settings.first_retry,
        max_interval=settings.max_retry_interval,
        factor=settings.backoff_factor,
        max_age=settings.max_age,
    )


def expired_outcome(message: QueuedMessage, last: RcptOutcome) -> RcptOutcome:
    """Turn the last temporary failure of a message past ``max_age`` into a final one.

    RFC 3463 §3.5: X.4.7 is "delivery time expired"; the last reply is kept in the text
    so the DSN says what kept failing.
    """
    return RcptOutcome(
        OutcomeKind.FAILED,
        554,
        "5.4.7",
        f"delivery time expired after {message.attempts + 1} attempts; "
        f"last error: {last.summary()}",
    )


class DeliveryWorker:
    """A pool of ``settings.workers`` delivery coroutines fed from the store.

    ``upstream_factory`` makes one ``Upstream`` per worker. ``suspended`` returns the
    dealers whose mail must wait (their messages are not claimed; system messages such
    as DSNs still go). ``rng`` supplies the backoff jitter. ``remote_mta`` names the
    relay in DSNs (empty for local delivery).
    """

    def __init__(
        self,
        storage: Storage,
        upstream_factory: Callable[[], Upstream],
        clock: Clock,
        settings: DeliverySettings,
        node: str,
        metrics: Metrics,
        hostname: str,
        suspended: Callable[[], frozenset[DealerId]] = lambda: frozenset(),
        rng: Callable[[], float] = random.random,
        remote_mta: str = "",
    ) -> None:
        self._storage = storage
        self._upstream_factory = upstream_factory
        self._clock = clock
        self._settings = settings
        self._node = node
        self._metrics = metrics
        self._hostname = hostname
        self._suspended = suspended
        self._rng = rng
        self._remote_mta = remote_mta
        self._policy = retry_policy(settings)
        self._dsn_from = settings.dsn_from or f"MAILER-DAEMON@{hostname}"
        self._deadline = (attempt_budget(settings) + _DEADLINE_SLACK).total_seconds()
        self._queue: asyncio.Queue[QueuedMessage | None] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._stopped = asyncio.Event()
        self._busy = 0
        self._running = False
        self._grace = 30.0

    # -- control ---------------------------------------------------------------------

    def notify(self) -> None:
        """Wake the feeder now (called after an enqueue, so delivery starts at once)."""
        self._wake.set()

    async def stop(self, grace: float = 30.0) -> None:
        """Stop claiming, let in-flight sends finish for up to ``grace`` seconds, and wait.

        Messages claimed but not started are released (no attempt counted); upstream
        connections are closed. A send still running after ``grace`` is cancelled and its
        lease left to expire, so it is retried later rather than possibly twice at once.
        """
        self._grace = grace
        self._stop.set()
        self._wake.set()
        if self._running:
            await self._stopped.wait()

    async def run(self) -> None:
        """Deliver until ``stop()`` is called or this task is cancelled."""
        self._running = True
        self._stopped.clear()
        lease = self._settings.lease.total_seconds()
        if lease <= self._deadline:
            log.warning(
                "delivery lease %.0fs does not exceed one attempt's time budget %.0fs: "
                "a slow attempt may still run when another node claims the message",
                lease,
                self._deadline,
            )
        workers = [
            asyncio.create_task(self._work(i), name=f"delivery-worker-{i}")
            for i in range(self._settings.workers)
        ]
        feeder = asyncio.create_task(self._feed(), name="delivery-feeder")
        try:
            await self._stop.wait()
        finally:
            await self._shutdown(feeder, workers)
            self._running = False
            self._stopped.set()

    async def _shutdown(
        self, feeder: asyncio.Task[None], workers: list[asyncio.Task[None]]
    ) -> None:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
        while not self._queue.empty():
            message = self._queue.get_nowait()
            if message is not None:
                await self._release(message)
        for _ in workers:
            self._queue.put_nowait(None)
        _, pending = await asyncio.wait(workers, timeout=self._grace)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("delivery: %d sends still running after the grace period", len(pending))
            await asyncio.wait(pending)

    async def _release(self, message: QueuedMessage) -> None:
        try:
            await self._storage.release(message.id, self._node)
        except StorageError as exc:
            log.warning(
                "message %s dealer %s: release failed, the lease will expire: %s",
                message.id,
                message.dealer_id,
                exc,
                extra=_ctx(message),
            )

    # -- feeding ---------------------------------------------------------------------

    async def _feed(self) -> None:
        poll = self._settings.poll_interval.total_seconds()
        last_now: datetime | None = None
        while not self._stop.is_set():
            self._wake.clear()
            now = self._clock.now()
            if last_now is not None and last_now - now > _CLOCK_STEP:
                await self._rescue_after_clock_step(last_now, now)
            last_now = now
            idle = self._settings.workers - self._busy - self._queue.qsize()
            if idle > 0:
                await self._claim(idle)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll):
                    await self._wake.wait()

    async def _rescue_after_clock_step(self, before: datetime, now: datetime) -> None:
        """Bring forward retries that a backward clock step pushed out of reach (F18).

        Retry times were computed on the old clock; after a step back of a day they would
        wait a day more. Anything due later than ``max_interval`` from the new ``now`` is
        made due now, which is what the backoff would have allowed at most.
        """
        log.warning(
            "delivery: the clock stepped back from %s to %s; rescheduling deferred mail",
            before.isoformat(),
            now.isoformat(),
        )
        latest = now + self._policy.max_interval
        try:
            queued = await self._storage.list_messages(
                state=MessageState.QUEUED, limit=_RESCUE_BATCH
            )
            for message in queued:
                if message.next_attempt_at is not None and message.next_attempt_at > latest:
                    await self._storage.requeue(message.id, now)
        except StorageError as exc:
            log.warning("delivery: rescheduling after the clock step failed: %s", exc)

    async def _claim(self, limit: int) -> None:
        try:
            batch = await self._storage.claim(
                self._node,
                limit,
                self._clock.now(),
                self._settings.lease,
                exclude_dealers=self._suspended(),
            )
        except StorageError as exc:
            log.warning("delivery: claim failed, retrying at the next poll: %s", exc)
            return
        except Exception:
            log.exception("delivery: unexpected error while claiming")
            self._metrics.errors.labels(component="delivery").inc()
            return
        for message in batch:
            self._queue.put_nowait(message)

    # -- delivering ------------------------------------------------------------------

    async def _work(self, index: int) -> None:
        upstream = self._upstream_factory()
        try:
            while True:
                message = await self._queue.get()
                if message is None:
                    return
                if self._stop.is_set():
                    await self._release(message)
                    continue
                self._busy += 1
                try:
                    await self._handle(upstream, message)
                finally:
                    self._busy -= 1
                    self._wake.set()
        finally:
            try:
                async with asyncio.timeout(5):
                    await upstream.close()
            except Exception as exc:
                log.warning("delivery worker %d: closing the upstream failed: %s", index, exc)

    async def _handle(self, upstream: Upstream, message: QueuedMessage) -> None:
        """Deliver one message; whatever happens, leave it in a recorded state."""
        try:
            if not message.system and message.dealer_id in self._suspended():
                # Suspended after the claim: a suspension pauses queued mail too.
                await self._release(message)
                return
            outcome = await self._attempt(upstream, message)
            await self._record(message, outcome)
        except StorageError as exc:
            log.warning(
                "message %s dealer %s: could not record the outcome, it will be retried "
                "when the lease expires: %s",
                message.id,
                message.dealer_id,
                exc,
                extra=_ctx(message),
            )
        except Exception as exc:
            log.exception(
                "message %s dealer %s: unexpected error during delivery; holding it",
                message.id,
                message.dealer_id,
                extra=_ctx(message),
            )
            self._metrics.errors.labels(component="delivery").inc()
            note = f"held by delivery after an internal error: {type(exc).__name__}: {exc}"
            try:
                await self._storage.hold(message.id, note[:500], self._clock.now())
            except Exception as hold_exc:
                log.error(
                    "message %s dealer %s: could not hold it either (%s); the lease will "
                    "expire and it will be retried",
                    message.id,
                    message.dealer_id,
                    hold_exc,
                    extra=_ctx(message),
                )

    async def _attempt(self, upstream: Upstream, message: QueuedMessage) -> RcptOutcome:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._deadline):
                outcome = await upstream.send(message.mail_from, message.rcpt, message.data)
        except TimeoutError:
            # The upstream overran its own budget; its connection state is unknown.
            outcome = deferred("4.4.2", "delivery attempt timed out")
            with contextlib.suppress(Exception):
                await upstream.close()
        label = outcome.kind.value
        self._metrics.delivery_attempts.labels(outcome=label).inc()
        self._metrics.delivery_seconds.labels(outcome=label).observe(time.monotonic() - started)
        return outcome

    async def _record(self, message: QueuedMessage, outcome: RcptOutcome) -> None:
        now = self._clock.now()
        if outcome.kind is OutcomeKind.DELIVERED:
            kept = await self._storage.complete(message.id, self._node, outcome, now)
            if not message.system:
                # Alerts and DSNs are the gateway's mail, not the dealer's: they count in
                # neither the dealer's relayed total nor its rates (the store skips them too).
                self._metrics.relayed.labels(dealer=message.dealer_id).inc()
            self._metrics.delivery_latency.observe(
                max((now - message.received_at).total_seconds(), 0.0)
            )
            log.info(
                "message %s dealer %s: delivered to %s: %s",
                message.id,
                message.dealer_id,
                message.rcpt,
                outcome.summary(),
                extra=_ctx(message),
            )
        elif outcome.kind is OutcomeKind.DEFERRED:
            when = next_attempt(
                message.attempts + 1, message.received_at, now, self._policy, self._jitter()
            )
            if when is None:
                await self._fail(message, expired_outcome(message, outcome), now)
                return
            kept = await self._storage.defer(message.id, self._node, outcome, when, now)
            log.info(
                "message %s dealer %s: deferred until %s: %s",
                message.id,
                message.dealer_id,
                when.isoformat(),
                outcome.summary(),
                extra=_ctx(message),
            )
        else:
            await self._fail(message, outcome, now)
            return
        if not kept:
            self._lease_lost(message)

    async def _fail(self, message: QueuedMessage, outcome: RcptOutcome, now: datetime) -> None:
        # The DSN is queued before the message is completed, and only if it is not queued
        # already: a crash between the two steps then re-runs the attempt without a
        # second DSN, where the other order could lose the DSN.
        if message.mail_from and not message.system:
            await self._queue_dsn(message, outcome, now)
        kept = await self._storage.complete(message.id, self._node, outcome, now)
        log.warning(
            "message %s dealer %s: failed permanently for %s: %s",
            message.id,
            message.dealer_id,
            message.rcpt,
            outcome.summary(),
            extra=_ctx(message),
        )
        if not kept:
            self._lease_lost(message)

    async def _queue_dsn(self, message: QueuedMessage, outcome: RcptOutcome, now: datetime) -> None:
        dsn_id = MessageId(f"{message.id}.dsn")
        if await self._storage.get(dsn_id) is not None:
            return
        data = build_dsn(
            original=message,
            outcome=outcome,
            reporting_mta=self._hostname,
            from_addr=self._dsn_from,
            now=now,
            message_id=f"{dsn_id}@{self._hostname}",
            remote_mta=self._remote_mta,
        )
        # RFC 3464 §2 and RFC 5321 §4.5.5: a DSN goes out with the null reverse-path, so
        # a DSN about it can never be generated (no bounce loops). It is a system message
        # so a suspension of the dealer does not hold back the dealer's own bounces.
        dsn = NewMessage(
            id=dsn_id,
            dealer_id=message.dealer_id,
            mail_from="",
            rcpt=message.mail_from,
            data=data,
            received_at=now,
            system=True,
            note=f"delivery status notification for {message.id}",
        )
        await self._storage.enqueue([dsn])
        self._metrics.dsn_sent.inc()
        log.info(
            "message %s dealer %s: DSN %s queued to %s",
            message.id,
            message.dealer_id,
            dsn_id,
            message.mail_from,
            extra=_ctx(message),
        )
        self.notify()

    def _lease_lost(self, message: QueuedMessage) -> None:
        log.warning(
            "message %s dealer %s: lease lost before the outcome was recorded; another node "
            "owns it now",
            message.id,
            message.dealer_id,
            extra=_ctx(message),
        )

    def _jitter(self) -> float:
        value = self._rng()
        return value if 0.0 <= value < 1.0 else 0.5


def _ctx(message: QueuedMessage) -> dict[str, str]:
    """Structured log fields carried on every line about a message."""
    return {"message_id": message.id, "dealer_id": message.dealer_id}
