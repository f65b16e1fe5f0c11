"""G5 in a live session: DATA waits for room in the memory budget, then is refused.

The load suite (tests/load/test_memory_load.py) measures the process's memory under
many concurrent large messages; these cases prove the mechanism on the wire.
"""

from __future__ import annotations

import asyncio

from gateway.smtp.budget import PER_MESSAGE
from tests.abuse.conftest import (
    SENDER,
    MakeHarness,
    Recorder,
    check_invariants,
    dot_stuff,
    message,
    queued_id,
)

MAX = 200_000
# One undeclared submission to one recipient reserves PER_MESSAGE x MAX; two do not fit.
SETTINGS = {"submission": {"max_message_size": MAX, "data_memory": (PER_MESSAGE + 4) * MAX}}


async def test_g5_second_large_data_waits_for_the_first(make_harness: MakeHarness) -> None:
    h = await make_harness(**SETTINGS)
    rec = Recorder(h)
    first, second = await rec.connect(), await rec.connect()
    for client, to in ((first, "a@example.org"), (second, "b@example.org")):
        assert (await client.cmd(f"MAIL FROM:<{SENDER}>")).code == 250
        assert (await client.cmd(f"RCPT TO:<{to}>")).code == 250
    assert (await first.cmd("DATA")).code == 354
    await second.send(b"DATA\r\n")
    waiting = asyncio.create_task(second.read_reply(timeout=15))
    await asyncio.sleep(0.5)
    assert not waiting.done(), "the second DATA got a reply while the budget was full"
    await first.send(dot_stuff(message(to="a@example.org")))
    assert (await first.read_reply()).code == 250
    go_ahead = await waiting
    assert go_ahead.code == 354, go_ahead
    await second.send(dot_stuff(message(to="b@example.org")))
    assert (await second.read_reply()).code == 250
    await h.wait_delivered(2)
    await check_invariants(h, rec)


async def test_g5_a_declared_small_size_fits_beside_a_large_one(make_harness: MakeHarness) -> None:
    h = await make_harness(**SETTINGS)
    rec = Recorder(h)
    large, small = await rec.connect(), await rec.connect()
    assert (await large.cmd(f"MAIL FROM:<{SENDER}>")).code == 250
    assert (await large.cmd("RCPT TO:<a@example.org>")).code == 250
    assert (await large.cmd("DATA")).code == 354
    body = dot_stuff(message(to="b@example.org"))
    # RFC 1870: the declared size lets the server plan; a 2 KB share fits in what is left.
    assert (await small.cmd(f"MAIL FROM:<{SENDER}> SIZE={len(body)}")).code == 250
    assert (await small.cmd("RCPT TO:<b@example.org>")).code == 250
    reply = await small.data(body)
    assert reply.code == 250, reply
    queued_id(reply)
    await large.send(dot_stuff(message(to="a@example.org")))
    assert (await large.read_reply()).code == 250
    await h.wait_delivered(2)
    await check_invariants(h, rec)
