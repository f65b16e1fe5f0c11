"""Consent through the real gateway: a CASL dealer, a CRM on SMTP, a sink behind.

Also the import path an operator uses (``mailgate consent import`` on a file) and the
eligible/locked gauges.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from gateway.cli.consent import import_file
from gateway.cli.main import main
from gateway.consent.csvformat import RowContext
from gateway.consent.ops import ConsentGauges, ConsentOps
from gateway.consent.rules import ConsentEvent, ConsentRules, Interaction
from gateway.reputation.records import Suppression
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


async def send(
    h: Harness,
    rcpts: list[str],
    category: str = "",
    subject: str = "Offer",
    unsubscribe: bool = True,
) -> str:
    extra = f"X-Mailgate-Category: {category}\r\n" if category else ""
    # CASL s. 6(2)(c): commercial mail carries an unsubscribe (missing-unsubscribe).
    extra += "List-Unsubscribe: <mailto:unsubscribe@example-motors.test>\r\n" if unsubscribe else ""
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
        known = RowContext(clock.now(), None, {"example-motors": ConsentRules()})
        result = await import_file(ops, csv_file, known, batch=2)
        read, changed, rejected = result.read, result.changed, result.problems
        assert (read, changed) == (6, 2)
        assert [line for line, _ in rejected] == [4, 6, 7]
        assert "topic 'gdpr-ish'" in rejected[0][1] and "no policy file" in rejected[1][1]
        again = await import_file(ops, csv_file, known)
        assert again.changed == 0
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


def offline_config(tmp_path: Path, preset: str) -> Path:
    """A settings file for offline commands: the shipped policies, the example dealer on
    ``preset``, a data directory of the test's own."""
    policies = copy_shipped(tmp_path / "policies")
    dealer_file = policies / "dealers" / "example-motors.toml"
    dealer_file.write_text(f'preset = "{preset}"\n' + dealer_file.read_text())
    config = tmp_path / "mailgate.toml"
    config.write_text(
        f'[server]\nhostname = "mailgate.test"\ndata_dir = "{tmp_path / "var"}"\n'
        f'policies_dir = "{policies}"\n'
    )
    return config


def test_consent_commands_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path, "crm-windows")
    csv_file = tmp_path / "crm.csv"
    csv_file.write_text(
        "address,event,date,reference\njohn@customer.example,service-repair-order,2024-03-01,RO-7\n"
    )
    assert main(["--config", str(config), "init"]) == 0
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


# -- issue 17 ----------------------------------------------------------------------------


