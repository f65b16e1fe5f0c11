"""Spool back-pressure: refuse new mail at MAIL while the queue or the disk is too full.

The queue size comes from the store (refreshed in the background, never per command) and
free disk space from the data directory. High and low water marks give hysteresis, so
intake does not flap around one threshold (reliability G6).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from gateway.clock import Clock
from gateway.errors import StorageError
from gateway.metrics import Metrics
from gateway.storage.base import Storage
from gateway.types import MessageState, QueueStats

log = logging.getLogger("gateway.smtp")


class SpoolGuard:
    """Decides whether new mail may be accepted, from periodically refreshed figures."""

    def __init__(
        self,
        storage: Storage,
        data_dir: Path,
        high_water: int,
        low_water: int,
        min_free_bytes: int,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self._storage = storage
        self._data_dir = data_dir
        self._high = high_water
        self._low = low_water
        self._min_free = min_free_bytes
        self._metrics = metrics
        self._clock = clock
        self._over = False
        self.stats = QueueStats()
        self.last_error: str = ""

    def disk_low(self) -> bool:
        """True when free space in the data directory is below the floor (checked live)."""
        try:
            return shutil.disk_usage(self._data_dir).free < self._min_free
        except OSError:
            return True

    def full(self) -> bool:
        """True while new mail must be refused with ``452 4.3.1``."""
        return self._over or self.disk_low()

    def note_enqueued(self, count: int) -> None:
        """Count messages enqueued since the last refresh, so a burst cannot overshoot."""
        queued = self.stats.count(MessageState.QUEUED) + count
        counts = dict(self.stats.counts)
        counts[MessageState.QUEUED] = queued
        self.stats = QueueStats(counts, self.stats.oldest_queued_at, self.stats.queued_bytes)
        if queued >= self._high:
            self._over = True

    async def refresh(self) -> None:
        """Re-read the queue figures from the store and update the gauges."""
        try:
            stats = await self._storage.stats()
        except StorageError as exc:
            self.last_error = str(exc)
            return
        self.last_error = ""
        self.stats = stats
        waiting = stats.count(MessageState.QUEUED)
        if self._over and waiting <= self._low:
            log.info("queue below low-water mark (%d); accepting mail again", waiting)
            self._over = False
        elif not self._over and waiting >= self._high:
            log.warning("queue above high-water mark (%d); refusing new mail", waiting)
            self._over = True
        for state in MessageState:
            self._metrics.queue_messages.labels(state.value).set(stats.count(state))
        self._metrics.spool_bytes.set(stats.queued_bytes)
        oldest = stats.oldest_queued_at
        age = (self._clock.now() - oldest).total_seconds() if oldest else 0.0
        self._metrics.queue_oldest_seconds.set(max(age, 0.0))

    async def run(self, interval: float = 1.0) -> None:
        """Refresh forever (cancel to stop)."""
        while True:
            await self.refresh()
            await asyncio.sleep(interval)
