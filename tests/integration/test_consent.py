"""Consent through the real gateway: a CASL dealer, a CRM on SMTP, a sink behind.

Also the import path an operator uses (``mailgate consent import`` on a file) and the
eligible/locked gauges.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from gateway.cli.consent import import_file
from gateway.cli.main import main
from gateway.consent.ops import ConsentGauges, ConsentOps
from gateway.consent.rules import ConsentEvent, Interaction
from gateway.storage.sqlite import SqliteStorage
from gateway.types import DealerId
from tests.integration.admin import add_token, call
from tests.integration.conftest import Harness, dot_stuff, message
from tests.shipped import copy_shipped

MakeHarness = Callable[..., Awaitable[Harness]]
DEALER = DealerId("example-motors")
CASL = '\npreset = "casl"\n'


def casl(h: Harness, extra: str = "") -> None:
    policy = h.gateway.settings.server.policies_dir / "dealers" / "example-motors.toml"
    text = policy.read_text()
    # Top-level keys must come before the first table of the dealer file.
    first_table = text.find("\n[")
    head, tail = (text, "") if first_table < 0 else (text[:first_table], text[first_table:])
    policy.write_text(head + CASL + tail + extra)
    h.gateway.reload_policies()
    dealer = h.gateway.policies.current.dealer(DEALER)
    assert dealer is not None and dealer.consent.enforce


async def send(h: Harness, rcpts: list[str], category: str = "", subject: str = "Offer") -> str:
    extra = f"X-Mailgate-Category: {category}\r\n" if category else ""
    body = f"{subject}: a message written for this test only, {rcpts[0]}.\r\n"
    client = await h.client()
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        for rcpt in rcpts:
            assert (await client.cmd(f"RCPT TO:<{rcpt}>")).code == 250
        reply = await client.data(dot_stuff(message(subject=subject, body=body, extra=extra)))
    finally:
        await client.close()
    return f"{reply.code} {reply.text}"


async def test_commercial_mail_respects_the_casl_windows(make_harness: MakeHarness) -> None:
    h = await make_harness()
    casl(h)
    today = datetime.now(UTC).date()
    lapsed_on = today - timedelta(days=3 * 365)
    await h.gateway.storage.record_consent(
        [
            ConsentEvent(DEALER, "recent@customer.example", Interaction.SERVICE, today),
            ConsentEvent(DEALER, "lapsed@customer.example", Interaction.SERVICE, lapsed_on),
        ]
    )
    # A lone lapsed recipient: 550 5.7.1 with the reason in plain words.
    reply = await send(h, ["lapsed@customer.example"], subject="Spring offer")
    assert reply.startswith("550 ")
    assert "5.7.1" in reply and "outside the CASL implied-consent window" in reply
    assert f"a service repair order on {lapsed_on.isoformat()}" in reply
    # Transactional mail is exempt.
    assert (await send(h, ["lapsed@customer.example"], "transactional", "Receipt")).startswith(
        "250"
    )
    # Two recipients: the eligible one goes, the lapsed one is left out.
    assert (
        await send(h, ["recent@customer.example", "nobody@customer.example"], subject="Tires")
    ).startswith("250")
    await h.wait_delivered(2)
    # A new interaction renews the locked recipient at once.
    await h.gateway.storage.record_consent(
        [ConsentEvent(DEALER, "lapsed@customer.example", Interaction.SHOWROOM, today)]
    )
    assert (await send(h, ["lapsed@customer.example"], subject="Welcome back")).startswith("250")
    await h.wait_delivered(3)
    delivered = sorted(
        (m.rcpt_tos[0], m.data.split(b"Subject: ")[1].split(b"\r\n")[0].decode())
        for m in h.sink.messages
    )
    assert delivered == [
        ("lapsed@customer.example", "Receipt"),
        ("lapsed@customer.example", "Welcome back"),
        ("recent@customer.example", "Tires"),
    ]
    gauges = await ConsentGauges(
        h.gateway.storage, h.gateway.policies, h.gateway.clock, h.gateway.metrics
    ).refresh()
    assert gauges[DEALER].eligible == 2 and gauges[DEALER].locked == 0
    text = h.gateway.metrics.render()[0].decode()
    assert 'mailgate_consent_recipients{dealer="example-motors",state="eligible"} 2.0' in text
    # The dealer's status page shows the same counts.
    links = h.gateway.status_links
    assert links is not None
    url = f"http://127.0.0.1:{h.gateway.public_port}{links.path(DEALER)}"
    page = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    assert b"2 recipients may receive commercial mail; 0 are locked" in page


async def test_policy_may_hold_a_lapsed_recipient(make_harness: MakeHarness) -> None:
    h = await make_harness()
    casl(h, '\n[checks]\nconsent-window-expired = { action = "hold" }\n')
    reply = await send(h, ["unknown@customer.example"], subject="Hold me")
    assert reply.startswith("250")
    held = await h.gateway.storage.list_messages()
    assert [(m.rcpt, m.state.value) for m in held] == [("unknown@customer.example", "held")]
    assert "no interaction on record" in held[0].note


async def test_import_is_idempotent_and_reports_bad_rows(tmp_path: Path) -> None:
    csv_file = tmp_path / "crm.csv"
    csv_file.write_text(
        "Dealer,Address,Event,Date,Last_Payment,Reference,Source,Proof,Topic\n"
        "example-motors,John@Customer.example,sale-finance,2021-04-01,2025-03-01,D-1,dms,,\n"
        "example-motors,john@customer.example,sale-finance,2021-04-01,2025-04-01,D-1,dms,,\n"
        "example-motors,mary@customer.example,opt-in,2025-01-02T10:00:00Z,,,web,,gdpr-ish\n"
        "example-motors,mary@customer.example,opt-in,2025-01-02T10:00:00Z,,,web,,third-party\n"
        "rival-motors,x@customer.example,inquiry,2025-01-01,,,,,\n"
        "example-motors,not-an-address,inquiry,2025-01-01,,,,,\n"
    )
    store = await SqliteStorage.open(str(tmp_path / "c.db"))
    try:
        clock = _Clock()
        ops = ConsentOps(store, clock)
        known = frozenset({"example-motors"})
        read, changed, rejected = await import_file(ops, csv_file, None, known, batch=2)
        assert (read, changed) == (6, 2)
        assert [line for line, _ in rejected] == [4, 6, 7]
        assert "topic 'gdpr-ish'" in rejected[0][1] and "no policy file" in rejected[1][1]
        again = await import_file(ops, csv_file, None, known)
        assert again[1] == 0
        record = (await store.consent_records(DEALER, ["john@customer.example"]))[
            "john@customer.example"
        ]
        assert [e.last_payment for e in record.events] == [date(2025, 4, 1)]
        assert clock.calls > 0  # recorded_at comes from the injected clock
    finally:
        await store.close()


class _Clock:
    def __init__(self) -> None:
        self.calls = 0

    def now(self) -> datetime:
        self.calls += 1
        return datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_consent_commands_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = copy_shipped(tmp_path / "policies")
    dealer_file = policies / "dealers" / "example-motors.toml"
    dealer_file.write_text('preset = "crm-windows"\n' + dealer_file.read_text())
    config = tmp_path / "mailgate.toml"
    config.write_text(
        f'[server]\nhostname = "mailgate.test"\ndata_dir = "{tmp_path / "var"}"\n'
        f'policies_dir = "{policies}"\n'
    )
    csv_file = tmp_path / "crm.csv"
    csv_file.write_text(
        "address,event,date,reference\njohn@customer.example,service-repair-order,2024-03-01,RO-7\n"
    )
    assert main(["--config", str(config), "consent", "import", str(csv_file),
                 "--dealer", "example-motors"]) == 0  # fmt: skip
    assert main(["--config", str(config), "consent", "show", "john@customer.example",
                 "--dealer", "example-motors", "--at", "2026-04-02"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "1 rows: 1 new or changed" in out
    assert "service-repair-order [RO-7]: opens 25 months, ends 2026-04-01" in out
    assert (
        "LOCKED: outside the CRM eligibility window: last interaction, a service repair order "
        "on 2024-03-01, ended 2026-04-01" in out
    )
    assert main(["--config", str(config), "consent", "show", "nobody@customer.example",
                 "--dealer", "example-motors"]) == 1  # fmt: skip


async def test_admin_api_records_and_explains(make_harness: MakeHarness) -> None:
    h = await make_harness()
    casl(h)
    token = add_token(h.gateway)
    base = "/api/dealers/example-motors/consent"
    posted = await call(
        h.gateway,
        "POST",
        base,
        token=token,
        body={"address": "Ann@customer.example", "event": "express-consent",
              "date": "2025-05-01", "source": "web form", "proof": "form 12"},
    )  # fmt: skip
    assert posted.status == 200 and posted.body["recorded"] is True
    standing = posted.body["standing"]["eligibility"]["dealer-marketing"]
    assert standing["eligible"] is True and standing["until"] is None
    again = await call(h.gateway, "POST", base, token=token, body=posted_body())
    assert again.status == 200 and again.body["recorded"] is False
    shown = await call(h.gateway, "GET", f"{base}/ann@customer.example", token=token)
    assert shown.status == 200 and shown.body["events"][0]["proof"] == "form 12"
    bad = await call(
        h.gateway, "POST", base, token=token,
        body={"address": "ann@customer.example", "event": "hello", "date": "2025-05-01"},
    )  # fmt: skip
    assert bad.status == 400 and "event 'hello'" in bad.body["error"]
    missing = await call(h.gateway, "GET", "/api/dealers/nobody/consent/a@b.example", token=token)
    assert missing.status == 404


def posted_body() -> dict[str, str]:
    return {"address": "ann@customer.example", "event": "express-consent",
            "date": "2025-05-01", "source": "web form", "proof": "form 12"}  # fmt: skip
