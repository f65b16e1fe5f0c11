"""F19 restart with a full spool, and G8 the recovery storm when the upstream returns.

10,000 messages are queued while the upstream is down (100 submissions of 100 recipients,
about 20 KB each, so the spool holds some 200 MB), the gateway is restarted, and only
then does the upstream come back. The listener must be up in seconds, memory must not
grow with the spool (it is never loaded wholesale: workers claim a few rows at a time),
every recipient must get exactly one copy, the upstream must never see more concurrent
transactions than ``delivery.workers``, and the retries must be spread by the jitter
rather than all due at one instant.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.load.common import MemoryWatch, Tally, submit
from tests.procs import GatewayProcess, free_port, node_config, procs, set_password, wait_for
from tests.sinks import Sink

__all__ = ["procs"]

pytestmark = [pytest.mark.load, pytest.mark.timeout(900)]

SUBMISSIONS = 100
RECIPIENTS = 100
SIZE = 20_000
WORKERS = 10
FIRST_RETRY = 5.0


async def test_f19_g8_restart_with_10000_queued(
    tmp_path: Path, procs: list[GatewayProcess]
) -> None:
    sink_port = free_port()  # nothing listens: the upstream is down while mail queues
    db = tmp_path / "node" / "mailgate.db"
    node = node_config(
        tmp_path,
        "node",
        sink_port,
        f"sqlite:///{db}",
        workers=WORKERS,
        first_retry=f"{FIRST_RETRY}s",
    )
    procs.append(node)
    await set_password(node)
    await node.start()
    tally = Tally()
    batches = [[f"c{i}-{j}@example.org" for j in range(RECIPIENTS)] for i in range(SUBMISSIONS)]
    started = time.monotonic()
    await submit(node.port, batches, connections=10, size=SIZE, tally=tally)
    fill_seconds = time.monotonic() - started
    assert len(tally.queued) == SUBMISSIONS, tally.refused
    await asyncio.sleep(2 * FIRST_RETRY)  # every message has had one failed attempt
    assert node.terminate() == 0, node.output()[-3000:]

    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT state, attempts, next_attempt_at - updated_at, size FROM messages"
        ).fetchall()
    queued = [r for r in rows if r[0] == "queued"]
    assert len(queued) == SUBMISSIONS * RECIPIENTS, Counter(r[0] for r in rows)
    spool_mib = sum(r[3] for r in queued) / 2**20
    # G8: retries are spread by the ±10 % jitter, not stacked on one instant: after n failed
    # attempts the intervals range over [0.9, 1.1) x first_retry x 2^(n-1), a spread near
    # 18 %. How many attempts fit in the fill depends on how fast delivery fails them, so
    # the spread is read over the attempt count most messages are at.
    attempts, most = Counter(r[1] for r in queued).most_common(1)[0]
    intervals = [r[2] for r in queued if r[1] == attempts]
    assert attempts >= 1 and most > len(queued) // 2, Counter(r[1] for r in queued)
    spread = (max(intervals) - min(intervals)) / max(intervals)
    assert 0.12 < spread < 0.2, f"retry intervals spread {spread:.1%}"

    sink = Sink()
    handler = sink.handler
    restarted = time.monotonic()
    await node.start(timeout=30)
    listener_seconds = time.monotonic() - restarted
    assert node.proc is not None
    watch = MemoryWatch(node.proc.pid).start()
    await sink.start(sink_port)
    concurrency: list[int] = []

    async def sample_sessions() -> None:
        while True:
            concurrency.append(sink.open_sessions())
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample_sessions())
    try:
        await wait_for(
            lambda: len(handler.messages) >= SUBMISSIONS * RECIPIENTS,
            600,
            "10,000 deliveries",
            node,
        )
        drain_seconds = time.monotonic() - restarted
        await asyncio.sleep(2.0)  # a duplicate would arrive now
    finally:
        sampler.cancel()
        await watch.stop()
        node.terminate()
        await sink.stop()

    copies = Counter(r for m in handler.messages for r in m.rcpt_tos)
    assert len(copies) == SUBMISSIONS * RECIPIENTS
    assert max(copies.values()) == 1, copies.most_common(3)
    assert max(concurrency) <= WORKERS, max(concurrency)
    assert listener_seconds < 10, listener_seconds
    # The spool is some 200 MB; a gateway that loaded it would need at least that much.
    assert watch.peak < 0.5 * spool_mib + 150, (watch.peak, spool_mib)
    print(
        f"\nF19/G8: queued {len(queued)} messages ({spool_mib:.0f} MiB) in {fill_seconds:.1f} s;"
        f" listener up {listener_seconds:.2f} s after restart; all delivered once"
        f" {drain_seconds:.0f} s after restart; peak RSS {watch.peak:.0f} MiB;"
        f" upstream connections open at once max {max(concurrency)} (cap {WORKERS});"
        f" upstream connections in all {sink.connections}; retry spread {spread:.1%}"
    )
