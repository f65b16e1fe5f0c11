"""A dealer suspended in the middle of a session (reliability B8)."""

from __future__ import annotations

import asyncio

from gateway.types import DealerId, MessageState
from tests.abuse.conftest import SENDER, MakeHarness, Recorder, check_invariants, send_one


async def test_b8_suspended_mid_session_refuses_the_next_mail_and_loses_nothing(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    suspensions = h.gateway.suspensions
    assert suspensions is not None
    rec = Recorder(h)
    await h.sink.stop()  # upstream down: the first message stays queued
    client = await rec.connect()
    assert (await send_one(client, to="before@example.org")).code == 250
    await suspensions.suspend(DealerId("example-motors"), "abuse suite", by="test")
    mail = await client.cmd(f"MAIL FROM:<{SENDER}>")
    assert (mail.code, mail.enhanced) in {(554, "5.7.1"), (451, "4.7.1")}, mail
    assert (await client.cmd("RCPT TO:<after@example.org>")).code == 503
    # A fresh connection is refused at MAIL too.
    other = await rec.connect(source="127.0.0.40")
    assert (await other.cmd(f"MAIL FROM:<{SENDER}>")).code in (554, 451)
    await h.sink.start()
    await asyncio.sleep(2)
    # The message accepted before the suspension is still held or queued, or delivered.
    [row] = [m for m in await h.gateway.storage.list_messages() if not m.system]
    assert row.rcpt == "before@example.org"
    assert row.state in {MessageState.QUEUED, MessageState.HELD, MessageState.DELIVERED}
    assert all("after@example.org" not in m.rcpt_tos for m in h.sink.messages)
    await suspensions.resume(DealerId("example-motors"), "done", by="test")
    await check_invariants(h, rec)
