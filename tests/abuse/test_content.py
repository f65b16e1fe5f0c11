"""Size, recipient and content abuse (reliability A10, A11, D8, D14)."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest

from tests.abuse.conftest import (
    SENDER,
    MakeHarness,
    Recorder,
    check_invariants,
    dot_stuff,
    message,
)


async def test_a10_oversized_mail_is_refused_with_bounded_memory(
    make_harness: MakeHarness,
) -> None:
    limit = 1_000_000
    h = await make_harness(submission={"max_message_size": limit})
    rec = Recorder(h)
    client = await rec.connect()
    big = await client.cmd(f"MAIL FROM:<{SENDER}> SIZE=99999999999")
    assert (big.code, big.enhanced) == (552, "5.3.4"), big
    assert (await client.cmd(f"MAIL FROM:<{SENDER}>")).code == 250
    assert (await client.cmd("RCPT TO:<big@example.org>")).code == 250
    body = ("x" * 76 + "\r\n") * (2 * limit // 78 + 1)
    payload = dot_stuff(message(to="big@example.org", body=body))
    assert len(payload) > 2 * limit
    tracemalloc.start()
    try:
        reply = await client.data(payload, timeout=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (reply.code, reply.enhanced) == (552, "5.3.4"), reply
    # Python objects allocated while the 2 MB message streamed in: limit plus a constant
    # (the bytes of the client's own payload are allocated before tracing starts).
    assert peak < 3 * limit + 8_000_000, peak
    assert [m for m in await h.gateway.storage.list_messages() if not m.system] == []
    # The session is still usable after the refusal.
    assert (await client.cmd("NOOP")).code == 250
    await check_invariants(h, rec)


async def test_a11_recipients_past_the_cap_get_452_and_are_not_delivered(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    rec = Recorder(h)
    client = await rec.connect()
    assert (await client.cmd(f"MAIL FROM:<{SENDER}>")).code == 250
    await client.send(b"".join(f"RCPT TO:<r{n}@example.org>\r\n".encode() for n in range(1001)))
    replies = [await client.read_reply() for _ in range(1001)]
    assert all(r.code == 250 for r in replies[:100]), replies[:100]
    assert all((r.code, r.enhanced) == (452, "4.5.3") for r in replies[100:]), {
        str(r) for r in replies[100:]
    }
    reply = await client.data(dot_stuff(message(to="r0@example.org")), timeout=60)
    assert reply.code == 250, reply

    async def delivered_rcpts() -> set[str]:
        return {r for m in h.sink.messages for r in m.rcpt_tos}

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while len(await delivered_rcpts()) < 100 and loop.time() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    assert await delivered_rcpts() == {f"r{n}@example.org" for n in range(100)}
    assert sum(len(m.rcpt_tos) for m in h.sink.messages) == 100  # each exactly once
    await check_invariants(h, rec)


@pytest.mark.parametrize(
    "bomb",
    ["lines", "folded", "addresses"],
)
async def test_d8_header_bombs_are_refused_in_bounded_time(
    make_harness: MakeHarness, bomb: str
) -> None:
    h = await make_harness()
    rec = Recorder(h)
    client = await rec.connect()
    if bomb == "lines":
        extra = "".join(f"X-Bomb-{n}: v\r\n" for n in range(100_000))
    elif bomb == "folded":
        extra = "X-Folded: start\r\n" + " continued-folded-header-text\r\n" * 35_000
    else:
        extra = "Cc: " + ",\r\n ".join(f"<a{n}@example.org>" for n in range(10_000)) + "\r\n"
    assert (await client.cmd(f"MAIL FROM:<{SENDER}>")).code == 250
    assert (await client.cmd("RCPT TO:<bomb@example.org>")).code == 250
    loop = asyncio.get_running_loop()
    started = loop.time()
    reply = await client.data(dot_stuff(message(to="bomb@example.org", extra=extra)), timeout=60)
    elapsed = loop.time() - started
    assert (reply.code, reply.enhanced) in {(552, "5.3.4"), (554, "5.6.0")}, reply
    assert elapsed < 15, elapsed
    assert [m for m in await h.gateway.storage.list_messages() if not m.system] == []
    await check_invariants(h, rec)


async def test_d14_nul_in_the_body_is_never_truncated(make_harness: MakeHarness) -> None:
    h = await make_harness()
    rec = Recorder(h)
    client = await rec.connect()
    body = "before the NUL \x00 after the NUL, the-tail-marker\r\nsecond line\r\n"
    assert (await client.cmd(f"MAIL FROM:<{SENDER}>")).code == 250
    assert (await client.cmd("RCPT TO:<nul@example.org>")).code == 250
    reply = await client.data(dot_stuff(message(to="nul@example.org", body=body)))
    if reply.code == 250:
        await h.wait_delivered(1)
        data = h.sink.messages[0].data
        assert b"the-tail-marker" in data and b"second line" in data, data
        assert b"\x00" in data, "the NUL was removed, the body changed"
    else:
        assert reply.code in (550, 554), reply
        assert reply.enhanced.startswith("5.6."), reply
    await check_invariants(h, rec)
