"""G7: intake faster than delivery is throttled at the high-water mark, not left to grow.

The upstream takes 50 ms per message and the gateway has two delivery workers (about 40
messages a second), while ten CRM sessions submit as fast as they can (over 100 a second).
The queue must level off at ``storage.queue_high_water`` (new MAIL gets ``452 4.3.1``,
which the CRM retries), accept again once delivery has taken it below the low-water
mark, keep the accept latency of what it does take bounded, and in the end deliver every
message exactly once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.load.common import Tally, submit
from tests.procs import GatewayProcess, procs, start_sqlite_node, wait_for
from tests.sinks import Sink

__all__ = ["procs"]

pytestmark = [pytest.mark.load, pytest.mark.timeout(600)]

MESSAGES = 600
CONNECTIONS = 10
HIGH, LOW = 100, 50


async def test_g7_intake_is_throttled_when_delivery_is_slower(
    tmp_path: Path, procs: list[GatewayProcess]
) -> None:
    sink = await Sink().start()
    sink.handler.delay = 0.05
    db = tmp_path / "node" / "mailgate.db"
    node = await start_sqlite_node(
        tmp_path, procs, sink.port, db,
        {"storage": {"queue_high_water": HIGH, "queue_low_water": LOW}}, workers=2,
    )  # fmt: skip
    depth: list[int] = []

    async def sample() -> None:
        with sqlite3.connect(db) as conn:
            while True:
                row = conn.execute("SELECT count(*) FROM messages WHERE state = 'queued'")
                depth.append(row.fetchone()[0])
                await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    tally = Tally()
    started = time.monotonic()
    try:
        batches = [[f"g7-{i}@example.org"] for i in range(MESSAGES)]
        await submit(
            node.port, batches, connections=CONNECTIONS, size=2000, tally=tally,
            retry_refusals=True,
        )  # fmt: skip
        accepted_in = time.monotonic() - started
        await wait_for(lambda: len(sink.messages) >= MESSAGES, 120, "deliveries", node)
        await asyncio.sleep(1.0)
    finally:
        sampler.cancel()
        node.terminate()
        await sink.stop()
    copies = Counter(r for m in sink.messages for r in m.rcpt_tos)
    refusals = tally.refused.get("452 4.3.1", 0)
    print(
        f"\nG7: {MESSAGES} messages from {CONNECTIONS} sessions into a 40 msg/s upstream:"
        f" all accepted in {accepted_in:.1f} s, {refusals} MAIL refusals 452 4.3.1 retried,"
        f" queue peak {max(depth)} (high water {HIGH}), accept latency p50"
        f" {tally.percentile(0.5) * 1000:.0f} ms p99 {tally.percentile(0.99) * 1000:.0f} ms"
    )
    assert len(tally.queued) == MESSAGES
    assert len(copies) == MESSAGES and set(copies.values()) == {1}
    assert refusals > 0, "intake was never throttled"
    assert set(tally.refused) == {"452 4.3.1"}, tally.refused
    # The guard counts its own enqueues between refreshes, so the overshoot is at most the
    # submissions already past MAIL when the mark was reached: one per session.
    assert max(depth) <= HIGH + CONNECTIONS, max(depth)
    assert tally.percentile(0.99) < 2.0
    assert "Traceback" not in node.output()
