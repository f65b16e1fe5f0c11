"""Two real gateway processes on one PostgreSQL database: one customer, one message."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.contract.conftest import PostgresBackend, pg
from tests.integration.conftest import PASSWORD, dot_stuff
from tests.procs import GatewayProcess, node_config, procs, set_password, wait_for
from tests.sinks import Sink
from tests.smtpclient import RawSmtp

__all__ = ["pg", "procs"]  # fixtures, imported for pytest

pytestmark = [pytest.mark.timeout(180), pytest.mark.postgres]

DATA = Path(__file__).resolve().parents[1] / "data" / "duplicates"


async def send(port: int, data: bytes, to: str = "john.doe@customer.example") -> str:
    client = await RawSmtp.connect("127.0.0.1", port)
    try:
        await client.login("example-crm", PASSWORD)
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        assert (await client.cmd(f"RCPT TO:<{to}>")).code == 250
        return str(await client.data(dot_stuff(data)))
    finally:
        await client.close()


async def test_sent_through_node_a_then_node_b_is_delivered_once(
    tmp_path: Path, procs: list[GatewayProcess], pg: PostgresBackend
) -> None:
    sink = await Sink().start()
    a = node_config(tmp_path, "node-a", sink.port, pg.url)
    b = node_config(tmp_path, "node-b", sink.port, pg.url)
    procs += [a, b]
    await set_password(a)
    await asyncio.gather(a.start(), b.start())
    try:
        lead = (DATA / "lead-cars-com.eml").read_bytes()
        first = await send(a.port, lead)
        assert first.startswith("250 2.0.0 queued as "), first
        await wait_for(lambda: len(sink.messages) >= 1, 30, "the first delivery", a, b)
        again = await send(b.port, (DATA / "lead-cars-com-resent.eml").read_bytes())
        assert again.startswith("250 2.0.0 accepted as "), again
        near = await send(a.port, (DATA / "lead-website.eml").read_bytes())
        assert "not sent" in near, near
        # At the same moment through both nodes: still one.
        both = await asyncio.gather(
            send(a.port, lead, "mary@customer.example"), send(b.port, lead, "mary@customer.example")
        )
        assert sum("queued as" in r for r in both) == 1, both
        await wait_for(lambda: len(sink.messages) >= 2, 30, "the second delivery", a, b)
        await asyncio.sleep(1.5)  # a copy that should not be sent would show up now
        assert sorted(m.rcpt_tos[0] for m in sink.messages) == [
            "john.doe@customer.example",
            "mary@customer.example",
        ]
    finally:
        a.terminate()
        b.terminate()
        await sink.stop()
