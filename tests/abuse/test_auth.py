"""Authentication abuse and secrets (reliability C1, C5, C7, C10)."""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import re
import urllib.request

import pytest

from tests.abuse.conftest import (
    PASSWORD,
    SENDER,
    Harness,
    MakeHarness,
    Recorder,
    check_invariants,
    dot_stuff,
    message,
    send_one,
)


def scrape(h: Harness) -> str:
    url = f"http://127.0.0.1:{h.gateway.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body: bytes = resp.read()
    return body.decode()


def series(text: str) -> set[str]:
    return {line.split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


async def test_c1_auth_before_starttls_is_refused_without_checking(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    rec = Recorder(h)
    client = await rec.connect(login=False)
    ehlo = await client.cmd("EHLO crm.test")
    assert "AUTH" not in ehlo.text.upper().replace("AUTHENTICATED", ""), ehlo
    resp = await client.auth_plain("example-crm", PASSWORD)
    assert resp.code in (530, 538), resp
    assert (await client.cmd(f"MAIL FROM:<{SENDER}>")).code == 530
    await check_invariants(h, rec)


async def test_c5_malformed_auth(make_harness: MakeHarness) -> None:
    h = await make_harness()
    rec = Recorder(h)
    client = await rec.connect(login=False)
    await client.cmd("EHLO crm.test")
    await client.starttls()
    await client.cmd("EHLO crm.test")
    bad = await client.cmd("AUTH PLAIN !!!not-base64***")
    assert bad.code == 501, bad
    long_line = await client.cmd("AUTH PLAIN " + "QUFB" * 3000)  # a 12 KB AUTH line
    assert 500 <= long_line.code < 600, long_line
    # The authzid names the rival dealer's user; the identity stays the authcid's dealer.
    token = base64.b64encode(f"rival-crm\0example-crm\0{PASSWORD}".encode()).decode()
    ok = await client.cmd(f"AUTH PLAIN {token}")
    assert ok.code == 235, ok
    again = await client.auth_plain("rival-crm", PASSWORD)
    assert (again.code, again.enhanced) == (503, "5.5.1"), again
    rival = await client.cmd("MAIL FROM:<sales@rival-motors.test>")
    assert rival.code == 553, rival
    await client.cmd("RSET")
    assert (await send_one(client, to="authz@example.org")).code == 250
    await h.wait_delivered(1)
    assert h.sink.messages[0].mail_from == SENDER
    rows = await h.gateway.storage.list_messages()
    assert {m.dealer_id for m in rows if not m.system} == {"example-motors"}
    await check_invariants(h, rec)


async def test_c7_secrets_never_in_logs_or_metrics(
    make_harness: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    h = await make_harness()
    rec = Recorder(h)
    wrong = "Tr0ub4dor&3-wrong-guess"
    client = await rec.connect(login=False)
    await client.cmd("EHLO crm.test")
    await client.starttls()
    await client.cmd("EHLO crm.test")
    assert (await client.auth_plain("example-crm", wrong)).code == 535
    assert (await client.auth_plain("example-crm", PASSWORD)).code == 235
    assert (await send_one(client, to="secret@example.org")).code == 250
    await h.wait_delivered(1)
    # AUTH LOGIN too: the password travels as its own base64 line.
    other = await rec.connect(login=False)
    await other.cmd("EHLO crm.test")
    await other.starttls()
    await other.cmd("EHLO crm.test")
    login = await other.cmd("AUTH LOGIN")
    if login.code == 334:
        await other.cmd(base64.b64encode(b"example-crm").decode())
        assert (await other.cmd(base64.b64encode(PASSWORD.encode()).decode())).code == 235
    metrics = await asyncio.to_thread(scrape, h)
    secrets = {
        PASSWORD,
        wrong,
        base64.b64encode(f"\0example-crm\0{PASSWORD}".encode()).decode(),
        base64.b64encode(f"\0example-crm\0{wrong}".encode()).decode(),
        base64.b64encode(PASSWORD.encode()).decode(),
    }
    logs = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert logs, "no log captured"
    for secret in secrets:
        assert secret not in logs, f"secret {secret!r} in the log"
        assert secret not in metrics, f"secret {secret!r} in /metrics"
    await check_invariants(h, rec)


async def test_c10_metrics_series_stay_bounded_with_many_recipient_domains(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    rec = Recorder(h)
    client = await rec.connect()
    assert (await send_one(client, to="warmup@example.org")).code == 250
    await h.wait_delivered(1)
    before = series(await asyncio.to_thread(scrape, h))
    rng = random.Random(7)
    domains = [f"d{rng.getrandbits(40):x}.example" for _ in range(1000)]
    for start in range(0, 1000, 100):
        assert (await client.cmd(f"MAIL FROM:<{SENDER}>")).code == 250
        for domain in domains[start : start + 100]:
            await client.cmd(f"RCPT TO:<user@{domain}>")
        if start == 0:
            await client.cmd("DATA")
            await client.send(dot_stuff(message()))
            await client.read_reply(timeout=30)
        else:
            await client.cmd("RSET")
    await asyncio.sleep(2)
    text = await asyncio.to_thread(scrape, h)
    after = series(text)
    assert not any(d in text for d in domains), "a recipient domain became a label"
    assert "user@" not in text
    assert len(after - before) < 60, sorted(after - before)[:80]
    assert not re.search(r"customer@|warmup@", text)
    await check_invariants(h, rec)
