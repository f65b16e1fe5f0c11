"""Suppression at RCPT: the drop policy, and a dealer's alerts to a signed webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from gateway.alerts import Alerts, render, signature
from gateway.clock import FakeClock
from gateway.metrics import Metrics
from gateway.reputation.records import (
    Actor,
    DayCounts,
    DealerState,
    EventKind,
    Evidence,
    FeedbackEvent,
    StateChange,
    Suppression,
)
from gateway.storage.sqlite import SqliteStorage
from gateway.types import DealerId, MessageId
from tests.integration.conftest import Harness, dot_stuff, message

MakeHarness = Callable[..., Awaitable[Harness]]
DEALER = DealerId("example-motors")


async def test_drop_policy_accepts_and_leaves_suppressed_recipients_out(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    gw = h.gateway
    policy = gw.settings.server.policies_dir / "dealers" / "example-motors.toml"
    policy.write_text(policy.read_text() + '\n[suppression]\non_rcpt = "drop"\n')
    gw.reload_policies()
    await gw.storage.add_suppression(
        Suppression(DEALER, "gone@customers.example", "spam complaint", "t", gw.clock.now())
    )
    client = await h.client()
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        assert (await client.cmd("RCPT TO:<gone@customers.example>")).code == 250
        assert (await client.cmd("RCPT TO:<kept@customers.example>")).code == 250
        assert (await client.data(dot_stuff(message()))).code == 250
        # Only suppressed recipients: accepted, nothing queued, and the CRM is told so.
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        assert (await client.cmd("RCPT TO:<Gone@Customers.example>")).code == 250
        reply = await client.data(dot_stuff(message()))
        assert reply.code == 250 and "suppressed recipient" in reply.text
    finally:
        await client.close()
    await h.wait_delivered(1)
    assert [m.rcpt_tos for m in h.sink.messages] == [["kept@customers.example"]]


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Hook.received
    server.shutdown()


async def test_alert_email_and_signed_webhook(
    tmp_path: Path, webhook: tuple[str, list[tuple[dict[str, str], bytes]]]
) -> None:
    url, received = webhook
    store = await SqliteStorage.open(str(tmp_path / "m.db"))
    clock = FakeClock(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
    try:
        for n in range(3):
            await store.record_feedback(
                FeedbackEvent(DEALER, EventKind.COMPLAINT, MessageId(f"s.{n}"),
                              f"r{n}@x.example", clock.now(), "abuse", "Price drop!", "t")
            )  # fmt: skip
        alerts = Alerts(
            store, clock, Metrics(), from_addr="alerts@mailgate.test", hostname="mailgate.test",
            operators=["ops@mailgate.test"], webhook_url=url, webhook_secret=b"s3cret",
        )  # fmt: skip
        change = StateChange(
            DEALER, DealerState.WARNED, DealerState.ACTIVE, "complaint rate 0.10%", Actor.AUTO,
            clock.now(), Evidence(clock.now().date(), clock.now().date(),
                                  DayCounts(delivered=3000, complaints=3)), id=7,
        )  # fmt: skip
        await alerts.on_change(change, None)
        await alerts.on_change(change, None)  # the same transition again: not repeated
        await alerts.drain()
        queued = await store.list_messages()
        assert [m.rcpt for m in queued] == ["ops@mailgate.test"]
        assert queued[0].system and queued[0].mail_from == ""
        assert len(received) == 2  # webhooks are at-least-once; the dedup_key tells
        headers, body = received[0]
        expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert headers["X-Mailgate-Signature"] == expected == signature(b"s3cret", body)
        payload = json.loads(body)
        assert payload["event"] == "dealer.warning" and payload["dedup_key"].endswith(":7:warned")
        assert payload["top_subjects"] == [{"subject": "Price drop!", "complaints": 3}]
        alert = await alerts.build(change, None)
        subject, text, html = render(alert)
        assert subject.startswith("[Mailgate] Warning for example-motors")
        assert "3 complaints / 3000 delivered" in text and "r2@x.example" in text
        assert "<h2>What to do next</h2>" in html
    finally:
        await store.close()
