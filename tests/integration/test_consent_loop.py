"""Closing the loop (issue 17): statements to the CRM's webhook, and erasure that keeps suppressing.

A real loopback HTTP server stands for the CRM; the gateway is the real one over SMTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.consent.rules import ConsentEvent, Interaction
from gateway.consent.sync import CrmSync
from gateway.reputation.records import UNSUBSCRIBE_REASON, Suppression
from tests.integration.conftest import Harness
from tests.integration.test_consent import DEALER, MakeHarness, casl

SECRET = b"a shared secret of the dealer's CRM"


class Crm:
    """The CRM's webhook receiver: records each request; answers ``status``."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        crm = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                crm.requests.append((dict(self.headers), body))
                self.send_response(crm.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mailgate"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def crm() -> Iterator[Crm]:
    server = Crm()
    yield server
    server.server.shutdown()


def webhook(h: Harness, url: str) -> None:
    policies = h.gateway.settings.server.policies_dir
    (policies / "keys").mkdir(exist_ok=True)
    (policies / "keys" / "crm.secret").write_bytes(SECRET + b"\n")
    casl(
        h,
        f'\n[consent]\ncrm_webhook_url = "{url}"\ncrm_secret_file = "keys/crm.secret"\n'
        '[consent.crm_vocabulary]\nunsubscribe = "Email Opt-Out"\ncomplaint = "Do Not Email"\n',
    )


async def test_unsubscribes_complaints_and_withdrawals_reach_the_crm_signed(
    make_harness: MakeHarness, crm: Crm
) -> None:
    h = await make_harness()
    # The gateway's own push task would race this test's pushes: this test drives them.
    for task in asyncio.all_tasks():
        if task.get_name() == "consent-statements":
            task.cancel()
    webhook(h, crm.url)
    store = h.gateway.storage
    now = datetime.now(UTC)
    await store.add_suppression(
        Suppression(DEALER, "uns@customer.example", UNSUBSCRIBE_REASON, "one-click", now)
    )
    await store.add_suppression(
        Suppression(DEALER, "spam@customer.example", "spam complaint", "report 4", now)
    )
    await store.add_suppression(
        Suppression(DEALER, "gone@customer.example", "hard bounce", "x", now)
    )
    await store.record_consent(
        [
            ConsentEvent(
                DEALER,
                "wd@customer.example",
                Interaction.WITHDRAWN,
                date(2025, 6, 1),
                source="call centre",
            )
        ]
    )
    dealer = h.gateway.policies.current.dealer(DEALER)
    assert dealer is not None
    sync = CrmSync(store, h.gateway.policies, h.gateway.clock)
    crm.status = 503
    assert await sync.sync(dealer) == 0  # the CRM is down: nothing is taken as sent
    crm.status = 200
    assert await sync.sync(dealer) == 3
    assert await sync.sync(dealer) == 0  # nothing new
    assert len(crm.requests) == 2
    first, second = crm.requests
    # The refused push is made again with the same statements (stable ids).
    assert json.loads(first[1])["statements"] == json.loads(second[1])["statements"]
    headers, body = second
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    assert headers["X-Mailgate-Signature"] == expected
    sent = json.loads(body)
    assert sent["dealer"] == DEALER
    assert sorted((s["address"], s["status"]) for s in sent["statements"]) == [
        ("spam@customer.example", "Do Not Email"),
        ("uns@customer.example", "Email Opt-Out"),
        ("wd@customer.example", "withdrawal"),
    ]
    assert len({s["id"] for s in sent["statements"]}) == 3
    # Written as consent statements: the record shows the opt-out.
    record = (await store.consent_records(DEALER, ["uns@customer.example"]))["uns@customer.example"]
    assert [(p.granted, p.source) for p in record.preferences] == [
        (False, "unsubscribe: one-click")
    ]


async def test_statements_export_as_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_harness: MakeHarness
) -> None:
    h = await make_harness()
    await h.gateway.storage.add_suppression(
        Suppression(
            DEALER,
            "uns@customer.example",
            UNSUBSCRIBE_REASON,
            "one-click",
            datetime.now(UTC) - timedelta(hours=1),
        )
    )
    args = ["--config", str(config_for(h, tmp_path)), "consent", "statements", "--dealer",
            DEALER, "--csv"]  # fmt: skip
    assert await asyncio.to_thread(main, args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "id,dealer,address,kind,status,at,source"
    assert lines[1].split(",")[2:5] == ["uns@customer.example", "unsubscribe", "unsubscribe"]


def config_for(h: Harness, tmp_path: Path) -> Path:
    server = h.gateway.settings.server
    config = tmp_path / "cli.toml"
    config.write_text(
        f'[server]\nhostname = "mailgate.test"\ndata_dir = "{server.data_dir}"\n'
        f'policies_dir = "{server.policies_dir}"\n'
    )
    return config


async def test_an_erased_person_stays_suppressed_and_is_named_nowhere(
    make_harness: MakeHarness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h = await make_harness()
    casl(h)
    store = h.gateway.storage
    await store.record_consent(
        [
            ConsentEvent(
                DEALER, "ann@customer.example", Interaction.SERVICE, datetime.now(UTC).date()
            )
        ]
    )
    config = config_for(h, tmp_path)
    args = ["--config", str(config), "consent", "erase", "Ann@customer.example", "--dealer",
            DEALER, "--reason", "request 2026-17", "--by", "dpo"]  # fmt: skip
    assert await asyncio.to_thread(main, args) == 0
    out = capsys.readouterr().out
    assert "erased Ann@customer.example for example-motors (consent_events 1" in out
    assert "it stays suppressed as erased:" in out
    record = (await store.consent_records(DEALER, ["ann@customer.example"]))["ann@customer.example"]
    assert record.events == ()
    assert await store.find_suppression(DEALER, "ann@customer.example", datetime.now(UTC)) is None
    client = await h.client()
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        refused = await client.cmd("RCPT TO:<ann@customer.example>")
        assert refused.code == 550 and "erasure request" in refused.text
        assert (await client.cmd("RCPT TO:<bob@customer.example>")).code == 250
    finally:
        await client.close()
