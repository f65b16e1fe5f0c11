"""Upstream faults seen through the whole gateway (reliability F5-F7, F10-F12, F21)."""

from __future__ import annotations

import asyncio
import sqlite3
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from gateway.types import MessageState, QueuedMessage
from tests.abuse.conftest import (
    Harness,
    MakeHarness,
    Recorder,
    check_invariants,
    dot_stuff,
    eventually,
    message,
    send_one,
)
from tests.abuse.upstreams import FaultHandler, RawUpstream, SessionLimitHandler
from tests.sinks import Sink

FAST_RETRY = {"first_retry": "0.5s", "max_retry_interval": "1s", "backoff_factor": 1.0}


@pytest.fixture
async def fault_sink() -> AsyncIterator[Sink]:
    server = await Sink(FaultHandler()).start()
    yield server
    await server.stop()


async def harness_for(
    make_harness: MakeHarness, port: int, **sections: dict[str, object]
) -> Harness:
    delivery = {**FAST_RETRY, **sections.pop("delivery", {})}
    upstream = {"port": port, **sections.pop("upstream", {})}
    return await make_harness(delivery=delivery, upstream=upstream, **sections)


async def user_rows(h: Harness) -> list[QueuedMessage]:
    return [m for m in await h.gateway.storage.list_messages() if not m.system]


async def state_of(h: Harness, rcpt: str) -> MessageState | None:
    rows = [m for m in await h.gateway.storage.list_messages() if m.rcpt == rcpt]
    return rows[0].state if rows else None


async def reaches(h: Harness, rcpt: str, state: MessageState, timeout: float) -> None:
    """Wait until the message to ``rcpt`` is in ``state``."""

    async def there() -> bool:
        return await state_of(h, rcpt) is state

    await eventually(there, timeout=timeout)


async def test_f5_upstream_down_then_back_delivers_once_without_dsn(
    make_harness: MakeHarness, fault_sink: Sink
) -> None:
    h = await harness_for(make_harness, fault_sink.port)
    h = Harness(h.gateway, fault_sink)
    await fault_sink.stop()
    rec = Recorder(h)
    client = await rec.connect()
    assert (await send_one(client, to="down@example.org")).code == 250
    await asyncio.sleep(3)
    rows = await h.gateway.storage.list_messages()
    assert [(m.rcpt, m.state) for m in rows] == [("down@example.org", MessageState.QUEUED)]
    assert 1 <= rows[0].attempts <= 8, rows[0].attempts  # backoff, not a hot loop
    assert rows[0].last_error
    await fault_sink.start()
    await h.wait_delivered(1, timeout=15)
    await asyncio.sleep(1)
    assert [m.rcpt_tos for m in fault_sink.messages] == [["down@example.org"]]  # no DSN
    assert await state_of(h, "down@example.org") is MessageState.DELIVERED
    await check_invariants(h, rec)


@pytest.mark.parametrize("stage", ["MAIL", "RCPT", "."])
async def test_f6_4xx_then_fixed_delivers_exactly_once(
    make_harness: MakeHarness, fault_sink: Sink, stage: str
) -> None:
    h = Harness((await harness_for(make_harness, fault_sink.port)).gateway, fault_sink)
    handler = fault_sink.handler
    assert isinstance(handler, FaultHandler)
    busy = ["451 4.3.0 try later", "452 4.2.2 try later"]
    if stage == "MAIL":
        handler.mail_replies = list(busy)
    elif stage == "RCPT":
        handler.rcpt_replies["tmp@example.org"] = list(busy)
    else:
        handler.data_replies = list(busy)
    rec = Recorder(h)
    client = await rec.connect()
    assert (await send_one(client, to="tmp@example.org")).code == 250
    await h.wait_delivered(1, timeout=20)
    await asyncio.sleep(1.5)
    assert [m.rcpt_tos for m in fault_sink.messages] == [["tmp@example.org"]]
    [row] = await user_rows(h)
    assert row.state is MessageState.DELIVERED and row.attempts == 3, row
    await check_invariants(h, rec)


async def test_f6_4xx_at_the_data_command_then_fixed(make_harness: MakeHarness) -> None:
    def script(verb: str, n: int) -> bytes | None:
        return b"451 4.3.0 not now\r\n" if verb == "DATA" and n <= 2 else None

    raw = await RawUpstream(script).start()
    try:
        h = await harness_for(make_harness, raw.port)
        rec = Recorder(h)
        client = await rec.connect()
        assert (await send_one(client, to="cmd@example.org")).code == 250

        await reaches(h, "cmd@example.org", MessageState.DELIVERED, timeout=20)
        await asyncio.sleep(1)
        assert [m.rcpt_tos for m in raw.messages] == [["cmd@example.org"]]
        await check_invariants(h, rec, canary_check=False)
    finally:
        await raw.stop()


