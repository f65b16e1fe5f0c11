"""Abuse, fault and load cases: the integration harness, plus the invariants after each case.

The fixtures (``sink``, ``settings_factory``, ``make_harness``, ``harness``) are the
integration suite's own, imported so both suites run the same real gateway. Clients here
record every reply, so ``check_invariants`` can look for internals leaking into any of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable

from gateway.types import MessageState
from tests.integration.conftest import (
    PASSWORD,
    Harness,
    dot_stuff,
    harness,
    make_harness,
    message,
    settings_factory,
    sink,
)
from tests.smtpclient import RawSmtp, Resp

__all__ = [
    "PASSWORD",
    "Harness",
    "MakeHarness",
    "Recorder",
    "canary",
    "check_invariants",
    "dot_stuff",
    "eventually",
    "harness",
    "make_harness",
    "message",
    "queued_id",
    "settings_factory",
    "sink",
]

MakeHarness = Callable[..., Awaitable[Harness]]
SENDER = "sales@example-motors.test"
_LEAKS = re.compile(r"Traceback|File \"|Error:|Exception|\.py\b|line \d+", re.IGNORECASE)


class Recorder:
    """Every reply any client of one test saw, and the 250s that queued a message."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.replies: list[Resp] = []
        self.clients: list[RawSmtp] = []

    async def connect(self, source: str | None = None, login: bool = True) -> RawSmtp:
        client = RecordingSmtp.wrap(
            await RawSmtp.connect("127.0.0.1", self.h.port, source=source), self.replies
        )
        self.clients.append(client)
        if login:
            await client.login("example-crm", PASSWORD)
        return client

    @property
    def queued(self) -> list[str]:
        """Submission ids from every ``250 ... queued as <id>`` reply."""
        return [m.group(1) for r in self.replies if (m := re.search(r"queued as (\S+)", r.text))]

    async def close(self) -> None:
        for client in self.clients:
            # A client whose TLS upgrade the server cut short has no transport left.
            with contextlib.suppress(AttributeError, RuntimeError):
                await client.close()


class RecordingSmtp(RawSmtp):
    """``RawSmtp`` that appends each reply it reads to a shared list."""

    log: list[Resp]

    @classmethod
    def wrap(cls, client: RawSmtp, log: list[Resp]) -> RecordingSmtp:
        wrapped = cls(client.reader, client.writer)
        wrapped.banner = client.banner
        wrapped.log = log
        if client.banner is not None:
            log.append(client.banner)
        return wrapped

    async def read_reply(self, timeout: float = 10) -> Resp:
        resp = await super().read_reply(timeout)
        self.log.append(resp)
        return resp


def queued_id(resp: Resp) -> str:
    m = re.search(r"queued as (\S+)", resp.text)
    assert m is not None, resp
    return m.group(1)


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float = 15) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def send_one(client: RawSmtp, to: str = "customer@example.org", body: bytes = b"") -> Resp:
    """One transaction on an authenticated client; returns the final reply."""
    mail = await client.cmd(f"MAIL FROM:<{SENDER}>")
    if mail.code != 250:
        return mail
    rcpt = await client.cmd(f"RCPT TO:<{to}>")
    if rcpt.code != 250:
        return rcpt
    return await client.data(body or dot_stuff(message(to=to)))


async def canary(h: Harness, rec: Recorder | None = None, to: str = "canary@example.org") -> None:
    """The gateway still takes and delivers a plain message from a fresh connection."""
    rec = rec or Recorder(h)
    client = await rec.connect(source="127.0.0.9")
    before = sum(1 for m in h.sink.messages if to in m.rcpt_tos)
    reply = await send_one(client, to=to)
    await client.close()
    assert reply.code == 250, reply

    async def arrived() -> bool:
        return sum(1 for m in h.sink.messages if to in m.rcpt_tos) > before

    await eventually(arrived, timeout=20)


async def check_invariants(h: Harness, rec: Recorder, *, canary_check: bool = True) -> None:
    """After a case: nothing lost, nothing extra relayed, no internals shown, still serving.

    * every 250 ``queued as`` is in the store as queued, delivered or failed (with a record);
    * every message at the sink is one the gateway stored (nothing relayed unaccepted);
    * no reply text looks like a traceback or exception;
    * a canary transaction from a fresh connection is accepted and delivered.
    """
    await rec.close()
    for resp in rec.replies:
        assert not _LEAKS.search(resp.text), f"internals in a reply: {resp}"
    rows = await h.gateway.storage.list_messages(limit=100_000)
    states = set(MessageState)  # quarantined too: set aside with its reason
    stored = [m for m in rows if m.state in states]
    user_rows = [m for m in stored if not m.system]
    accepted = len(rec.queued)
    assert len(user_rows) >= accepted, (accepted, [(m.rcpt, m.state) for m in rows])
    for m in stored:
        if m.state is MessageState.FAILED:
            assert m.last_error, m
    delivered_rcpts = sorted(r for got in h.sink.messages for r in got.rcpt_tos)
    known = {m.rcpt for m in rows}
    for rcpt in delivered_rcpts:
        assert rcpt in known, f"{rcpt} reached the sink but was never accepted"
    assert len(delivered_rcpts) <= len(rows), (delivered_rcpts, len(rows))
    if canary_check:
        await canary(h)
