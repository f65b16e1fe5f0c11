"""The gateway as a real process, killed with SIGKILL at the worst moments (F1, F2, F23)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tests.contract.conftest import PostgresBackend, pg
from tests.integration.conftest import PASSWORD, dot_stuff, message
from tests.procs import (
    GatewayProcess,
    free_port,
    node_config,
    procs,
    send,
    set_password,
    start_sqlite_node,
    wait_for,
)
from tests.sinks import Sink
from tests.smtpclient import RawSmtp

__all__ = ["pg", "procs"]  # fixtures, imported for pytest

pytestmark = pytest.mark.timeout(180)


async def test_sigkill_right_after_250_loses_nothing(
    tmp_path: Path, procs: list[GatewayProcess]
) -> None:
    sink = Sink()
    sink_port = free_port()  # the upstream is down while the message is accepted
    db = tmp_path / "node" / "mailgate.db"
    node = await start_sqlite_node(tmp_path, procs, sink_port, db)
    reply = await send(node.port, "customer@example.org", "kill after 250")
    node.kill()  # the moment the client has read 250
    assert reply.startswith("250 2.0.0 queued as "), reply

    await sink.start(sink_port)
    try:
        await node.start()
        await wait_for(lambda: len(sink.messages) >= 1, 30, "delivery after restart", node)
        await asyncio.sleep(0.5)
        assert len(sink.messages) == 1
        assert b"Subject: kill after 250" in sink.messages[0].data
    finally:
        node.terminate()
        await sink.stop()


async def test_sigkill_mid_data_delivers_nothing_half_written(
    tmp_path: Path, procs: list[GatewayProcess]
) -> None:
    sink = await Sink().start()
    db = tmp_path / "node" / "mailgate.db"
    node = await start_sqlite_node(tmp_path, procs, sink.port, db)
    client = await RawSmtp.connect("127.0.0.1", node.port)
    await client.login("example-crm", PASSWORD)
    await client.cmd("MAIL FROM:<sales@example-motors.test>")
    await client.cmd("RCPT TO:<customer@example.org>")
    assert (await client.cmd("DATA")).code == 354
    await client.send(message(subject="half written")[:150])
    await asyncio.sleep(0.2)
    node.kill()
    await client.close()
    try:
        await node.start()
        reply = await send(node.port, "other@example.org", "after restart")
        assert reply.startswith("250 ")
        await wait_for(lambda: len(sink.messages) >= 1, 20, "the second message", node)
        await asyncio.sleep(0.5)
        assert [b"half written" in m.data for m in sink.messages] == [False]
        with sqlite3.connect(db) as conn:
            count = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        assert count == 1
    finally:
        node.terminate()
        await sink.stop()


@pytest.mark.postgres
async def test_two_nodes_on_postgres_deliver_each_message_once(
    tmp_path: Path, procs: list[GatewayProcess], pg: PostgresBackend
) -> None:
    sink = await Sink().start()
    a = node_config(tmp_path, "node-a", sink.port, pg.url)
    b = node_config(tmp_path, "node-b", sink.port, pg.url)
    procs += [a, b]
    await set_password(a)
    await asyncio.gather(a.start(), b.start())
    try:
        replies = await asyncio.gather(
            *(send((a, b)[i % 2].port, f"c{i}@example.org", f"m{i}") for i in range(20))
        )
        assert all(r.startswith("250 ") for r in replies), replies
        await wait_for(lambda: len(sink.messages) >= 20, 30, "20 deliveries", a, b)
        await asyncio.sleep(1.0)  # a duplicate would show up now
        rcpts = sorted(m.rcpt_tos[0] for m in sink.messages)
        assert rcpts == sorted(f"c{i}@example.org" for i in range(20))
    finally:
        a.terminate()
        b.terminate()
        await sink.stop()


@pytest.mark.postgres
async def test_node_killed_mid_delivery_is_taken_over_by_the_other(
    tmp_path: Path, procs: list[GatewayProcess], pg: PostgresBackend
) -> None:
    sink = await Sink().start()
    sink.handler.delay = 60.0  # node A will be stuck waiting for the reply to "."
    a = node_config(tmp_path, "node-a", sink.port, pg.url, lease="3s")
    procs.append(a)
    await set_password(a)
    await a.start()
    reply = await send(a.port, "customer@example.org", "stranded?")
    assert reply.startswith("250 ")
    await asyncio.sleep(1.0)  # node A has claimed it and is inside DATA upstream
    a.kill()
    sink.handler.delay = 0.0
    assert sink.messages == []

    b = node_config(tmp_path, "node-b", sink.port, pg.url, lease="3s")
    procs.append(b)
    await b.start()
    try:
        await wait_for(lambda: len(sink.messages) >= 1, 30, "takeover by node B", a, b)
        await asyncio.sleep(0.5)
        assert len(sink.messages) == 1
        assert b"Subject: stranded?" in sink.messages[0].data
    finally:
        b.terminate()
        await sink.stop()


async def test_sigterm_lets_data_finish_and_tells_idle_sessions(
    tmp_path: Path, procs: list[GatewayProcess]
) -> None:
    sink = await Sink().start()
    db = tmp_path / "node" / "mailgate.db"
    node = await start_sqlite_node(tmp_path, procs, sink.port, db)
    idle = await RawSmtp.connect("127.0.0.1", node.port)
    busy = await RawSmtp.connect("127.0.0.1", node.port)
    await busy.login("example-crm", PASSWORD)
    await busy.cmd("MAIL FROM:<sales@example-motors.test>")
    await busy.cmd("RCPT TO:<customer@example.org>")
    assert (await busy.cmd("DATA")).code == 354
    payload = dot_stuff(message(subject="finished during shutdown"))
    await busy.send(payload[:100])
    assert node.proc is not None
    node.proc.send_signal(15)  # SIGTERM
    goodbye = await idle.read_reply()
    await asyncio.sleep(0.3)
    await busy.send(payload[100:])
    reply = await busy.read_reply()
    try:
        after = await busy.read_reply()
    except ConnectionError:
        after = None
    assert (goodbye.code, goodbye.enhanced) == (421, "4.3.2")
    assert reply.code == 250, reply
    assert after is None or (after.code, after.enhanced) == (421, "4.3.2")
    assert await asyncio.to_thread(node.proc.wait, 30) == 0, node.output()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT state FROM messages").fetchall()
    assert len(rows) == 1  # acknowledged, so stored (delivered or still queued)
    if rows[0][0] == "queued":
        await node.start()
        await wait_for(lambda: len(sink.messages) == 1, 20, "delivery after restart", node)
        node.terminate()
    await sink.stop()


async def test_sighup_applies_only_a_policy_set_that_validates(
    tmp_path: Path, procs: list[GatewayProcess]
) -> None:
    sink = await Sink().start()
    node = node_config(tmp_path, "node", sink.port, f"sqlite:///{tmp_path / 'node' / 'db'}")
    procs.append(node)
    await set_password(node)
    await node.start()
    assert node.proc is not None
    dealer_file = tmp_path / "policies" / "dealers" / "example-motors.toml"
    original = dealer_file.read_text()
    try:
        # An invalid set (unknown key) is refused: the old set stays, mail still flows.
        dealer_file.write_text(original + "\nnot_a_key = 1\n")
        node.proc.send_signal(1)  # SIGHUP
        await asyncio.sleep(1.0)
        assert (await send(node.port, "a@example.org", "after bad reload")).startswith("250 ")
        assert "not_a_key" in node.output()
        # A valid set that adds a sending domain takes effect.
        dealer_file.write_text(
            original.replace('["example-motors.test"]', '["example-motors.test", "em-mail.test"]')
        )
        node.proc.send_signal(1)
        client = await RawSmtp.connect("127.0.0.1", node.port)
        await client.login("example-crm", PASSWORD)

        async def accepted() -> bool:
            resp = await client.cmd("MAIL FROM:<sales@em-mail.test>")
            if resp.code == 250:
                return True
            await client.cmd("RSET")
            return False

        for _ in range(50):
            if await accepted():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the valid policy set was not applied")
        await client.close()
    finally:
        node.terminate()
        await sink.stop()