async def test_f7_5xx_at_end_of_data_fails_with_dsn_and_no_retry(
    make_harness: MakeHarness, fault_sink: Sink
) -> None:
    h = Harness((await harness_for(make_harness, fault_sink.port)).gateway, fault_sink)
    assert isinstance(fault_sink.handler, FaultHandler)
    fault_sink.handler.data_replies = ["554 5.6.0 content rejected"]
    rec = Recorder(h)
    client = await rec.connect()
    assert (await send_one(client, to="refused@example.org")).code == 250

    await reaches(h, "refused@example.org", MessageState.FAILED, timeout=20)
    await h.wait_delivered(1, timeout=20)  # the DSN
    await asyncio.sleep(2)
    [dsn] = fault_sink.messages
    assert dsn.rcpt_tos == ["sales@example-motors.test"]
    assert b"refused@example.org" in dsn.data and b"5.6.0" in dsn.data
    assert fault_sink.handler.rcpt_attempts["refused@example.org"] == 1  # never retried
    [row] = [m for m in await h.gateway.storage.list_messages() if m.rcpt == "refused@example.org"]
    assert row.attempts == 1 and "554" in row.last_error
    await check_invariants(h, rec)


@pytest.mark.slow  # about 6 s: a 3 s stalled reply, a 1 s timeout, a retry
async def test_f10_slow_upstream_times_out_without_a_second_concurrent_attempt(
    make_harness: MakeHarness, fault_sink: Sink
) -> None:
    h = await harness_for(
        make_harness, fault_sink.port, delivery={"data_timeout": "1s", "workers": 4}
    )
    h = Harness(h.gateway, fault_sink)
    handler = fault_sink.handler
    assert isinstance(handler, FaultHandler)
    handler.delays = [3.0]
    rec = Recorder(h)
    client = await rec.connect()
    assert (await send_one(client, to="slow@example.org")).code == 250
    await h.wait_delivered(1, timeout=20)
    await asyncio.sleep(3)
    assert handler.abandoned == 1  # the first attempt timed out and was given up
    # The retry started only after the gateway had closed the timed-out connection.
    assert handler.open_at_mail == [0, 0], handler.open_at_mail
    assert [m.rcpt_tos for m in fault_sink.messages] == [["slow@example.org"]]
    [row] = [m for m in await h.gateway.storage.list_messages() if m.rcpt == "slow@example.org"]
    assert row.state is MessageState.DELIVERED and row.attempts >= 2
    await check_invariants(h, rec)


async def _queued_only(h: Harness, rcpt: str) -> None:
    async def deferred() -> bool:
        rows = [m for m in await h.gateway.storage.list_messages() if m.rcpt == rcpt]
        return bool(rows) and rows[0].attempts >= 2 and rows[0].state is MessageState.QUEUED

    await eventually(deferred, timeout=20)


async def test_f11_starttls_required_but_not_offered_sends_nothing_in_plaintext(
    make_harness: MakeHarness, fault_sink: Sink
) -> None:
    h = await harness_for(make_harness, fault_sink.port, upstream={"tls": "starttls"})
    h = Harness(h.gateway, fault_sink)
    rec = Recorder(h)
    client = await rec.connect()
    assert (await send_one(client, to="tls@example.org")).code == 250
    await _queued_only(h, "tls@example.org")
    assert fault_sink.handler.mail_commands == 0 and fault_sink.messages == []
    [row] = [m for m in await h.gateway.storage.list_messages() if m.rcpt == "tls@example.org"]
    assert row.last_error.startswith("4"), row.last_error
    await check_invariants(h, rec, canary_check=False)


async def test_f11_untrusted_upstream_certificate_defers(make_harness: MakeHarness) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(server_ctx)  # a CA nobody trusts
    tls_sink = await Sink(FaultHandler(), tls_context=server_ctx).start()
    try:
        h = await harness_for(make_harness, tls_sink.port, upstream={"tls": "starttls"})
        h = Harness(h.gateway, tls_sink)
        rec = Recorder(h)
        client = await rec.connect()
        assert (await send_one(client, to="cert@example.org")).code == 250
        await _queued_only(h, "cert@example.org")
        assert tls_sink.handler.mail_commands == 0 and tls_sink.messages == []
        await check_invariants(h, rec, canary_check=False)
    finally:
        await tls_sink.stop()


HOSTILE: dict[str, bytes] = {
    "garbled-code": b"2x0 what is this\r\n",
    "huge-line": b"250 " + b"A" * 2_000_000 + b"\r\n",
    "before-banner": b"250 unsolicited\r\n250 more\r\n220 raw.test ESMTP\r\n",
    "multiline-mess": b"250-ok\r\n999 nonsense\r\n",
}


