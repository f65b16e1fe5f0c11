"""Shared pieces of the load suite: a traffic generator and a memory watch on a process.

The load suite runs the real gateway as a subprocess (tests/procs.py) between this
traffic generator and an aiosmtpd sink in the test process, and reports its figures to
stdout (run with ``-s`` to see them; the README quotes them).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.conftest import PASSWORD, dot_stuff
from tests.smtpclient import RawSmtp, Resp

SENDER = "sales@example-motors.test"


def body(to: str, subject: str, size: int) -> bytes:
    """A transactional message of about ``size`` bytes (no caps, no near-duplicate checks)."""
    line = b"Your service appointment is confirmed for Tuesday at 9:30 in bay four.\r\n"
    text = line * max(1, size // len(line))
    head = (
        f"From: Example Motors <{SENDER}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        "X-Mailgate-Category: transactional\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode()
    return dot_stuff(head + text)


@dataclass
class Tally:
    """What the traffic generator saw: ids acknowledged, refusals and latencies."""

    queued: list[str] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def refuse(self, code: str) -> None:
        self.refused[code] = self.refused.get(code, 0) + 1

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def submit(
    port: int,
    batches: Sequence[Sequence[str]],
    *,
    connections: int,
    size: int,
    tally: Tally,
    retry_refusals: bool = False,
) -> None:
    """Send one submission per batch of recipients over ``connections`` parallel sessions.

    With ``retry_refusals`` a 4xx is retried after a short pause, as a CRM's queue would;
    otherwise it is only counted.
    """
    pending: asyncio.Queue[tuple[int, Sequence[str]]] = asyncio.Queue()
    for index, batch in enumerate(batches):
        pending.put_nowait((index, batch))

    async def session() -> None:
        client = await RawSmtp.connect("127.0.0.1", port)
        await client.login("example-crm", PASSWORD)
        try:
            while not pending.empty():
                index, rcpts = pending.get_nowait()
                while True:
                    started = time.monotonic()
                    reply = await one(client, rcpts, body(rcpts[0], f"load {index}", size))
                    if reply.code == 250:
                        tally.latencies.append(time.monotonic() - started)
                        match = re.search(r"queued as (\S+)", reply.text)
                        assert match is not None, reply
                        tally.queued.append(match.group(1))
                        break
                    tally.refuse(f"{reply.code} {reply.enhanced}")
                    await client.cmd("RSET")
                    if not (retry_refusals and reply.code // 100 == 4):
                        break
                    await asyncio.sleep(0.2)
        finally:
            await client.close()

    await asyncio.gather(*(session() for _ in range(connections)))


async def one(client: RawSmtp, rcpts: Sequence[str], data: bytes) -> Resp:
    mail = await client.cmd(f"MAIL FROM:<{SENDER}> SIZE={len(data)}")
    if mail.code != 250:
        return mail
    for rcpt in rcpts:
        resp = await client.cmd(f"RCPT TO:<{rcpt}>")
        if resp.code != 250:
            return resp
    # RFC 5321 §4.5.3.2: a client waits 2 minutes for the 354 (the memory budget may hold
    # it back) and 10 minutes for the reply to the final ".".
    go_ahead = await client.cmd("DATA", timeout=120)
    if go_ahead.code != 354:
        return go_ahead
    await client.send(data)
    return await client.read_reply(timeout=600)


def status_kib(pid: int, field_name: str) -> int:
    """A ``/proc/<pid>/status`` figure in KiB (VmRSS: now, VmHWM: the peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


class MemoryWatch:
    """Samples a process's resident memory in the background; ``peak`` in MiB."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                self.samples.append(status_kib(self.pid, "VmRSS"))
            except (OSError, KeyError):
                return
            await asyncio.sleep(self.interval)

    def start(self) -> MemoryWatch:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def peak(self) -> float:
        return max(self.samples, default=0) / 1024
