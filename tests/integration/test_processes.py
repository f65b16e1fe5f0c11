"""``mailgate serve`` with two worker processes under one supervisor (gateway/cli/supervisor.py).

The real command runs as a subprocess on SQLite and on PostgreSQL. One worker is killed
with SIGKILL in the middle of 250 submissions; the supervisor restarts it in its slot, and
every submission that was answered 250 reaches the sink exactly once, whichever worker
took it and whichever delivered it. ``/metrics`` is one endpoint over both workers, the
dead one's counts included.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from gateway.admin.tokens import create_token
from tests.contract.conftest import PostgresBackend, pg
from tests.integration.admin import request
from tests.integration.conftest import PASSWORD
from tests.load.common import body
from tests.procs import GatewayProcess, free_port, node_config, procs, set_password, wait_for
from tests.sinks import Sink
from tests.smtpclient import RawSmtp

__all__ = ["pg", "procs"]  # fixtures, imported for pytest

pytestmark = pytest.mark.timeout(240)

MESSAGES = 250
SESSIONS = 10
KILL_AFTER = 100
TWO = {"server": {"processes": 2}}


def worker_pids(node: GatewayProcess, since: int = 0) -> dict[int, int]:
    """Slot -> pid of its latest start, from the supervisor's log (after offset ``since``)."""
    found = re.findall(r"worker (\d+) started \(pid (\d+)", node.output()[since:])
    return {int(slot): int(pid) for slot, pid in found}


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def reloads(node: GatewayProcess) -> Counter[str]:
    """Policy reloads applied, per worker, from the log."""
    return Counter(re.findall(r"\[(w\d)\] gateway\.policy: policy set reloaded", node.output()))


async def start_two(node: GatewayProcess) -> dict[int, int]:
    """Start the supervisor; wait for both workers to serve; their pids."""
    since = len(node.output())
    await node.start()

    def both_ready() -> bool:
        return all(f"worker {slot} ready" in node.output()[since:] for slot in (0, 1))

    await wait_for(both_ready, 20, "two workers", node)
    return worker_pids(node, since)