@pytest.mark.parametrize(
    "kind",
    # "before-banner" includes a 2xx greeting other than 220: never taken for delivered.
    sorted(HOSTILE),
)
async def test_f12_hostile_upstream_replies_defer_then_deliver_once(
    make_harness: MakeHarness, kind: str
) -> None:
    def script(verb: str, n: int) -> bytes | None:
        if n > 2:
            return None
        if kind == "before-banner":
            return HOSTILE[kind] if verb == "BANNER" else None
        return HOSTILE[kind] if verb == "MAIL" else None

    raw = await RawUpstream(script).start()
    try:
        h = await harness_for(make_harness, raw.port, delivery={"command_timeout": "2s"})
        rec = Recorder(h)
        client = await rec.connect()
        assert (await send_one(client, to="hostile@example.org")).code == 250

        await reaches(h, "hostile@example.org", MessageState.DELIVERED, timeout=30)
        await asyncio.sleep(1)
        assert [m.rcpt_tos for m in raw.messages] == [["hostile@example.org"]]
        [row] = [
            m for m in await h.gateway.storage.list_messages() if m.rcpt == "hostile@example.org"
        ]
        assert row.attempts >= 2
        await check_invariants(h, rec, canary_check=False)
        assert (await send_one(await rec.connect(), to="after@example.org")).code == 250

        async def after() -> bool:
            return any(m.rcpt_tos == ["after@example.org"] for m in raw.messages)

        await eventually(after, timeout=15)
    finally:
        await raw.stop()


async def test_f21_corrupt_stored_entry_is_quarantined_while_mail_flows(
    make_harness: MakeHarness, fault_sink: Sink
) -> None:
    h = await harness_for(make_harness, fault_sink.port)
    h = Harness(h.gateway, fault_sink)
    await fault_sink.stop()
    rec = Recorder(h)
    client = await rec.connect()
    assert (await send_one(client, to="corrupt@example.org")).code == 250
    assert (await send_one(client, to="healthy@example.org")).code == 250
    db = Path(h.gateway.settings.storage_url.removeprefix("sqlite:///"))

    def corrupt() -> None:
        conn = sqlite3.connect(db, timeout=10)
        with conn:
            [(data,)] = conn.execute("SELECT data FROM messages WHERE rcpt = 'corrupt@example.org'")
            conn.execute(
                "UPDATE messages SET data = ? WHERE rcpt = 'corrupt@example.org'",
                (bytes(data[:40]) + b"\x00\xff",),
            )
        conn.close()

    await asyncio.to_thread(corrupt)
    await fault_sink.start()
    for m in await h.gateway.storage.list_messages(state=MessageState.QUEUED):
        await h.gateway.storage.requeue(m.id, h.gateway.clock.now())
    h.gateway.worker.notify()

    async def settled() -> bool:
        return (
            await state_of(h, "corrupt@example.org") is MessageState.QUARANTINED
            and await state_of(h, "healthy@example.org") is MessageState.DELIVERED
        )

    await eventually(settled, timeout=20)
    assert [m.rcpt_tos for m in fault_sink.messages] == [["healthy@example.org"]]
    [bad] = [m for m in await h.gateway.storage.list_messages() if m.rcpt == "corrupt@example.org"]
    assert "quarantined" in bad.last_error
    await check_invariants(h, rec)


async def test_g11_session_recipient_limit_moves_to_a_fresh_connection(
    make_harness: MakeHarness,
) -> None:
    """452 at RCPT on a used connection: a new connection at once, not an hour's backoff."""
    handler = SessionLimitHandler(limit=3)
    sink = await Sink(handler).start()
    try:
        h = await harness_for(make_harness, sink.port, delivery={"first_retry": "1h", "workers": 1})
        h = Harness(h.gateway, sink)
        rec = Recorder(h)
        client = await rec.connect()
        rcpts = [f"owner{i}@example.org" for i in range(10)]
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        for rcpt in rcpts:
            assert (await client.cmd(f"RCPT TO:<{rcpt}>")).code == 250
        assert (await client.data(dot_stuff(message(to=rcpts[0])))).code == 250
        await h.wait_delivered(10, timeout=15)
        assert sorted(r for m in sink.messages for r in m.rcpt_tos) == sorted(rcpts)
        assert handler.refused >= 3  # the limit was met on every connection but the last
        rows = await user_rows(h)
        assert {m.state for m in rows} == {MessageState.DELIVERED}
        await check_invariants(h, rec)
    finally:
        await sink.stop()
