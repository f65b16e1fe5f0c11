"""G5: memory stays within budget under many concurrent large messages.

Forty CRM sessions each send an 8 MB message at once. aiosmtpd holds each DATA in memory
and intake holds its copies until the commit, so without a bound the process would need
the sum of all of them. With ``submission.data_memory`` the peak resident memory must stay
within that budget plus the process's own baseline; the same traffic against a gateway
whose budget is effectively unlimited is run as the peer, to show what the bound saves.
Every message must still be accepted (sessions refused with ``452 4.3.1`` retry, as a
CRM's queue would) and delivered once.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from tests.load.common import MemoryWatch, Tally, status_kib, submit
from tests.procs import GatewayProcess, node_config, procs, set_password, wait_for
from tests.sinks import Sink

__all__ = ["procs"]

pytestmark = [pytest.mark.load, pytest.mark.timeout(900)]

SESSIONS = 40
SIZE = 8_000_000
BUDGET_MIB = 512


async def run(
    tmp_path: Path, procs: list[GatewayProcess], name: str, data_memory: str
) -> tuple[float, float, Tally, float]:
    """Baseline RSS, peak RSS (MiB), the tally and the seconds it took, for one gateway."""
    sink = await Sink().start()
    node = node_config(
        tmp_path, name, sink.port, f"sqlite:///{tmp_path / name / 'db'}",
        {"submission": {"max_message_size": "10MB", "data_memory": data_memory}},
    )  # fmt: skip
    procs.append(node)
    await set_password(node)
    await node.start()
    assert node.proc is not None
    baseline = status_kib(node.proc.pid, "VmRSS") / 1024
    watch = MemoryWatch(node.proc.pid, interval=0.05).start()
    tally = Tally()
    started = time.monotonic()
    try:
        batches = [[f"{name}-{i}@example.org"] for i in range(SESSIONS)]
        await submit(
            node.port, batches, connections=SESSIONS, size=SIZE, tally=tally, retry_refusals=True
        )
        await wait_for(lambda: len(sink.messages) >= SESSIONS, 300, "deliveries", node)
        elapsed = time.monotonic() - started
    finally:
        await watch.stop()
        node.terminate()
        await sink.stop()
    assert "Traceback" not in node.output(), node.output()[-5000:]
    copies = Counter(r for m in sink.messages for r in m.rcpt_tos)
    assert len(tally.queued) == SESSIONS, tally.refused
    assert sorted(copies) == sorted(b[0] for b in batches)
    assert set(copies.values()) == {1}
    return baseline, watch.peak, tally, elapsed


async def test_g5_memory_within_budget_under_40_concurrent_8mb_messages(
    tmp_path: Path, procs: list[GatewayProcess]
) -> None:
    base, peak, tally, seconds = await run(tmp_path, procs, "bounded", f"{BUDGET_MIB}MiB")
    base_u, peak_u, _, seconds_u = await run(tmp_path, procs, "unbounded", "100GiB")
    print(
        f"\nG5: {SESSIONS} sessions x {SIZE / 1e6:.0f} MB at once."
        f" data_memory {BUDGET_MIB} MiB: peak RSS {peak:.0f} MiB (baseline {base:.0f}),"
        f" {sum(tally.refused.values())} DATA refusals {tally.refused} retried, {seconds:.1f} s."
        f" Unbounded peer: peak RSS {peak_u:.0f} MiB (baseline {base_u:.0f}), {seconds_u:.1f} s."
    )
    assert peak - base < BUDGET_MIB * 1.25, (peak, base)
    assert peak_u - base_u > peak - base  # the peer shows the bound is what holds it down