def scrape(node: GatewayProcess, http_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    series: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            series[name] = float(value)
    return series


async def submit_all(port: int, rcpts: list[str], acked: set[str], errors: Counter[str]) -> None:
    """One message per recipient, a new connection per message, retried until answered 250.

    A connection the killed worker held fails mid-session; the CRM's retry is the same
    message, which the duplicate check recognises if the first try was stored after all.
    """
    pending: asyncio.Queue[str] = asyncio.Queue()
    for rcpt in rcpts:
        pending.put_nowait(rcpt)

    async def once(rcpt: str) -> str:
        client = await RawSmtp.connect("127.0.0.1", port)
        try:
            await client.login("example-crm", PASSWORD)
            message = body(rcpt, f"for {rcpt}", 2000)
            # SIZE, as smtplib and most CRMs send it: the DATA budget then holds what the
            # message needs, not the listener's maximum (gateway/smtp/budget.py).
            mail = f"MAIL FROM:<sales@example-motors.test> SIZE={len(message)}"
            if (await client.cmd(mail)).code != 250:
                return "mail"
            if (await client.cmd(f"RCPT TO:<{rcpt}>")).code != 250:
                return "rcpt"
            return str(await client.data(message))
        finally:
            await client.close()

    async def session() -> None:
        while not pending.empty():
            rcpt = pending.get_nowait()
            while True:
                try:
                    reply = await once(rcpt)
                except (ConnectionError, OSError, TimeoutError, AssertionError) as exc:
                    reply = type(exc).__name__
                if reply.startswith("250 "):
                    acked.add(rcpt)
                    break
                errors[reply[:9]] += 1
                await asyncio.sleep(0.1)

    await asyncio.gather(*(session() for _ in range(SESSIONS)))


async def run_kill_test(tmp_path: Path, procs: list[GatewayProcess], storage_url: str) -> None:
    sink_port = free_port()  # the upstream is down while the submissions come in
    http_port = free_port()
    node = node_config(
        tmp_path,
        "node",
        sink_port,
        storage_url,
        {**TWO, "http": {"listen": f"127.0.0.1:{http_port}"}},
    )
    procs.append(node)
    await set_password(node)
    await start_two(node)
    rcpts = [f"c{i}@example.org" for i in range(MESSAGES)]
    acked: set[str] = set()
    errors: Counter[str] = Counter()
    load = asyncio.create_task(submit_all(node.port, rcpts, acked, errors))
    await wait_for(lambda: len(acked) >= KILL_AFTER, 60, f"{KILL_AFTER} acknowledged", node)
    victim = worker_pids(node)[1]
    subprocess.run(["kill", "-KILL", str(victim)], check=True)
    await load
    assert acked == set(rcpts)
    assert worker_pids(node)[1] != victim, "slot 1 was not restarted"
    assert f"worker 1 (pid {victim}) killed by SIGKILL" in node.output()

    sink = await Sink().start(sink_port)
    try:
        await wait_for(
            lambda: len({r for m in sink.messages for r in m.rcpt_tos}) >= MESSAGES,
            90,
            "every acknowledged message delivered",
            node,
        )
        await asyncio.sleep(2.0)  # a second copy would arrive now
        copies = Counter(r for m in sink.messages for r in m.rcpt_tos)
        assert set(copies) == set(rcpts)
        assert max(copies.values()) == 1, copies.most_common(3)
        series = scrape(node, http_port)
    finally:
        assert node.terminate() == 0, node.output()[-3000:]
        await sink.stop()
    # One endpoint over both workers, and over the killed one's files: the sends were
    # counted by whichever worker made them, the receipts partly by the dead process.
    assert series['mailgate_messages_relayed_total{dealer="example-motors"}'] == MESSAGES
    received = sum(
        v for k, v in series.items() if k.startswith("mailgate_messages_received_total{")
    )
    assert received >= MESSAGES, series
    assert "supervisor: every worker has exited" in node.output()
    print(f"\nretried submissions after the kill: {dict(errors)}")


async def test_sigkill_of_one_worker_under_load_sqlite(
    tmp_path: Path, procs: list[GatewayProcess]
) -> None:
    await run_kill_test(tmp_path, procs, f"sqlite:///{tmp_path / 'node' / 'mailgate.db'}")


async def test_sigkill_of_one_worker_under_load_postgres(
    tmp_path: Path, procs: list[GatewayProcess], pg: PostgresBackend
) -> None:
    await run_kill_test(tmp_path, procs, pg.url)


async def test_the_supervisor_owns_the_data_directory(
    tmp_path: Path, procs: list[GatewayProcess]
) -> None:
    http_port = free_port()
    node = node_config(
        tmp_path,
        "node",
        free_port(),
        f"sqlite:///{tmp_path / 'n.db'}",
        {**TWO, "http": {"listen": f"127.0.0.1:{http_port}"}},
    )
    procs.append(node)
    await start_two(node)
    assert node.proc is not None
    second = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(node.config), "serve"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode != 0
    assert f"in use by another mailgate process (pid {node.proc.pid})" in second.stderr
    # SIGHUP reaches every worker: each reloads its policies.
    node.proc.send_signal(signal.SIGHUP)
    await wait_for(lambda: reloads(node) == {"w0": 1, "w1": 1}, 10, "two reloads", node)
    # A reload through the admin API lands on one worker, which has the others follow.
    token = create_token(tmp_path / "node" / "admin-tokens", "ops")
    answer = await asyncio.to_thread(
        request, http_port, "POST", "/api/policies/reload", token=token
    )
    assert answer.status == 200, answer
    await wait_for(
        lambda: min(reloads(node).values()) >= 2 and sum(reloads(node).values()) >= 5,
        10,
        "every worker reloaded again",
        node,
    )
    assert node.terminate() == 0
    # A killed supervisor takes its workers with it, and a new one can start at once.
    pids = await start_two(node)
    node.kill()
    await wait_for(lambda: not any(alive(pid) for pid in pids.values()), 5, "workers gone with it")
    await start_two(node)
    assert node.terminate() == 0


def _sessions_per_worker(pids: dict[int, int], port: int, clients: list[RawSmtp]) -> dict[int, int]:
    """How many of ``clients``' connections each worker holds (from /proc, by socket inode)."""
    ours = {c.writer.get_extra_info("sockname")[1] for c in clients}
    inodes: set[str] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) in ours:
            inodes.add(inode)
    held: dict[int, int] = {}
    for slot, pid in pids.items():
        links = []
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                links.append(os.readlink(fd))
        held[slot] = sum(
            1 for link in links if link[8:-1] in inodes and link.startswith("socket:[")
        )
    return held


async def test_a_burst_of_sessions_is_spread_over_the_workers(
    tmp_path: Path, procs: list[GatewayProcess]
) -> None:
    # A CRM opens its sessions at once and keeps them; if one worker accepted the whole
    # burst, it would carry them all while the other sat idle (gateway/smtp/accept.py).
    node = node_config(tmp_path, "node", free_port(), f"sqlite:///{tmp_path / 'n.db'}", TWO)
    procs.append(node)
    pids = await start_two(node)
    clients = await asyncio.gather(*(RawSmtp.connect("127.0.0.1", node.port) for _ in range(20)))
    try:
        assert all(c.banner is not None and c.banner.code == 220 for c in clients)
        held = _sessions_per_worker(pids, node.port, list(clients))
        assert sum(held.values()) == 20, held
        assert min(held.values()) >= 4, held
        print(f"\nsessions per worker: {held}")
    finally:
        for c in clients:
            await c.close()
    assert node.terminate() == 0
