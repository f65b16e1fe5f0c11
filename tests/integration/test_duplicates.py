"""One customer, one message: duplicates and caps through the real gateway and a sink.

The gateway runs in process on loopback with a ``FakeClock``, so windows slide on
command. Samples are in ``tests/data/duplicates/``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import string
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.cli.main import main as cli_main
from gateway.clock import FakeClock
from gateway.duplicates.fingerprints import recipient_key
from gateway.intake import service as intake_service
from gateway.settings import Settings
from gateway.types import DealerId, MessageId, MessageState
from tests.integration.conftest import Harness, add_credentials, dot_stuff, message
from tests.procs import write_config
from tests.shipped import shipped_text
from tests.sinks import Sink

DATA = Path(__file__).resolve().parents[1] / "data" / "duplicates"
DEALER_FILE = Path("dealers") / "example-motors.toml"
JOHN = "John.Doe+leads@customer.example"

# Five commercial messages with nothing in common but the dealer's name.
DISTINCT = [
    "Our spring sale starts Friday: zero percent financing on every sedan in stock.",
    "Thanks for visiting the showroom yesterday; here is the brochure you asked about.",
    "Winter tyres are back in stock, fitted and balanced while you wait with coffee.",
    "We would value your opinion: how was your last visit to our service lane?",
    "Trade in any car this month and we add a thousand dollars to its appraisal.",
]


class Gate(Harness):
    clock: FakeClock

    async def send(
        self, data: bytes, rcpts: tuple[str, ...] = (JOHN,), user: str = "example-crm"
    ) -> str:
        client = await self.client(user)
        try:
            assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
            for rcpt in rcpts:
                assert (await client.cmd(f"RCPT TO:<{rcpt}>")).code == 250
            return str(await client.data(dot_stuff(data)))
        finally:
            await client.close()

    async def advance(self, delta: timedelta) -> None:
        """Move the clock once nothing is in flight: the delivery leases run on it too."""
        await self.quiet()
        self.clock.advance(delta)

    async def tagged(self, code: str) -> list[bool]:
        """For each delivered copy in the store: whether ``code`` is among its findings."""
        listed = await self.gateway.storage.list_messages(MessageState.DELIVERED, limit=1000)
        stored = [await self.gateway.storage.get(m.id) for m in listed]
        return [m is not None and code in m.findings for m in stored]

    async def quiet(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (await self.gateway.storage.stats()).count(MessageState.QUEUED):
            assert loop.time() < deadline, "messages still queued"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # the worker records the outcome after the sink's reply

    async def settle(self, expected: int) -> None:
        await self.wait_delivered(expected)
        await asyncio.sleep(0.5)  # a copy that should not be sent would show up now
        assert len(self.sink.messages) == expected

    async def drops(self) -> list[tuple[str, str, str]]:
        found = await self.gateway.storage.list_duplicate_drops(DealerId("example-motors"))
        return [(d.recipient, d.kind, d.earlier) for d in reversed(found)]


def sample(name: str) -> bytes:
    return (DATA / f"{name}.eml").read_bytes()


def distinct(n: int, category: str = "") -> bytes:
    extra = f"X-Mailgate-Category: {category}\r\n" if category else ""
    return message(to=JOHN, subject=f"News {n}", body=DISTINCT[n] + "\r\n", extra=extra)


def queued_id(reply: str) -> str:
    assert reply.startswith("250 2.0.0 queued as "), reply
    return reply.split()[4] + ".1"


@pytest.fixture
async def make_gate(
    sink: Sink, settings_factory: Callable[..., Settings]
) -> AsyncIterator[Callable[..., Awaitable[Gate]]]:
    """A gateway on a FakeClock; ``overrides`` is TOML appended to the dealer file."""
    started: list[Gateway] = []

    async def make(overrides: str = "") -> Gate:
        settings = settings_factory(sink.port)
        dealer_file = settings.server.policies_dir / DEALER_FILE
        dealer_file.write_text(shipped_text(DEALER_FILE) + "\n" + overrides)
        clock = FakeClock()
        gateway = await Gateway.build(settings, clock=clock)
        await add_credentials(gateway)
        await gateway.start()
        started.append(gateway)
        gate = Gate(gateway, sink)
        gate.clock = clock
        return gate

    yield make
    for gateway in started:
        await gateway.stop()


CAPS = """
[checks.frequency-cap]
per_day = 1
per_week = 3
"""


async def test_three_leads_one_customer_one_follow_up(
    make_gate: Callable[..., Awaitable[Gate]],
) -> None:
    gate = await make_gate()
    rcpts = [
        "John.Doe+leads@customer.example",
        "john.doe@customer.example",
        "JOHN.DOE+web@customer.example",
    ]
    first = queued_id(await gate.send(sample("lead-cars-com"), (rcpts[0],)))
    await gate.advance(timedelta(minutes=3))
    second = await gate.send(sample("lead-website"), (rcpts[1],))
    await gate.advance(timedelta(minutes=3))
    third = await gate.send(sample("lead-autotrader"), (rcpts[2],))
    # The CRM hears 250 every time, so it does not retry.
    assert second.startswith("250 2.0.0 accepted as ") and "not sent" in second, second
    assert third.startswith("250 2.0.0 accepted as "), third
    await gate.settle(1)
    assert b"2024 Honda CR-V" in gate.sink.messages[0].data
    assert await gate.drops() == [(rcpts[1], "near", first), (rcpts[2], "near", first)]
    metric = gate.gateway.metrics.duplicates_dropped.labels("example-motors", "near")
    assert metric._value.get() == 2


async def test_service_reminder_and_sales_follow_up_both_go(
    make_gate: Callable[..., Awaitable[Gate]],
) -> None:
    gate = await make_gate()
    assert (await gate.send(sample("service-reminder"))).startswith("250 2.0.0 queued")
    # A day later: well inside the 72-hour window in which a near copy would be dropped.
    await gate.advance(timedelta(hours=25))
    assert (await gate.send(sample("lead-cars-com"))).startswith("250 2.0.0 queued")
    await gate.settle(2)
    assert await gate.drops() == []


ONE_DAY = ("service-reminder", "lead-cars-com", "receipt")  # none labelled


async def test_one_customer_one_day_three_different_messages_all_go(
    make_gate: Callable[..., Awaitable[Gate]],
) -> None:
    # A service reminder, a sales follow-up and a receipt on one day, from three systems
    # of the dealer: the shipped policy has no frequency cap, so all three are delivered.
    gate = await make_gate()
    for name in ONE_DAY:
        assert (await gate.send(sample(name))).startswith("250 2.0.0 queued as "), name
        await gate.advance(timedelta(hours=2))
    await gate.settle(3)
    assert await gate.drops() == []


async def test_strict_cap_preset_names_the_cap_in_each_drop_reply(
    make_gate: Callable[..., Awaitable[Gate]],
) -> None:
    gate = await make_gate('preset = "frequency-cap"\n')
    first = queued_id(await gate.send(sample(ONE_DAY[0])))
    await gate.advance(timedelta(hours=2))
    replies = [await gate.send(sample(name)) for name in ONE_DAY[1:]]
    for reply in replies:
        # 250 (the CRM must not retry), with the real reason: never "already has this".
        assert reply.startswith("250 2.0.0 accepted as "), reply
        assert "not sent: frequency cap: 1 commercial message per day to this recipient" in reply
        assert f"(the latest, {first} sent 2026-" in reply, reply
        assert "already has" not in reply
    await gate.settle(1)
    assert [kind for _, kind, _ in await gate.drops()] == ["cap", "cap"]


async def test_duplicate_drop_reply_names_the_earlier_message(
    make_gate: Callable[..., Awaitable[Gate]],
) -> None:
    gate = await make_gate()
    first = queued_id(await gate.send(sample("lead-cars-com")))
    sent_at = gate.clock.now()
    await gate.advance(timedelta(hours=1))
    reply = await gate.send(sample("lead-cars-com-resent"))
    assert reply == (
        f"250 2.0.0 accepted as {reply.split()[4].rstrip(';')}; not sent: duplicate of "
        f"{first} sent {sent_at:%Y-%m-%d %H:%M} UTC"
    )


async def test_exact_resend_is_dropped_for_that_recipient_only(
    make_gate: Callable[..., Awaitable[Gate]],
) -> None:
    gate = await make_gate()
    first = queued_id(await gate.send(sample("lead-cars-com")))
    await gate.advance(timedelta(hours=1))
    reply = await gate.send(sample("lead-cars-com-resent"), (JOHN, "mary@customer.example"))
    assert reply.startswith("250 2.0.0 queued as "), reply
    await gate.settle(2)
    assert [m.rcpt_tos for m in gate.sink.messages] == [[JOHN], ["mary@customer.example"]]
    assert await gate.drops() == [(JOHN, "exact", first)]


async def test_the_window_slides(make_gate: Callable[..., Awaitable[Gate]]) -> None:
    gate = await make_gate()
    await gate.send(sample("lead-cars-com"))
    await gate.advance(timedelta(hours=71))
    assert "not sent" in await gate.send(sample("lead-cars-com"))
    await gate.advance(timedelta(hours=2))  # 73 hours after the first: outside 72h
    assert (await gate.send(sample("lead-cars-com"))).startswith("250 2.0.0 queued")
    await gate.settle(2)


async def test_caps_per_day_and_per_week(make_gate: Callable[..., Awaitable[Gate]]) -> None:
    gate = await make_gate(CAPS)
    assert "queued" in await gate.send(distinct(0))
    await gate.advance(timedelta(hours=5))
    assert "not sent" in await gate.send(distinct(1))  # 1 a day
    await gate.advance(timedelta(hours=20))  # 25 hours after the first
    assert "queued" in await gate.send(distinct(2))
    await gate.advance(timedelta(days=2))
    assert "queued" in await gate.send(distinct(3))
    await gate.advance(timedelta(days=2))  # day 5: three in the week already
    assert "not sent" in await gate.send(distinct(4))
    await gate.settle(3)
    assert [kind for _, kind, _ in await gate.drops()] == ["cap", "cap"]


async def test_transactional_mail_is_exempt_from_caps_not_from_exact_copies(
    make_gate: Callable[..., Awaitable[Gate]],
) -> None:
    gate = await make_gate(CAPS)
    assert "queued" in await gate.send(distinct(0))
    confirmation = sample("appointment-confirmation")  # X-Mailgate-Category: transactional
    assert "queued" in await gate.send(confirmation)
    assert "queued" in await gate.send(distinct(1, category="transactional"))
    assert "not sent" in await gate.send(confirmation)
    await gate.settle(3)
    assert [kind for _, kind, _ in await gate.drops()] == ["exact"]


async def test_reject_policy_names_the_earlier_message(
    make_gate: Callable[..., Awaitable[Gate]],
) -> None:
    gate = await make_gate('[checks.duplicate-message]\naction = "reject"\n')
    first = queued_id(await gate.send(sample("lead-cars-com")))
    reply = await gate.send(sample("lead-cars-com-resent"))
    assert reply.startswith("550 5.7.1 "), reply
    assert first in reply
    await gate.settle(1)
    assert await gate.drops() == [(JOHN, "exact", first)]


async def test_tag_policy_delivers_and_records_without_telling_the_recipient(
    make_gate: Callable[..., Awaitable[Gate]],
) -> None:
    gate = await make_gate('[checks.near-duplicate-message]\naction = "tag"\n')
    await gate.send(sample("lead-cars-com"))
    second = queued_id(await gate.send(sample("lead-website")))
    await gate.settle(2)
    # The finding is the dealer's: stored with the copy, never a header the customer sees.
    assert all(b"X-Mailgate-Findings" not in m.data for m in gate.sink.messages)
    stored = await gate.gateway.storage.get(MessageId(second))
    assert stored is not None and "near-duplicate-message" in stored.findings


async def test_same_message_on_three_connections_at_once(
    make_gate: Callable[..., Awaitable[Gate]],
) -> None:
    gate = await make_gate()
    replies = await asyncio.gather(*(gate.send(sample("lead-cars-com")) for _ in range(3)))
    assert all(r.startswith("250 2.0.0 ") for r in replies), replies
    assert sum("queued as" in r for r in replies) == 1, replies
    await gate.settle(1)
    assert len(await gate.drops()) == 2


async def test_near_duplicates_on_three_connections_at_once(
    make_gate: Callable[..., Awaitable[Gate]],
) -> None:
    gate = await make_gate()
    leads = ("lead-cars-com", "lead-website", "lead-autotrader")
    replies = await asyncio.gather(*(gate.send(sample(name)) for name in leads))
    assert sum("queued as" in r for r in replies) == 1, replies
    await gate.settle(1)


async def test_cli_lists_the_drops(
    make_gate: Callable[..., Awaitable[Gate]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gate = await make_gate()
    first = queued_id(await gate.send(sample("lead-cars-com")))
    await gate.send(sample("lead-cars-com-resent"))
    config = write_config(
        tmp_path / "cli.toml",
        {
            "server": {
                "data_dir": str(tmp_path / "var"),
                "policies_dir": str(gate.gateway.settings.server.policies_dir),
            },
            "storage": {"url": gate.gateway.settings.storage_url},
        },
    )
    code = await asyncio.to_thread(
        cli_main, ["--config", str(config), "duplicates", "list", "--dealer", "example-motors"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert first in out and JOHN in out and "exact" in out


async def twenty_at_once(gate: Gate, messages: list[bytes]) -> list[str]:
    """Submit ``messages`` to JOHN on as many sessions, every DATA at the same moment."""
    clients = await asyncio.gather(*(gate.client() for _ in messages))
    try:
        for client in clients:
            assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
            assert (await client.cmd(f"RCPT TO:<{JOHN}>")).code == 250
        # All sessions read the history before any of them commits.
        sent = await asyncio.gather(
            *(c.data(dot_stuff(m)) for c, m in zip(clients, messages, strict=True))
        )
        return [str(r) for r in sent]
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_twenty_connections_at_once_with_tag_all_deliver(
    make_gate: Callable[..., Awaitable[Gate]],
) -> None:
    # Claim contention must not become a refusal when policy delivers the duplicates anyway:
    # every session hears 250, the first copy goes out untagged, the rest tagged.
    gate = await make_gate('[checks.duplicate-message]\naction = "tag"\n')
    replies = await twenty_at_once(gate, [sample("lead-cars-com")] * 20)
    assert all(r.startswith("250 2.0.0 queued as ") for r in replies), replies
    await gate.settle(20)
    # The finding is the dealer's: stored with each copy, never a header the customer sees.
    assert all(b"X-Mailgate-Findings" not in m.data for m in gate.sink.messages)
    assert sorted(await gate.tagged("duplicate-message")) == [False] + [True] * 19
    assert await gate.drops() == []


async def test_twenty_near_duplicates_at_once_with_tag_all_deliver(
    make_gate: Callable[..., Awaitable[Gate]],
) -> None:
    # Twenty fills of one template (a different salesperson each): near duplicates of one
    # another, none exact. With near duplicates tagged, all go, and none is capped.
    gate = await make_gate('[checks.near-duplicate-message]\naction = "tag"\n')
    lead = sample("lead-cars-com")
    fills = [
        lead.replace(b"Mike Thompson", f"Mike {chr(65 + n)}ompson".encode()) for n in range(20)
    ]
    replies = await twenty_at_once(gate, fills)
    assert all(r.startswith("250 2.0.0 queued as ") for r in replies), replies
    await gate.settle(20)
    assert sorted(await gate.tagged("near-duplicate-message")) == [False] + [True] * 19
    assert await gate.drops() == []


async def test_twenty_at_once_with_drop_send_one(
    make_gate: Callable[..., Awaitable[Gate]],
) -> None:
    gate = await make_gate()  # shipped policy: duplicates are dropped
    replies = await twenty_at_once(gate, [sample("lead-cars-com")] * 20)
    assert all(r.startswith("250 2.0.0 ") for r in replies), replies
    assert sum("queued as" in r for r in replies) == 1, replies
    await gate.settle(1)
    assert len(await gate.drops()) == 19


ALL_TAGGED = """
[checks.duplicate-message]
action = "tag"
[checks.near-duplicate-message]
action = "tag"
[checks.frequency-cap]
action = "tag"
"""


def unrelated(n: int) -> bytes:
    """A commercial message that shares no wording with any other ``unrelated(m)``."""
    rng = random.Random(n)
    words = " ".join("".join(rng.choices(string.ascii_lowercase, k=7)) for _ in range(60))
    return message(to=JOHN, subject=f"Offer {n}", body=words + "\r\n")


async def test_contention_past_the_retries_stores_what_policy_delivers_anyway(
    make_gate: Callable[..., Awaitable[Gate]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Twenty unrelated messages, no caps: nothing is a duplicate, so every claim keeps its
    # version guard and all but one lose the first round; with one attempt only, the rest
    # have no retry left. Policy delivers every duplicate, so they are stored as decided.
    monkeypatch.setattr(intake_service, "CLAIM_ATTEMPTS", 1)
    caplog.set_level(logging.INFO, logger="gateway.smtp")
    gate = await make_gate(ALL_TAGGED + "per_day = 0\nper_week = 0\n")
    replies = await twenty_at_once(gate, [unrelated(n) for n in range(20)])
    assert all(r.startswith("250 2.0.0 queued as ") for r in replies), replies
    await gate.settle(20)
    stored_anyway = [r for r in caplog.records if "storing as decided" in r.getMessage()]
    assert stored_anyway, "no submission outlasted its attempts: the test proves nothing"
    history = await gate.gateway.storage.recipient_histories(
        [recipient_key(DealerId("example-motors"), "john.doe@customer.example")],
        gate.clock.now() - timedelta(days=1),
    )
    (only,) = history.values()
    assert (only.version, len(only.sends)) == (20, 20)


async def test_contention_past_the_retries_still_tempfails_when_policy_drops(
    make_gate: Callable[..., Awaitable[Gate]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under a cap of one commercial message a day (the frequency-cap preset's, dropped) the
    # decision itself is at stake: a submission that loses with no retry left hears 451 and
    # the CRM's retry is decided with the winner in view; never is a second copy stored.
    monkeypatch.setattr(intake_service, "CLAIM_ATTEMPTS", 1)
    gate = await make_gate("[checks.frequency-cap]\nper_day = 1\nper_week = 3\n")
    replies = await twenty_at_once(gate, [unrelated(n) for n in range(20)])
    assert sum(r.startswith("250 2.0.0 queued as ") for r in replies) == 1, replies
    tempfailed = sum(r.startswith("451 4.3.0 ") for r in replies)
    dropped = sum(r.startswith("250 2.0.0 accepted as ") and "not sent" in r for r in replies)
    assert tempfailed + dropped == 19, replies
    await gate.settle(1)
