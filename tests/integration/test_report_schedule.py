"""When reports go out: daily and weekly periods, the hour, one node per period, consent.

Over a real SQLite store and the shipped policies plus a weekly dealer under the CASL
preset, with a fake clock: a period is reported once it has ended and its hour has come,
a quiet period is skipped, a second node finds the period taken, and the weekly report
counts the customers whose consent window closes within 30 days.
"""

from __future__ import annotations

import email
import email.message
import email.policy
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.consent.rules import ConsentEvent, Interaction
from gateway.policy.store import PolicyStore
from gateway.reports.links import ReportLinks
from gateway.reports.providers import ProviderLookup
from gateway.reports.service import Reports
from gateway.storage.base import Storage
from gateway.storage.sqlite import SqliteStorage
from gateway.types import DealerId, MessageId, NewMessage
from tests.shipped import copy_shipped

WEEKLY = """\
dealer_id = "weekly-motors"
name = "Weekly Motors"
preset = "casl"
auth_users = ["weekly-crm"]
from_domains = ["weekly-motors.test"]
contacts = ["owner@weekly-motors.test", "sales@weekly-motors.test"]
[consent]
postal_address = "1 Main Street, Springfield"
[report]
every = "week"
hour = 8
"""
MONDAY = date(2026, 1, 5)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Storage]:
    storage = await SqliteStorage.open(str(tmp_path / "mailgate.db"))
    yield storage
    await storage.close()


def reports(store: Storage, policies: PolicyStore, clock: FakeClock, node: str) -> Reports:
    return Reports(store, policies, clock, node=node, from_addr="reports@mailgate.test",
                   hostname="mailgate.test", providers=ProviderLookup(None),
                   status_link=lambda d: f"https://mailgate.test/status/{d}/x",
                   links=ReportLinks(b"k" * 32, "https://mailgate.test"))  # fmt: skip


def sent(mid: str, dealer: str, rcpt: str, at: datetime) -> NewMessage:
    return NewMessage(MessageId(mid), DealerId(dealer), "b@mailgate.test", rcpt,
                      b"Subject: Hi\r\n\r\nHello\r\n", at)  # fmt: skip


async def test_periods_hours_nodes_and_consent(store: Storage, tmp_path: Path) -> None:
    directory = copy_shipped(tmp_path / "policies")
    (directory / "dealers" / "weekly-motors.toml").write_text(WEEKLY)
    policies = PolicyStore(directory)
    clock = FakeClock(datetime(2026, 1, 6, 5, 0, tzinfo=UTC))  # Tuesday, before 06:00
    node_a = reports(store, policies, clock, "node-a")
    node_b = reports(store, policies, clock, "node-b")
    monday_10 = datetime.combine(MONDAY, datetime.min.time(), UTC) + timedelta(hours=10)
    await store.enqueue([sent("m1", "example-motors", "ann@gmail.com", monday_10),
                         sent("w1", "weekly-motors", "bo@yahoo.com", monday_10)])  # fmt: skip
    # Consent: one customer's inquiry window (6 months) closes on 25 January, another's
    # in June; one is already outside it.
    events = [
        ConsentEvent(DealerId("weekly-motors"), "soon@customer.test", Interaction.INQUIRY,
                     date(2025, 7, 25)),
        ConsentEvent(DealerId("weekly-motors"), "later@customer.test", Interaction.INQUIRY,
                     date(2025, 12, 20)),
        ConsentEvent(DealerId("weekly-motors"), "gone@customer.test", Interaction.INQUIRY,
                     date(2025, 1, 2)),
    ]  # fmt: skip
    await store.record_consent(events, now=monday_10)

    # 05:00 Tuesday: Monday's daily report is not due yet; Sunday's and last week's were
    # quiet (skipped, and never looked at again).
    assert await node_a.send_due() == {"example-motors": "skipped", "weekly-motors": "skipped"}
    assert await store.get_report_claim(DealerId("example-motors"), "day:2026-01-05") is None
    # 06:00: Monday's report goes out, from one node only.
    clock.set(datetime(2026, 1, 6, 6, 0, tzinfo=UTC))
    assert await node_a.send_due() == {"example-motors": "sent"}
    assert await node_b.send_due() == {}
    assert await node_a.send_due() == {}
    queued = [m for m in await store.list_messages(limit=20) if m.system]
    assert [(m.id, m.rcpt) for m in queued] == [
        ("report-example-motors-day-2026-01-05.0", "gm@example-motors.test")
    ]
    # The weekly dealer: Monday 12 January 08:00 for the week of 5 to 11 January.
    clock.set(datetime(2026, 1, 12, 7, 59, tzinfo=UTC))
    assert "weekly-motors" not in await node_b.send_due()
    clock.set(datetime(2026, 1, 12, 8, 0, tzinfo=UTC))
    assert (await node_b.send_due())["weekly-motors"] == "sent"
    listed = await store.list_messages(dealer_id=DealerId("weekly-motors"), limit=20)
    weekly = sorted((m for m in listed if m.system), key=lambda m: m.id)
    assert [m.rcpt for m in weekly] == ["owner@weekly-motors.test", "sales@weekly-motors.test"]
    owner, sales = [await text_of(store, m.id) for m in weekly]
    assert owner[0] == "[Mailgate] Weekly mail report for Weekly Motors: the week of 5 to 11 " \
        "January 2026"  # fmt: skip
    assert "1 customer can receive your commercial e-mail for less than 30 more days" in owner[1]
    # each contact has its own unsubscribe link
    assert "/u/reports/weekly-motors?to=owner@weekly-motors.test&t=" in owner[1]
    assert "/u/reports/weekly-motors?to=sales@weekly-motors.test&t=" in sales[1]
    assert "owner@weekly-motors.test&t=" not in sales[1]


async def text_of(store: Storage, message_id: str) -> tuple[str, str]:
    """The subject and plain-text body of a queued message."""
    full = await store.get(MessageId(message_id))
    assert full is not None
    parsed = email.message_from_bytes(full.data, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    part = parsed.get_body(("plain",))
    assert part is not None
    return str(parsed["Subject"]), str(part.get_content())
