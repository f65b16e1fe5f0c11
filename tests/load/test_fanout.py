"""G11: one submission to 1,000 recipients, through an upstream that takes 30 per connection.

The gateway splits a submission into one message per recipient, so a fan-out arrives
upstream as a stream of single-recipient transactions over reused connections. This
upstream answers ``452 4.5.3`` to every RCPT once a connection has taken 30 recipients
(the per-session limits large providers apply). Each refused recipient must be deferred,
not failed, and retried; in the end every recipient gets exactly one copy and the sender
gets no DSN.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.abuse.upstreams import SessionLimitHandler
from tests.load.common import Tally, submit
from tests.procs import GatewayProcess, procs, start_sqlite_node, wait_for
from tests.sinks import Sink

__all__ = ["procs"]

pytestmark = [pytest.mark.load, pytest.mark.timeout(600)]

RECIPIENTS = 1000
PER_CONNECTION = 30


async def test_g11_fan_out_to_1000_recipients_with_452_after_30_per_connection(
    tmp_path: Path, procs: list[GatewayProcess]
) -> None:
    handler = SessionLimitHandler(limit=PER_CONNECTION)
    sink = await Sink(handler).start()
    node = await start_sqlite_node(
        tmp_path, procs, sink.port, tmp_path / "node" / "mailgate.db",
        {"submission": {"max_recipients": RECIPIENTS}}, first_retry="2s",
    )  # fmt: skip
    tally = Tally()
    started = time.monotonic()
    try:
        rcpts = [f"owner{i}@example.org" for i in range(RECIPIENTS)]
        await submit(node.port, [rcpts], connections=1, size=3000, tally=tally)
        assert len(tally.queued) == 1, tally.refused
        await wait_for(lambda: len(sink.messages) >= RECIPIENTS, 300, "1,000 deliveries", node)
        seconds = time.monotonic() - started
        await asyncio.sleep(2.0)  # a duplicate or a DSN would show up now
    finally:
        node.terminate()
        await sink.stop()
    copies = Counter(r for m in sink.messages for r in m.rcpt_tos)
    print(
        f"\nG11: 1 submission to {RECIPIENTS} recipients, upstream 452 after {PER_CONNECTION}"
        f" per connection: {handler.refused} RCPTs deferred with 452, all {len(copies)}"
        f" delivered once in {seconds:.1f} s over {sink.connections} connections"
    )
    # Exactly the recipients, so no DSN either: a 452 is a deferral (RFC 5321 §4.5.3.1.10).
    assert sorted(copies) == sorted(rcpts)
    assert set(copies.values()) == {1}
    assert handler.refused > 0, "the upstream limit was never reached"
    assert "Traceback" not in node.output()
