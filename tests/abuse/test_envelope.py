"""Envelope and line abuse (reliability A9, A15, C2)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.abuse.conftest import (
    SENDER,
    MakeHarness,
    Recorder,
    check_invariants,
    dot_stuff,
    message,
    send_one,
)


# Regression: a reply text that was not ASCII ("§") made aiosmtpd's push() raise inside
# smtp_DATA, so this permanent problem was answered 451 4.3.0 and the CRM retried forever.
async def test_a9_overlong_data_line_is_refused_permanently(make_harness: MakeHarness) -> None:
    h = await make_harness()
    rec = Recorder(h)
    client = await rec.connect()
    assert (await client.cmd(f"MAIL FROM:<{SENDER}>")).code == 250
    assert (await client.cmd("RCPT TO:<long@example.org>")).code == 250
    huge = "y" * 200_000 + "\r\n"  # over submission.max_line_length (100,000)
    reply = await client.data(dot_stuff(message(to="long@example.org", body=huge)), timeout=30)
    assert reply.code in (500, 552, 554), reply
    assert [m for m in await h.gateway.storage.list_messages() if not m.system] == []
    await check_invariants(h, rec)


async def test_a9_long_data_line_under_the_limit_is_folded_without_loss(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    rec = Recorder(h)
    client = await rec.connect()
    # A 3,000-octet line is under the limit: accepted, and relayed with no line over 998.
    ok = await send_one(
        client,
        to="folded@example.org",
        body=dot_stuff(message(to="folded@example.org", body="z" * 3000 + "\r\n")),
    )
    assert ok.code == 250, ok
    await h.wait_delivered(1)
    data = h.sink.messages[0].data
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    body = data.split(b"\r\n\r\n", 1)[1]
    assert body.count(b"z") == 3000, body[:200]  # nothing lost in the folding
    await check_invariants(h, rec)


@pytest.mark.parametrize(
    "command",
    [
        b"RCPT TO:<a@example.org>\rRCPT TO:<smuggled@example.org>",
        b"RCPT TO:<a@example.org>\nRCPT TO:<smuggled@example.org>",
        b"RCPT TO:<smuggled@example.org\x00>",
        b"RCPT TO:<a@example.org> NOTIFY=SUCCESS\r\x00RCPT TO:<smuggled@example.org>",
    ],
)
async def test_a15_cr_lf_nul_in_the_envelope_never_add_a_recipient(
    make_harness: MakeHarness, command: bytes
) -> None:
    h = await make_harness()
    rec = Recorder(h)
    client = await rec.connect()
    assert (await client.cmd(f"MAIL FROM:<{SENDER}>")).code == 250
    await client.send(command + b"\r\n")
    # Only CRLF ends a command (RFC 5321 §2.3.8): a bare LF does not split it in two, and a
    # line with a CR, LF or NUL inside is refused whole; the session goes on in order.
    refused = await client.read_reply()
    assert (refused.code, refused.enhanced) == (501, "5.5.2"), refused
    with contextlib.suppress(TimeoutError):
        extra = await client.read_reply(timeout=0.5)
        raise AssertionError(f"an unexpected extra reply: {extra} after {refused}")
    assert (await client.cmd("RCPT TO:<ok@example.org>")).code == 250
    await client.data(dot_stuff(message(to="ok@example.org")))
    await h.wait_delivered(1)
    await asyncio.sleep(0.5)
    rcpts = {r for m in h.sink.messages for r in m.rcpt_tos}
    assert rcpts == {"ok@example.org"}, rcpts
    assert not any("\x00" in r or "\r" in r for r in rcpts), rcpts
    await check_invariants(h, rec)


async def test_c2_unknown_user_and_wrong_password_answer_alike(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    rec = Recorder(h)
    answers = []
    for n, user in enumerate(("example-crm", "no-such-user", "rival-crm", "nobody-at-all")):
        client = await rec.connect(source=f"127.0.0.{20 + n}", login=False)
        await client.cmd("EHLO crm.test")
        await client.starttls()
        await client.cmd("EHLO crm.test")
        answers.append(await client.auth_plain(user, "wrong-password-here"))
        await client.close()
    assert len({str(a) for a in answers}) == 1, answers
    assert (answers[0].code, answers[0].enhanced) == (535, "5.7.8")
    await check_invariants(h, rec)
