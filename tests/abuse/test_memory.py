"""G5 in a live session: DATA waits for room in the memory budget, then is refused.

The load suite (tests/load/test_memory_load.py) measures the process's memory under
many concurrent large messages; these cases prove the mechanism on the wire.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.smtp import budget
from gateway.smtp.budget import PER_MESSAGE, STEP, UNDECLARED
from tests.abuse.conftest import (
    SENDER,
    MakeHarness,
    Recorder,
    check_invariants,
    dot_stuff,
    message,
    queued_id,
)
from tests.smtpclient import RawSmtp

MAX = 200_000
# One undeclared submission to one recipient reserves PER_MESSAGE x MAX; two do not fit.
SETTINGS = {"submission": {"max_message_size": MAX, "data_memory": (PER_MESSAGE + 4) * MAX}}
# The default 25 MB limit, and room for two undeclared plans beside each other but not for a
# step of growth beside them.
ROOMY = {"submission": {"data_memory": (2 * UNDECLARED + STEP // 2) * PER_MESSAGE}}


def large_message(to: str, octets: int) -> bytes:
    """A plain-text message of about ``octets`` octets, as a CRM's long newsletter is."""
    line = "Your service appointment is confirmed; see the details below.\r\n"
    return message(to=to, body=line * (octets // len(line)))


async def two_in_data(rec: Recorder, second_within: float = 10) -> tuple[RawSmtp, RawSmtp]:
    """Two sessions, to a@ and b@example.org, each given 354 to DATA, the first first."""
    first, second = await rec.connect(), await rec.connect()
    for client, to in ((first, "a@example.org"), (second, "b@example.org")):
        assert (await client.cmd(f"MAIL FROM:<{SENDER}>")).code == 250
        assert (await client.cmd(f"RCPT TO:<{to}>")).code == 250
    assert (await first.cmd("DATA")).code == 354
    assert (await second.cmd("DATA", timeout=second_within)).code == 354
    return first, second


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


async def test_g5_undeclared_mail_is_not_planned_at_the_size_limit(
    make_harness: MakeHarness,
) -> None:
    # smtplib and most CRMs declare no SIZE. Planned at the 25 MB limit (x16), each DATA
    # would take the whole budget and they would go through one at a time.
    h = await make_harness(**ROOMY)
    rec = Recorder(h)
    first, second = await two_in_data(rec, second_within=2)  # at once, beside the first
    for client, to in ((second, "b@example.org"), (first, "a@example.org")):
        await client.send(dot_stuff(message(to=to)))
        assert (await client.read_reply()).code == 250
    await h.wait_delivered(2)
    await check_invariants(h, rec)


async def test_g5_a_message_past_its_plan_waits_for_room_as_it_is_read(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(**ROOMY)
    rec = Recorder(h)
    older, younger = await two_in_data(rec)
    # Past its 1 MiB plan the younger's next step does not fit beside the older's plan.
    await younger.send(dot_stuff(large_message("b@example.org", 1_500_000)))
    waiting = asyncio.create_task(younger.read_reply(timeout=15))
    await asyncio.sleep(1.0)
    assert not waiting.done(), "a message past its plan was answered with the budget full"
    await older.send(dot_stuff(message(to="a@example.org")))
    assert (await older.read_reply()).code == 250
    reply = await waiting
    assert reply.code == 250, reply
    queued_id(reply)
    await h.wait_delivered(2)
    assert max(len(m.data) for m in h.sink.messages) > 1_500_000
    await check_invariants(h, rec)


async def test_g5_a_message_that_gets_no_room_is_refused_after_its_data(
    make_harness: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget, "WAIT_SECONDS", 0.5)
    h = await make_harness(**ROOMY)
    rec = Recorder(h)
    older, younger = await two_in_data(rec)
    # The older stays open: no room comes, so the younger's data is read to its end and
    # refused with a reply the client retries (RFC 5321 §4.2.5: the reply after the ".").
    await younger.send(dot_stuff(large_message("b@example.org", 1_500_000)))
    refused = await younger.read_reply(timeout=15)
    assert (refused.code, refused.enhanced) == (452, "4.3.1"), refused
    assert "try again" in refused.text
    await older.send(dot_stuff(message(to="a@example.org")))
    assert (await older.read_reply()).code == 250
    # The session is still good: the retry, with the older gone, goes through.
    assert (await younger.cmd(f"MAIL FROM:<{SENDER}>")).code == 250
    assert (await younger.cmd("RCPT TO:<b@example.org>")).code == 250
    retried = await younger.data(dot_stuff(large_message("b@example.org", 1_500_000)))
    assert retried.code == 250, retried
    await h.wait_delivered(2)
    assert sorted(r for m in h.sink.messages for r in m.rcpt_tos) == [
        "a@example.org",
        "b@example.org",
    ]
    await check_invariants(h, rec)