async def test_b14_a_locked_recipient_among_several_is_recorded_and_reported(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    casl(h, "\n[consent]\nrefused_dsn = true\n")
    today = datetime.now(UTC).date()
    await h.gateway.storage.record_consent(
        [
            ConsentEvent(
                DEALER,
                "recent@customer.example",
                Interaction.SERVICE,
                today,
                ref="RO-9",
                source="dms",
                proof="",
            )
        ]
    )
    reply = await send(h, ["recent@customer.example", "lapsed@customer.example"], subject="Tires")
    assert reply.startswith("250")
    await h.wait_delivered(2)  # the message to the eligible one, and the DSN to the CRM
    by_rcpt = {m.rcpt_tos[0]: m for m in h.sink.messages}
    assert set(by_rcpt) == {"recent@customer.example", "sales@example-motors.test"}
    dsn = by_rcpt["sales@example-motors.test"]
    assert dsn.mail_from in ("", "<>")
    assert b"Final-Recipient: rfc822; lapsed@customer.example" in dsn.data
    assert b"Status: 5.7.1" in dsn.data and b"consent-window-expired" in dsn.data
    token = add_token(h.gateway)
    listed = await call(h.gateway, "GET", f"/api/dealers/{DEALER}/consent-refusals", token=token)
    assert listed.status == 200
    (refusal,) = listed.body["refusals"]
    assert refusal["recipient"] == "lapsed@customer.example"
    assert refusal["code"] == "consent-window-expired" and refusal["message_went_on"] is True
    assert refusal["dsn"] and "no interaction on record" in refusal["detail"]
    # The ledger: the copy that went out, with the basis it was sent on.
    evidence = await call(
        h.gateway,
        "GET",
        f"/api/dealers/{DEALER}/consent-evidence?address=Recent@customer.example",
        token=token,
    )
    assert evidence.status == 200
    (entry,) = evidence.body["entries"]
    assert (entry["recipient"], entry["basis"], entry["event"]) == (
        "recent@customer.example", "event", "service-repair-order")  # fmt: skip
    assert (entry["event_on"], entry["reference"], entry["source"]) == (
        today.isoformat(), "RO-9", "dms")  # fmt: skip
    assert (entry["rules"], entry["law"], entry["preset"], entry["window"]) == (
        "CASL implied-consent", "CASL", "casl", "2 years")  # fmt: skip
    assert entry["category"] == "commercial" and entry["eligible"] is True
    csv_answer = await call(
        h.gateway, "GET", f"/api/dealers/{DEALER}/consent-evidence.csv", token=token
    )
    assert csv_answer.status == 200
    assert csv_answer.raw.splitlines()[0].startswith(b"message_id,submission_id,dealer")
    assert b"recent@customer.example" in csv_answer.raw


async def test_b14_without_the_dsn_policy_the_refusal_is_still_recorded(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    casl(h)
    today = datetime.now(UTC).date()
    await h.gateway.storage.record_consent(
        [ConsentEvent(DEALER, "recent@customer.example", Interaction.SERVICE, today)]
    )
    reply = await send(h, ["recent@customer.example", "lapsed@customer.example"], subject="Oil")
    assert reply.startswith("250")
    await h.wait_delivered(1)
    (refusal,) = await h.gateway.storage.consent_refusals(DEALER)
    assert refusal.recipient == "lapsed@customer.example" and refusal.dsn == ""
    # A lone refused recipient is told at DATA, and recorded too.
    assert (await send(h, ["nobody@customer.example"], subject="Oil change")).startswith("550")
    latest = (await h.gateway.storage.consent_refusals(DEALER))[0]
    assert latest.recipient == "nobody@customer.example" and not latest.message_went_on
    await asyncio.sleep(0.3)
    assert len(h.sink.messages) == 1


async def test_b8_rcpt_the_api_and_consent_show_give_one_answer(
    make_harness: MakeHarness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h = await make_harness()
    casl(h)
    await h.gateway.storage.record_consent(
        [
            ConsentEvent(
                DEALER,
                "ann@customer.example",
                Interaction.EXPRESS_CONSENT,
                date(2025, 5, 1),
                source="web form",
                proof="form 12",
            )
        ]
    )
    await h.gateway.storage.add_suppression(
        Suppression(
            DEALER,
            "ann@customer.example",
            "spam complaint",
            "report 77",
            datetime.now(UTC) - timedelta(days=1),
        )
    )
    client = await h.client()
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        refused = await client.cmd("RCPT TO:<ann@customer.example>")
        assert refused.code == 550
    finally:
        await client.close()
    token = add_token(h.gateway)
    shown = await call(h.gateway, "GET", f"/api/dealers/{DEALER}/consent/ann@customer.example",
                       token=token)  # fmt: skip
    assert shown.status == 200
    marketing = shown.body["eligibility"]["dealer-marketing"]
    assert marketing["eligible"] is False and marketing["code"] == "suppressed"
    assert "spam complaint" in marketing["reason"]
    assert shown.body["transactional"]["eligible"] is False
    assert shown.body["suppression"]["reason"] == "spam complaint"
    # The command line reads the same store and says the same.
    config = tmp_path / "cli.toml"
    server = h.gateway.settings.server
    config.write_text(
        f'[server]\nhostname = "mailgate.test"\ndata_dir = "{server.data_dir}"\n'
        f'policies_dir = "{server.policies_dir}"\n'
    )
    args = ["--config", str(config), "consent", "show", "ann@customer.example",
            "--dealer", "example-motors"]  # fmt: skip
    assert await asyncio.to_thread(main, args) == 0
    out = capsys.readouterr().out
    assert "dealer-marketing   LOCKED: the recipient is suppressed since" in out
    assert "transactional email: LOCKED" in out


async def test_b1_the_api_reads_every_spelling_of_email_and_refuses_unknown_channels(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    casl(h)
    token = add_token(h.gateway)
    base = f"/api/dealers/{DEALER}/consent"
    for body in (
        {"address": "ann@customer.example", "event": "express-consent", "date": "2025-05-01"},
        {"address": "ann@customer.example", "event": "opt-out", "date": "2025-06-01T10:00:00Z",
         "channel": "E-Mail"},
    ):  # fmt: skip
        assert (await call(h.gateway, "POST", base, token=token, body=body)).status == 200
    shown = await call(h.gateway, "GET", f"{base}/ann@customer.example", token=token)
    marketing = shown.body["eligibility"]["dealer-marketing"]
    assert marketing["eligible"] is False and "opted out" in marketing["reason"]
    assert shown.body["preferences"][0]["channel"] == "email"
    bad = await call(h.gateway, "POST", base, token=token, body={
        "address": "ann@customer.example", "event": "opt-out", "date": "2025-06-01",
        "channel": "fax"})  # fmt: skip
    assert bad.status == 400 and "channel 'fax'" in bad.body["error"]
    bad = await call(h.gateway, "POST", base, token=token, body={
        "address": "<ann@customer.example>", "event": "opt-out", "date": "2025-06-01"})  # fmt: skip
    assert bad.status == 400 and "as RCPT TO accepts it" in bad.body["error"]


def test_b5_mailgate_check_shows_a_missing_unsubscribe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path, "casl")
    mail = tmp_path / "offer.eml"
    mail.write_bytes(message(subject="Winter tires", body="Winter tires 20% off this week.\r\n"))
    args = ["--config", str(config), "check", str(mail), "--dealer", "example-motors"]
    assert main(args) == 2
    assert "ERROR missing-unsubscribe (reject)" in capsys.readouterr().out
    # With the gateway's own one-click link configured, nothing is missing.
    config.write_text(config.read_text() + '[unsubscribe]\nbase_url = "https://mg.test"\n')
    assert main(args) == 0
    assert "missing-unsubscribe" not in capsys.readouterr().out


def test_expiring_and_locked_lists_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path, "casl")
    today = datetime.now(UTC).date()
    csv_file = tmp_path / "crm.csv"
    inquiry = (today - timedelta(days=170)).isoformat()  # six months end within 30 days
    fresh = (today - timedelta(days=10)).isoformat()
    csv_file.write_text(
        "address,event,date\n"
        f"soon@customer.example,inquiry,{inquiry}\n"
        f"fresh@customer.example,service-repair-order,{fresh}\n"
        f"gone@customer.example,inquiry,2020-01-01\n"
        f"out@customer.example,service-repair-order,{fresh}\n"
        f"out@customer.example,consent-withdrawn,{fresh}\n"
    )
    assert main(["--config", str(config), "init"]) == 0
    base = ["--config", str(config), "consent"]
    assert main([*base, "import", str(csv_file), "--dealer", "example-motors"]) == 0
    capsys.readouterr()
    assert main([*base, "expiring", "--dealer", "example-motors", "--within", "30d", "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "address,eligible,until,days_left,code,basis,basis_on,review_since,reason"
    assert [line.split(",")[0] for line in lines[1:]] == ["soon@customer.example"]
    assert main([*base, "locked", "--dealer", "example-motors", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["address"], r["code"]) for r in rows] == [
        ("gone@customer.example", "consent-window-expired"),
        ("out@customer.example", "no-opt-in"),
    ]
    assert rows[1]["reason"] == f"the recipient withdrew consent on {fresh}"
    assert main([*base, "evidence", "--dealer", "example-motors"]) == 1  # nothing sent yet


async def test_an_offer_labelled_transactional_meets_the_consent_rules(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    casl(h)
    reply = await send(h, ["nobody@customer.example"], "transactional", "Year-end SALE: 0% APR")
    assert reply.startswith("550 ") and "consent-window-expired" in reply
    # A real receipt with the label, and one without a label, go out as before.
    assert (await send(h, ["nobody@customer.example"], "transactional", "Your receipt")).startswith(
        "250"
    )
    await h.wait_delivered(1)
    (refusal,) = await h.gateway.storage.consent_refusals(DEALER)
    assert refusal.code == "consent-window-expired"


async def test_the_api_lists_expiring_and_locked_recipients(make_harness: MakeHarness) -> None:
    h = await make_harness()
    casl(h)
    today = datetime.now(UTC).date()
    await h.gateway.storage.record_consent(
        [
            ConsentEvent(DEALER, "soon@customer.example", Interaction.INQUIRY,
                         today - timedelta(days=170)),
            ConsentEvent(DEALER, "gone@customer.example", Interaction.INQUIRY, date(2020, 1, 1)),
        ]
    )  # fmt: skip
    token = add_token(h.gateway)
    base = f"/api/dealers/{DEALER}"
    soon = await call(h.gateway, "GET", f"{base}/consent-expiring?within=30d", token=token)
    assert soon.status == 200
    assert [r["address"] for r in soon.body["recipients"]] == ["soon@customer.example"]
    assert 0 <= soon.body["recipients"][0]["days_left"] <= 30
    assert (await call(h.gateway, "GET", f"{base}/consent-expiring?within=2y", token=token)
            ).status == 400  # fmt: skip
    locked = await call(h.gateway, "GET", f"{base}/consent-locked.csv", token=token)
    assert locked.status == 200
    rows = locked.raw.decode().splitlines()
    assert rows[0].startswith("address,eligible") and rows[1].startswith("gone@customer.example")
