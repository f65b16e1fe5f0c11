"""One data directory, one live process: a second ``serve`` is refused, nothing sent twice."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.procs import GatewayProcess, free_port, procs, send, start_sqlite_node, wait_for
from tests.sinks import Sink

__all__ = ["procs"]  # fixture, imported for pytest

pytestmark = pytest.mark.timeout(120)


async def test_second_serve_on_a_data_dir_in_use_is_refused_and_changes_nothing(
    tmp_path: Path, procs: list[GatewayProcess]
) -> None:
    sink = await Sink().start()
    node = await start_sqlite_node(tmp_path, procs, sink.port, tmp_path / "node" / "mailgate.db")
    try:
        # The operator's mistake: the same config, other ports through the environment.
        env = {
            **os.environ,
            "MAILGATE_SUBMISSION_LISTEN": f"127.0.0.1:{free_port()}",
            "MAILGATE_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        }
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "--config", str(node.config), "serve",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        out, err = await asyncio.wait_for(second.communicate(), 30)
        assert second.returncode == 1, (out, err)
        lines = err.decode().strip().splitlines()
        assert len(lines) == 1, lines
        assert "is in use by another mailgate process" in lines[0]
        assert node.proc is not None and f"pid {node.proc.pid}" in lines[0]
        assert "Traceback" not in err.decode()

        reply = await send(node.port, "customer@example.org", "once only")
        assert reply.startswith("250 2.0.0 queued as "), reply
        await wait_for(lambda: len(sink.messages) >= 1, 30, "delivery", node)
        await asyncio.sleep(1.0)  # a second delivery would arrive in this time
        assert len(sink.messages) == 1
        assert "released" not in node.output()
    finally:
        node.terminate()
        await sink.stop()


async def test_the_lock_is_released_when_its_owner_dies(
    tmp_path: Path, procs: list[GatewayProcess]
) -> None:
    sink = await Sink().start()
    node = await start_sqlite_node(tmp_path, procs, sink.port, tmp_path / "node" / "mailgate.db")
    try:
        node.kill()
        await node.start()  # SIGKILL leaves no stale lock behind: the kernel dropped it
        reply = await send(node.port, "customer@example.org", "after a crash")
        assert reply.startswith("250 2.0.0 queued as "), reply
    finally:
        node.terminate()
        await sink.stop()
