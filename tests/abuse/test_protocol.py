"""Protocol abuse on the submission listener (reliability A4, A6, A8, A12-A14, A16-A18, C8)."""

from __future__ import annotations

import asyncio

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
from tests.smtpclient import insecure_context


async def test_a4_starttls_injection_is_not_answered_after_the_handshake(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    rec = Recorder(h)
    client = await rec.connect(login=False)
    assert (await client.cmd("EHLO crm.test")).code == 250
    await client.send(b"STARTTLS\r\nEHLO injected\r\n")  # one write: command + injection
    ready = await client.read_reply()
    assert ready.code == 220, ready
    pending = getattr(client.reader, "_buffer", b"")
    assert not pending, "plaintext reply to the injected command"
    await client.writer.start_tls(insecure_context())
    with pytest.raises(TimeoutError):  # the injected EHLO was dropped, not answered
        await client.read_reply(timeout=1.5)
    # The session is a clean TLS one: EHLO is needed again and works.
    assert (await client.cmd("EHLO crm.test")).code == 250
    await check_invariants(h, rec)


async def test_a6_transaction_stuffing_replies_in_order_without_extra_message(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    rec = Recorder(h)
    client = await rec.connect()
    body = dot_stuff(message(to="one@example.org"))
    stuffed = (
        f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<one@example.org>\r\nDATA\r\n".encode()
        + body
        + b"RSET\r\nNOOP\r\n"
    )
    await client.send(stuffed)
    codes = [(await client.read_reply()).code for _ in range(6)]
    # Either every reply in order (MAIL, RCPT, DATA, end of data, RSET, NOOP) or a strict
    # 554 5.5.0 refusal; never a desync.
    assert codes == [250, 250, 354, 250, 250, 250] or 554 in codes, codes
    # Nothing left over: the next command gets exactly its own reply.
    assert (await client.cmd("NOOP")).code == 250
    await client.close()
    await h.wait_delivered(1)
    await asyncio.sleep(0.5)
    assert [m.rcpt_tos for m in h.sink.messages] == [["one@example.org"]]
    await check_invariants(h, rec)


@pytest.mark.parametrize("size", [10 * 1024, 1024 * 1024])
async def test_a8_overlong_command_line_is_refused(make_harness: MakeHarness, size: int) -> None:
    h = await make_harness()
    rec = Recorder(h)
    client = await rec.connect(login=False)
    await client.cmd("EHLO crm.test")
    line = b"MAIL FROM:<" + b"a" * size
    if size < 100_000:
        resp = await client.cmd(line)
    else:  # 1 MB with no LF at all
        try:
            await client.send(line)
            resp = await client.read_reply(timeout=10)
        except (ConnectionError, OSError):
            resp = None
    if resp is not None:
        assert resp.code == 500, resp
    await check_invariants(h, rec)


async def test_a12_garbage_and_http_verbs_get_5xx_then_disconnect(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(submission={"idle_timeout": "1s"})
    rec = Recorder(h)
    # Before STARTTLS every unknown verb is answered 530 (junk bytes 500, a NUL 501); five refusals
    # close the session with 421 4.7.0 (aiosmtpd's own limit only applies after STARTTLS).
    plain = await rec.connect(login=False)
    verbs = [b"GET / HTTP/1.1", b"POST /x HTTP/1.1", b"CONNECT a:25 HTTP/1.1", b"\x00\xff\xfe"]
    for junk in [*verbs, b"XYZZY"]:
        resp = await plain.cmd(junk, timeout=5)
        # junk bytes: 500 (a NUL in the line: 501 5.5.2); the verbs: 530
        assert resp.code in (500, 501, 530), resp
    goodbye = await plain.read_reply(timeout=5)
    assert (goodbye.code, goodbye.enhanced) == (421, "4.7.0"), goodbye
    with pytest.raises((ConnectionError, OSError)):
        await plain.read_reply(timeout=5)
    # After STARTTLS, unknown verbs count: 500s, then 502 5.5.1 and the connection closes.
    tls = await rec.connect(login=False)
    await tls.cmd("EHLO crm.test")
    await tls.starttls()
    await tls.cmd("EHLO crm.test")
    codes = []
    closed = False
    for junk in verbs + [f"XYZZY{n}".encode() for n in range(20)]:
        try:
            resp = await tls.cmd(junk, timeout=5)
        except (ConnectionError, OSError):
            closed = True
            break
        codes.append(resp.code)
        assert 500 <= resp.code < 600, resp
    assert closed or codes[-1] == 502, codes
    assert len(codes) <= 6, codes
    await check_invariants(h, rec)


async def test_a13_noop_flood_is_cut_with_421(make_harness: MakeHarness) -> None:
    h = await make_harness()
    rec = Recorder(h)
    client = await rec.connect(login=False)
    await client.cmd("EHLO crm.test")
    await client.send(b"NOOP\r\n" * 150)
    codes = []
    last = None
    for _ in range(150):
        try:
            last = await client.read_reply(timeout=5)
        except (ConnectionError, OSError):
            break
        codes.append(last.code)
        if last.code == 421:
            break
    assert codes.count(250) == 100, codes
    assert last is not None and (last.code, last.enhanced) == (421, "4.7.0"), last
    await check_invariants(h, rec)


async def test_a14_sequencing_errors_and_no_state_leak(make_harness: MakeHarness) -> None:
    h = await make_harness()
    rec = Recorder(h)
    client = await rec.connect()
    assert (await client.cmd("DATA")).code == 503
    assert (await client.cmd("RCPT TO:<leak@example.org>")).code == 503
    assert (await client.cmd(f"MAIL FROM:<{SENDER}>")).code == 250
    assert (await client.cmd("DATA")).code == 503  # no RCPT yet
    assert (await client.cmd(f"MAIL FROM:<{SENDER}>")).code == 503  # nested
    assert (await client.cmd("RCPT TO:<leak@example.org>")).code == 250
    assert (await client.cmd("RSET")).code == 250
    assert (await client.cmd("DATA")).code == 503  # RSET cleared the transaction
    reply = await send_one(client, to="clean@example.org")
    assert reply.code == 250, reply
    await h.wait_delivered(1)
    await asyncio.sleep(0.5)
    assert [m.rcpt_tos for m in h.sink.messages] == [["clean@example.org"]]
    await check_invariants(h, rec)


async def test_a16_early_talker_does_not_desync(make_harness: MakeHarness) -> None:
    h = await make_harness()
    rec = Recorder(h)
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    writer.write(b"EHLO early.test\r\n")  # before the banner was read
    await writer.drain()
    banner = await reader.readline()
    assert banner.startswith((b"220", b"554")), banner
    if banner.startswith(b"220"):
        first = await asyncio.wait_for(reader.readline(), 5)
        assert first.startswith(b"250"), first  # the EHLO's own reply, in order
        while first[3:4] == b"-":
            first = await asyncio.wait_for(reader.readline(), 5)
        writer.write(b"NOOP\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"250")
    writer.close()
    await check_invariants(h, rec)


async def test_a17_transaction_flood_is_cut_at_the_per_connection_cap(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(submission={"max_messages_per_connection": 3})
    rec = Recorder(h)
    client = await rec.connect()
    results = [await send_one(client, to=f"r{n}@example.org") for n in range(3)]
    assert [r.code for r in results] == [250, 250, 250], results
    refused = await client.cmd(f"MAIL FROM:<{SENDER}>")
    assert (refused.code, refused.enhanced) == (421, "4.7.0"), refused
    with pytest.raises((ConnectionError, OSError, TimeoutError)):
        for _ in range(3):
            await client.cmd("NOOP", timeout=3)
    await h.wait_delivered(3)
    await check_invariants(h, rec)


@pytest.mark.parametrize(
    ("address", "codes"),
    [
        ("a" * 65 + "@example.org", {501, 553}),
        ("x@" + ("d" * 60 + ".") * 4 + "example.org", {501, 553}),  # domain > 255
        ("a@b.", {501, 553, 550}),
        ("a@[127.0.0.1]", {550, 553, 501}),
        ("a" * 64 + "@" + ("d" * 62 + ".") * 3 + "org", {250, 501, 553}),  # at the limits
    ],
)
async def test_a18_address_length_edges_give_defined_replies(
    make_harness: MakeHarness, address: str, codes: set[int]
) -> None:
    h = await make_harness()
    rec = Recorder(h)
    client = await rec.connect()
    assert (await client.cmd(f"MAIL FROM:<{SENDER}>")).code == 250
    resp = await client.cmd(f"RCPT TO:<{address}>")
    assert resp.code in codes, (address, resp)
    # A path over 256 octets in MAIL is refused too.
    await client.cmd("RSET")
    long_sender = "s" * 60 + "@" + ("example-motors." * 14) + "test"
    assert (await client.cmd(f"MAIL FROM:<{long_sender}>")).code in {501, 553}
    await check_invariants(h, rec)


async def test_c8_starttls_resets_the_session(make_harness: MakeHarness) -> None:
    h = await make_harness()
    rec = Recorder(h)
    client = await rec.connect(login=False)
    assert (await client.cmd("EHLO crm.test")).code == 250
    assert (await client.starttls()).code == 220
    # EHLO again is required: nothing from before the handshake is carried over.
    assert (await client.cmd(f"MAIL FROM:<{SENDER}>")).code == 503
    assert (await client.cmd("EHLO crm.test")).code == 250
    mail = await client.cmd(f"MAIL FROM:<{SENDER}>")
    assert mail.code == 530, mail  # not authenticated
    await check_invariants(h, rec)
