"""A refused RCPT names the suppression's list: the dealer's own, or the operator's global one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from gateway.reputation.records import Suppression
from gateway.types import DealerId
from tests.integration.conftest import Harness

MakeHarness = Callable[..., Awaitable[Harness]]
DEALER = DealerId("example-motors")
DAY = datetime(2026, 5, 7, 9, 30, tzinfo=UTC)


async def test_a_global_entry_is_not_reported_as_the_dealers(make_harness: MakeHarness) -> None:
    h = await make_harness()
    gw = h.gateway
    await gw.storage.add_suppression(
        Suppression(DEALER, "own@customers.example", "spam complaint", "t", DAY)
    )
    await gw.storage.add_suppression(
        Suppression(None, "trap@customers.example", "spam trap", "admin:ops", DAY)
    )
    client = await h.client()
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        own = await client.cmd("RCPT TO:<own@customers.example>")
        assert (own.code, own.enhanced) == (550, "5.7.1")
        assert own.text == (
            "5.7.1 <own@customers.example> is suppressed for example-motors: spam complaint "
            "on 2026-05-07"
        )
        trap = await client.cmd("RCPT TO:<trap@customers.example>")
        assert (trap.code, trap.enhanced) == (550, "5.7.1")
        assert "example-motors" not in trap.text
        assert trap.text == (
            "5.7.1 <trap@customers.example> is on the gateway operator's global suppression list: "
            "spam trap on 2026-05-07; only the gateway operator can lift it"
        )
    finally:
        await client.close()
