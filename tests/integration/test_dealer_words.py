"""What the dealer is told about a manual suspension, on every surface, and what it is not.

An operator suspends a dealer through the admin API with a reason for the dealer and an
internal note, under a token named ``ops-jane``. The reason (and only the reason) reaches the
dealer: the 554 reply to its CRM, its status page, the alert e-mail to its contact. The note
and the token's name reach the operators only: the API's history, the operators' copy of the
alert. Alerts are the gateway's mail: they never count as the dealer's relayed mail.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.cli import main as cli
from tests.feedback_reports import metric, scrape
from tests.integration.admin import add_token, call, call_public
from tests.integration.conftest import Harness, dot_stuff, message
from tests.sinks import Received

MakeHarness = Callable[..., Awaitable[Harness]]
DEALER = "example-motors"
REASON = "Your mail is paused while we check a list bought from a broker"
NOTE = "ticket 4411: their IT admin imported a purchased list; call Bob before resuming"
SECRET_WORDS = ("ticket 4411", "purchased list; call Bob", "ops-jane")


def parsed(received: Received) -> tuple[EmailMessage, str, str]:
    msg = message_from_bytes(received.data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    text, doc = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text is not None and doc is not None
    return msg, str(text.get_content()), str(doc.get_content())


async def send_one(h: Harness, rcpt: str) -> str:
    client = await h.client()
    try:
        reply = await client.cmd("MAIL FROM:<sales@example-motors.test>")
        if reply.code != 250:
            return f"{reply.code} {reply.text}"
        assert (await client.cmd(f"RCPT TO:<{rcpt}>")).code == 250
        reply = await client.data(dot_stuff(message(to=rcpt)))
        return f"{reply.code} {reply.text}"
    finally:
        await client.close()


async def test_the_reason_reaches_the_dealer_and_the_note_stays_with_operators(
    make_harness: MakeHarness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h = await make_harness(alerts={"operators": ["noc@mailgate.test"]})
    gw = h.gateway
    assert gw.status_links is not None
    for n in range(3):  # the dealer's own mail, relayed before the suspension
        assert (await send_one(h, f"c{n}@customers.example")).startswith("250 2.0.0")
    await h.wait_delivered(3)

    token = add_token(gw, name="ops-jane")
    answer = await call(gw, "POST", f"/api/dealers/{DEALER}/suspend", token=token,
                        body={"reason": REASON, "note": NOTE})  # fmt: skip
    assert answer.status == 200
    assert (answer.body["reason"], answer.body["note"], answer.body["by"]) == (
        REASON, NOTE, "ops-jane",
    )  # fmt: skip

    # The CRM: 554 with the reason, nothing internal.
    reply = await send_one(h, "late@customers.example")
    assert reply.startswith("554 5.7.1 Dealer example-motors is suspended: " + REASON), reply
    assert not any(word in reply for word in SECRET_WORDS)

    # The status page: the reason, who suspended in words, nothing internal.
    page = await call_public(gw, "GET", gw.status_links.path(DEALER))
    html = page.raw.decode()
    assert page.status == 200
    assert "Suspended by your Mailgate operator on " in html
    assert f"Reason given: {REASON}." in html
    assert not any(word in html for word in SECRET_WORDS)

    # The alert e-mails: one copy for the dealer's contact, another for the operators.
    await h.wait_delivered(5)
    alerts = {m.rcpt_tos[0]: m for m in h.sink.messages if b"X-Mailgate-Alert" in m.data}
    assert set(alerts) == {"gm@example-motors.test", "noc@mailgate.test"}
    dealer_msg, text, doc = parsed(alerts["gm@example-motors.test"])
    assert dealer_msg["To"] == "gm@example-motors.test"  # the operators' address is not shown
    assert dealer_msg["Reply-To"] == "noc@mailgate.test"
    assert "mailgate-alerts@" not in (dealer_msg["Reply-To"] or "")
    assert REASON in text and REASON in doc
    for body in (text, doc):
        assert not any(word in body for word in SECRET_WORDS), body
    assert "Your gateway operator suspended your mail for the reason given above." in text
    assert "Reply to this message (it reaches noc@mailgate.test)" in text
    assert "subjects below" not in text and "complaints (the subjects" not in text
    assert "Complaining recipients are suppressed" not in text  # there were none
    _, ops_text, ops_doc = parsed(alerts["noc@mailgate.test"])
    assert "By:      ops-jane" in ops_text and NOTE in ops_text and NOTE in ops_doc

    # The operators' API keeps the note in the history.
    shown = await call(gw, "GET", f"/api/dealers/{DEALER}", token=token)
    (latest,) = shown.body["history"]
    assert (latest["reason"], latest["note"], latest["by"]) == (REASON, NOTE, "ops-jane")

    # Alerts are the gateway's mail: the dealer's relayed total counts its 3 messages only.
    scraped = await asyncio.to_thread(scrape, gw.http_port)
    assert metric(scraped, "mailgate_messages_relayed_total", dealer=DEALER) == 3

    # The CLI resumes with a reason and a note; the note is in its JSON, not in the e-mail.
    config = tmp_path / "cli.toml"
    config.write_text(f'[server]\ndata_dir = "{gw.settings.server.data_dir}"\n')
    args = ["--config", str(config), "admin", "resume", DEALER, "--reason", "Thank you: the "
            "list is gone", "--note", "Bob confirmed by phone", "--json", "--api",
            f"http://127.0.0.1:{gw.http_port}"]  # fmt: skip
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MAILGATE_ADMIN_TOKEN", token)
        code = await asyncio.to_thread(cli.main, args)
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["note"] == "Bob confirmed by phone" and out["state"] == "resumed"
    await h.wait_delivered(7)
    resumed = [m for m in h.sink.messages[5:] if m.rcpt_tos == ["gm@example-motors.test"]]
    _, text, _ = parsed(resumed[0])
    assert "Thank you: the list is gone" in text and "Bob confirmed" not in text
    page = await call_public(gw, "GET", gw.status_links.path(DEALER))
    assert "Resumed by your Mailgate operator on " in page.raw.decode()
    assert "Bob confirmed" not in page.raw.decode()
    scraped = await asyncio.to_thread(scrape, gw.http_port)
    assert metric(scraped, "mailgate_messages_relayed_total", dealer=DEALER) == 3


async def test_without_a_reply_address_no_reply_is_invited(make_harness: MakeHarness) -> None:
    h = await make_harness()
    token = add_token(h.gateway)
    answer = await call(h.gateway, "POST", f"/api/dealers/{DEALER}/suspend", token=token,
                        body={"reason": REASON})  # fmt: skip
    assert answer.status == 200
    await h.wait_delivered(1)
    msg, text, _ = parsed(h.sink.messages[0])
    assert msg["Reply-To"] is None
    assert "Reply to this message" not in text
    assert "Contact your gateway operator to find out what they need from you" in text
