"""SIGKILL between the final "." and the upstream's reply (reliability F4)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.procs import GatewayProcess, node_config, send, set_password, wait_for
from tests.sinks import Received, Sink, SinkHandler

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@dataclass
class StallAfterData(SinkHandler):
    """Keeps each message, then (while ``stall``) never answers the final "."."""

    stall: bool = True

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        assert isinstance(content, bytes)
        self.messages.append(
            Received(str(envelope.mail_from), list(envelope.rcpt_tos), content, tls=False)
        )
        while self.stall:
            await asyncio.sleep(0.05)
        return "250 2.0.0 OK queued"


@pytest.fixture
async def procs() -> AsyncIterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    yield started
    for proc in started:
        proc.kill()


async def test_f4_kill_between_dot_and_reply_redelivers_at_most_one_duplicate(
    tmp_path: Path, procs: list[GatewayProcess]
) -> None:
    handler = StallAfterData()
    sink = await Sink(handler).start()
    db = tmp_path / "node" / "mailgate.db"
    node = node_config(tmp_path, "node", sink.port, f"sqlite:///{db}")
    procs.append(node)
    await set_password(node)
    await node.start()
    try:
        reply = await send(node.port, "customer@example.org", "killed before the reply")
        assert reply.startswith("250 "), reply
        await wait_for(lambda: len(handler.messages) >= 1, 20, "the upstream copy", node)
        node.kill()  # the upstream has the bytes; the gateway never saw its reply
        handler.stall = False
        await node.start()  # same node id: its stale lease is released at start
        await wait_for(lambda: len(handler.messages) >= 2, 30, "the retry", node)

        def state() -> list[tuple[str, int]]:
            conn = sqlite3.connect(db)
            try:
                return list(conn.execute("SELECT state, attempts FROM messages"))
            finally:
                conn.close()

        await wait_for(lambda: [s for s, _ in state()] == ["delivered"], 20, "delivered", node)
        await asyncio.sleep(1)
        # RFC 5321 §6.1: a duplicate is the accepted price of never losing the message;
        # exactly one, and nothing more after the store says delivered.
        assert len(handler.messages) == 2
        assert all(b"Subject: killed before the reply" in m.data for m in handler.messages)
    finally:
        node.terminate()
        await sink.stop()
