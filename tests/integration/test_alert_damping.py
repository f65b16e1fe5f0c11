"""Flap damping of alert e-mails: a dealer suspended and resumed 50 times is not mailed 100 times.

Real parts: the SQLite store, the shipped policies, ``Suspensions`` making each transition
and ``Alerts`` queueing its e-mails as system messages; only the clock is a ``FakeClock``,
so the one-hour interval passes without waiting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.alerts import Alerts
from gateway.clock import FakeClock
from gateway.metrics import Metrics
from gateway.policy.store import PolicyStore
from gateway.reputation.suspensions import Suspensions
from gateway.storage.base import Storage, open_storage
from gateway.types import DealerId
from tests.shipped import copy_shipped

REPO = Path(__file__).resolve().parents[2]
DEALER = DealerId("example-motors")
CONTACT = "gm@example-motors.test"
FLAPS = 50


@dataclass
class Setup:
    storage: Storage
    clock: FakeClock
    alerts: Alerts
    suspensions: Suspensions
    metrics: Metrics

    async def mailed(self) -> list[EmailMessage]:
        """The alert e-mails queued to the dealer's contact, oldest first."""
        listed = await self.storage.list_messages(dealer_id=DEALER, limit=10_000)
        found = []
        for row in reversed(listed):
            stored = await self.storage.get(row.id)
            assert stored is not None
            if stored.rcpt == CONTACT:
                found.append(message_from_bytes(stored.data, policy=policy.default))
        return [m for m in found if isinstance(m, EmailMessage)]

    async def flap(self, times: int) -> None:
        for n in range(times):
            self.clock.advance(timedelta(seconds=20))
            assert await self.suspensions.suspend(DEALER, f"spam run {n}", by="ops")
            self.clock.advance(timedelta(seconds=20))
            assert await self.suspensions.resume(DEALER, f"list cleaned {n}", by="ops")


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    copy_shipped(tmp_path / "policies")
    storage = await open_storage(f"sqlite:///{tmp_path / 'mailgate.db'}")
    clock = FakeClock()
    metrics = Metrics()
    policies = PolicyStore(tmp_path / "policies")
    alerts = Alerts(
        storage,
        clock,
        metrics,
        from_addr="mailgate-alerts@mailgate.test",
        hostname="mailgate.test",
        email_interval=timedelta(hours=1),
    )
    suspensions = Suspensions(storage, policies, clock, metrics, notifier=alerts)
    yield Setup(storage, clock, alerts, suspensions, metrics)
    await storage.close()


def text_of(mail: EmailMessage) -> str:
    part = mail.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


async def test_flapping_50_times_sends_a_bounded_number_ending_with_the_last_state(
    setup: Setup,
) -> None:
    await setup.flap(FLAPS)  # 100 transitions in 33 minutes, inside one interval
    mailed = await setup.mailed()
    # The first suspension and the first resumption are told at once; the other 98 wait.
    assert [m["Subject"].split()[-1] for m in mailed] == ["suspended", "resumed"]
    held = setup.metrics.registry.get_sample_value(
        "mailgate_alerts_total", {"kind": "suspended", "channel": "email", "result": "held"}
    )
    assert held == FLAPS - 1

    setup.clock.advance(timedelta(minutes=20))
    assert await setup.alerts.flush_due() == 0  # the resumed e-mail's hour is not over
    setup.clock.advance(timedelta(minutes=10))
    assert await setup.alerts.flush_due() == 1
    mailed = await setup.mailed()
    assert len(mailed) == 3
    last = mailed[-1]
    assert last["Subject"] == "[Mailgate] Example Motors (example-motors) is resumed"
    text = text_of(last)
    assert "Since the last e-mail the state changed 97 more times" in text
    assert "(the last 10 of 97)" in text
    assert text.count("UTC  suspended -> resumed, by the operator") == 5
    assert text.count("UTC  resumed -> suspended, by the operator") == 5
    assert await setup.alerts.flush_due(everything=True) == 0  # nothing left over


async def test_the_last_state_is_told_when_the_flapping_stops_on_a_suspension(
    setup: Setup,
) -> None:
    await setup.flap(FLAPS)
    setup.clock.advance(timedelta(seconds=20))
    assert await setup.suspensions.suspend(DEALER, "for good", by="ops")
    setup.clock.advance(timedelta(hours=1))
    assert await setup.alerts.flush_due() == 1
    mailed = await setup.mailed()
    assert len(mailed) == 3
    assert mailed[-1]["Subject"] == "[Mailgate] Example Motors (example-motors) is suspended"
    assert "changed 98 more times" in text_of(mailed[-1])

    # Quiet for an hour after that: the next change is told at once, and lists nothing.
    setup.clock.advance(timedelta(hours=1, seconds=1))
    assert await setup.suspensions.resume(DEALER, "fixed", by="ops")
    mailed = await setup.mailed()
    assert len(mailed) == 4
    assert mailed[-1]["Subject"].endswith("is resumed")
    assert "Since the last e-mail" not in text_of(mailed[-1])


async def test_shutdown_tells_the_held_back_state_at_once(setup: Setup) -> None:
    await setup.flap(3)
    assert len(await setup.mailed()) == 2
    await setup.alerts.drain()  # what Gateway.stop calls before closing the store
    mailed = await setup.mailed()
    assert len(mailed) == 3 and mailed[-1]["Subject"].endswith("is resumed")
    assert "changed 3 more times" in text_of(mailed[-1])
