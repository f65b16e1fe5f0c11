"""Faults inside and around the gateway: the store, the spool, the upstream, our own bugs."""

from __future__ import annotations

import asyncio
import email
import email.policy
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.errors import SigningError
from gateway.policy.model import DealerPolicy
from gateway.types import MessageState
from tests.integration.conftest import PASSWORD, Harness, dot_stuff, message
from tests.smtpclient import RawSmtp

MakeHarness = Callable[..., Awaitable[Harness]]


async def submit(h: Harness, rcpts: tuple[str, ...] = ("customer@example.org",)) -> str:
    client = await h.client()
    try:
        mail = await client.cmd("MAIL FROM:<sales@example-motors.test>")
        if mail.code != 250:
            return str(mail)
        for rcpt in rcpts:
            assert (await client.cmd(f"RCPT TO:<{rcpt}>")).code == 250
        return str(await client.data(dot_stuff(message(to=rcpts[0]))))
    finally:
        await client.close()


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float = 15) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_database_locked_answers_451_then_recovers(make_harness: MakeHarness) -> None:
    h = await make_harness()
    db = Path(h.gateway.settings.storage_url.removeprefix("sqlite:///"))
    locked = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(30)
        conn.execute("ROLLBACK")
        conn.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        await asyncio.to_thread(locked.wait, 5)
        client = await h.client()  # logins are read from the WAL and still work
        await client.cmd("MAIL FROM:<sales@example-motors.test>")
        await client.cmd("RCPT TO:<customer@example.org>")
        reply = await client.data(dot_stuff(message()), timeout=60)
        await client.close()
    finally:
        release.set()
        await asyncio.to_thread(holder.join, 10)
    # RFC 5321 §4.2.5: a local storage problem is temporary; never 250, never 5xx.
    assert (reply.code, reply.enhanced) == (451, "4.3.0"), reply
    assert (await submit(h)).startswith("250 ")
    await h.wait_delivered(1)


async def test_spool_high_water_mark_applies_backpressure_and_releases_it(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(storage={"queue_high_water": 2, "queue_low_water": 0})
    await h.sink.stop()  # upstream down: mail accumulates
    assert (await submit(h)).startswith("250 ")
    assert (await submit(h, ("other@example.org",))).startswith("250 ")
    refused = await submit(h, ("third@example.org",))
    assert refused.startswith("452 4.3.1 "), refused
    await h.sink.start()
    for m in await h.gateway.storage.list_messages(state=MessageState.QUEUED):
        await h.gateway.storage.requeue(m.id, h.gateway.clock.now())
    h.gateway.worker.notify()
    await h.wait_delivered(2, timeout=20)
    await h.gateway.guard.refresh()
    assert (await submit(h, ("third@example.org",))).startswith("250 ")


async def test_mixed_upstream_results_per_recipient(make_harness: MakeHarness) -> None:
    h = await make_harness()
    h.sink.handler.rcpt_always["gone@example.org"] = "550 5.1.1 no such user"
    h.sink.handler.rcpt_replies["busy@example.org"] = ["450 4.2.0 busy", "450 4.2.0 busy"]
    reply = await submit(h, ("ok@example.org", "busy@example.org", "gone@example.org"))
    assert reply.startswith("250 "), reply

    async def settled() -> bool:
        rows = await h.gateway.storage.list_messages()
        states = {m.rcpt: m.state for m in rows}
        return states == {
            "ok@example.org": MessageState.DELIVERED,
            "busy@example.org": MessageState.DELIVERED,
            "gone@example.org": MessageState.FAILED,
            "sales@example-motors.test": MessageState.DELIVERED,  # the DSN
        }

    await eventually(settled, timeout=30)
    delivered = [m.rcpt_tos[0] for m in h.sink.messages]
    assert sorted(delivered) == ["busy@example.org", "ok@example.org", "sales@example-motors.test"]
    dsn = next(m for m in h.sink.messages if m.rcpt_tos == ["sales@example-motors.test"])
    assert dsn.mail_from in ("", "<>")
    report = email.message_from_bytes(dsn.data, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert b"gone@example.org" in dsn.data and b"5.1.1" in dsn.data
    busy = [m for m in await h.gateway.storage.list_messages() if m.rcpt == "busy@example.org"]
    assert busy[0].attempts == 3


async def test_upstream_dropping_the_connection_is_retried_once_delivered(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    h.sink.handler.drop_data = 2
    assert (await submit(h)).startswith("250 ")
    await h.wait_delivered(1, timeout=30)
    await asyncio.sleep(0.5)
    assert len(h.sink.messages) == 1


class BrokenSigner:
    def sign(self, data: bytes, dealer: DealerPolicy) -> bytes:
        raise SigningError("key file unreadable")


class CrashingSigner:
    def sign(self, data: bytes, dealer: DealerPolicy) -> bytes:
        raise RuntimeError("bug")


async def test_signing_failure_is_a_temporary_refusal(make_harness: MakeHarness) -> None:
    h = await make_harness(signer=BrokenSigner())
    reply = await submit(h)
    assert reply.startswith("451 4.3.0 "), reply
    assert await h.gateway.storage.list_messages() == []


async def test_unexpected_exception_is_451_without_internals(make_harness: MakeHarness) -> None:
    h = await make_harness(signer=CrashingSigner())
    reply = await submit(h)
    assert reply.startswith("451 4.3.0 "), reply
    assert "RuntimeError" not in reply and "bug" not in reply
    assert await h.gateway.storage.list_messages() == []
    assert (await h.client()) is not None  # the listener still serves


async def test_brute_force_is_throttled_per_ip_without_locking_out_the_dealer(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(submission={"auth_failures_per_ip": 5, "auth_failure_window": "5m"})
    results = []
    for _ in range(6):
        client = await RawSmtp.connect("127.0.0.1", h.port)
        await client.cmd("EHLO attacker.test")
        await client.starttls()
        await client.cmd("EHLO attacker.test")
        results.append(await client.auth_plain("example-crm", "guess-guess-guess"))
        await client.close()
    assert [r.code for r in results] == [535] * 5 + [421]
    assert results[-1].enhanced == "4.7.0"
    # The dealer's CRM, from its own address, is not locked out by the attacker.
    crm = await RawSmtp.connect("127.0.0.1", h.port, source="127.0.0.2")
    await crm.login("example-crm", PASSWORD)
    await crm.close()


async def test_connection_caps_answer_421_at_the_banner(make_harness: MakeHarness) -> None:
    h = await make_harness(submission={"max_connections_per_ip": 3, "max_connections": 5})
    open_ = [await RawSmtp.connect("127.0.0.1", h.port) for _ in range(3)]
    assert all(c.banner is not None and c.banner.code == 220 for c in open_)
    extra = await RawSmtp.connect("127.0.0.1", h.port)
    assert extra.banner is not None
    assert (extra.banner.code, extra.banner.enhanced) == (421, "4.7.0")
    others = [await RawSmtp.connect("127.0.0.1", h.port, source="127.0.0.3") for _ in range(2)]
    assert all(c.banner is not None and c.banner.code == 220 for c in others)
    global_cap = await RawSmtp.connect("127.0.0.1", h.port, source="127.0.0.4")
    assert global_cap.banner is not None and global_cap.banner.code == 421
    for client in [*open_, *others]:
        await client.close()
    # Once sessions end, the cap frees up again.
    await asyncio.sleep(0.2)
    again = await RawSmtp.connect("127.0.0.1", h.port)
    assert again.banner is not None and again.banner.code == 220
    await again.close()
