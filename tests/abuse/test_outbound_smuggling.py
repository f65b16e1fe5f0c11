"""Outbound SMTP smuggling (reliability A2): the gateway as the "outbound server".

A1 proves the submission listener never splits a message. A2 looks at the other side:
the gateway relays what it accepted, and if a stray end-of-data sequence survived into
the relayed bytes, a lenient next hop would end DATA there and run the rest as a second,
sender-chosen transaction (SEC Consult, Dec 2023; CVE-2023-51764). The upstream here is
``LenientSink``, which ends DATA at any ``<EOL>.<EOL>`` variant and ignores NULs, so
such a leak appears as a second message or a ``smuggled@`` envelope at the sink.

With the default ``bare_line_endings = "normalize"`` the relayed bytes must hold only
CRLF line ends (RFC 5321 §2.3.8), be dot-stuffed (RFC 5321 §4.5.2), and arrive as
exactly one message per submission (the Postfix ``cleanup_replace_stray_cr_lf`` model).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import pytest

from tests.abuse.conftest import (
    SENDER,
    Harness,
    MakeHarness,
    Recorder,
    check_invariants,
    dot_stuff,
    message,
    send_one,
)
from tests.abuse.lenient_sink import LenientSink, Transaction
from tests.integration.test_smuggling_and_relay import BARE, SEQUENCES
from tests.smtpclient import RawSmtp

SMUGGLED = (
    b"MAIL FROM:<smuggled@evil.test>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
    b"From: smuggled@evil.test\r\nTo: victim@example.org\r\nSubject: spoofed\r\n\r\n"
    b"SMUGGLED\r\n"
)
# A line that a lenient receiver would take as the end of DATA: only "." and NULs.
LONE_DOT = re.compile(rb"(?:^|\r\n)\x00*\.\x00*(?:\r\n|$)")


@pytest.fixture
async def lenient() -> AsyncIterator[LenientSink]:
    server = await LenientSink().start()
    yield server
    await server.stop()


async def lenient_harness(make_harness: MakeHarness, sink: LenientSink) -> Harness:
    h = await make_harness(upstream={"port": sink.port})
    # The default policy, stated: stray CR/LF is normalised, not refused.
    assert h.gateway.settings.submission.bare_line_endings == "normalize"
    return Harness(h.gateway, sink)


def assert_clean_on_the_wire(txn: Transaction) -> None:
    """What the next hop read: CRLF only, no lone-dot line, every leading "." doubled."""
    assert txn.terminator == b"\r\n.\r\n", txn.terminator
    assert not BARE.search(txn.wire), txn.wire[:300]
    assert not LONE_DOT.search(txn.wire), txn.wire[:300]
    # RFC 5321 §4.5.2: the sender doubles every leading ".", so no line of the wire starts
    # with exactly one (after any NULs a receiver might skip).
    for line in txn.wire.split(b"\r\n"):
        bare = line.lstrip(b"\x00")
        assert not bare.startswith(b".") or bare.startswith(b".."), line


async def straight_to(sink: LenientSink, payload: bytes) -> list[Transaction]:
    """Send ``payload`` as DATA directly to the sink, as an unfiltering relay would."""
    client = await RawSmtp.connect("127.0.0.1", sink.port)
    await client.cmd("EHLO relay.test")
    await client.cmd(f"MAIL FROM:<{SENDER}>")
    await client.cmd("RCPT TO:<customer@example.org>")
    assert (await client.cmd("DATA")).code == 354
    # The sink works through its input in order, so once QUIT is answered every
    # transaction hidden in the payload has been recorded.
    await client.send(payload + b"QUIT\r\n")
    with contextlib.suppress(ConnectionError):
        while (await client.read_reply(timeout=5)).code != 221:
            pass
    await client.close()
    seen = list(sink.transactions)
    sink.clear()
    return seen


def body_of(content: bytes) -> bytes:
    return content.split(b"\r\n\r\n", 1)[1]


# Regression for b"\r\n\x00.\r\n": the gateway used to relay that line unchanged (it has
# no bare CR/LF and does not start with "."), so a next hop that ignores NUL ended DATA
# there and ran "MAIL FROM:<smuggled@evil.test>" as a second transaction. Intake now
# turns a line of NULs around a lone "." into "." before signing (rewrite.py).
@pytest.mark.parametrize("seq", SEQUENCES, ids=[repr(s)[2:-1] for s in SEQUENCES])
async def test_a2_smuggling_sequence_reaches_the_upstream_as_one_clean_message(
    make_harness: MakeHarness, lenient: LenientSink, seq: bytes
) -> None:
    payload = message(to="customer@example.org", body="hello") + seq + SMUGGLED + b"\r\n.\r\n"
    # The detector works: these bytes, relayed unfiltered, do split into two transactions
    # at this upstream, the second one from smuggled@.
    unfiltered = await straight_to(lenient, payload)
    assert [t.mail_from for t in unfiltered] == [SENDER, "smuggled@evil.test"], unfiltered

    h = await lenient_harness(make_harness, lenient)
    rec = Recorder(h)
    client = await rec.connect()
    reply = await send_one(client, to="customer@example.org", body=payload)
    assert reply.code == 250, reply
    await h.wait_delivered(1)

    (txn,) = lenient.transactions
    assert (txn.mail_from, txn.rcpt_tos) == (SENDER, ["customer@example.org"])
    assert lenient.mail_froms == [SENDER]  # no second MAIL was ever read as a command
    assert_clean_on_the_wire(txn)
    # The would-be second transaction is still there, inert, as body text of the one
    # message: normalised to CRLF lines, not dropped and not executed.
    body = body_of(txn.content)
    assert b"\r\nMAIL FROM:<smuggled@evil.test>\r\nRCPT TO:<victim@example.org>\r\n" in body
    assert body.startswith(b"hello")
    assert b"SMUGGLED" in body
    rows = await h.gateway.storage.list_messages()
    assert [(r.mail_from, r.rcpt) for r in rows] == [(SENDER, "customer@example.org")]

    await check_invariants(h, rec)
    # The canary went through the same lenient upstream: one transaction each, no more.
    assert len(lenient.transactions) == 2
    assert "smuggled@evil.test" not in lenient.mail_froms
    assert not any("victim@example.org" in t.rcpt_tos for t in lenient.transactions)


DOT_LINES = (
    "Price list\r\n"
    ".\r\n"  # a line that is only "."
    ".hidden line\r\n"
    "..two dots\r\n"
    ". dot and space\r\n"
    ".\r\n"
    "end\r\n"
)


async def test_a2_dot_lines_are_stuffed_toward_the_upstream(
    make_harness: MakeHarness, lenient: LenientSink
) -> None:
    h = await lenient_harness(make_harness, lenient)
    rec = Recorder(h)
    client = await rec.connect()
    submitted = message(to="dots@example.org", body=DOT_LINES)
    reply = await send_one(client, to="dots@example.org", body=dot_stuff(submitted))
    assert reply.code == 250, reply
    await h.wait_delivered(1)

    (txn,) = lenient.transactions
    assert_clean_on_the_wire(txn)
    wire_body = body_of(txn.wire)
    # One "." added in front of each line that starts with one, and nothing else changed.
    stuffed = b"Price list\r\n..\r\n..hidden line\r\n...two dots\r\n.. dot and space\r\n..\r\nend"
    assert wire_body.startswith(stuffed), wire_body
    # Undoing the stuffing gives back exactly the lines the dealer sent.
    assert body_of(txn.content).startswith(DOT_LINES.encode()), txn.content

    # The same lines behind bare LFs, dot-stuffed as the clients that send bare LF do it
    # (Python's smtplib quotes every "^." of the text): unstuffed on LF like a line end,
    # normalised, then stuffed again, never an early end.
    bare = re.sub(rb"(?m)^\.", b"..", DOT_LINES.replace("\r\n", "\n").encode())
    payload = message(to="dots2@example.org", body="intro\r\n") + bare + b"\r\n.\r\n"
    reply = await send_one(client, to="dots2@example.org", body=payload)
    assert reply.code == 250, reply
    await h.wait_delivered(2)
    second = lenient.transactions[1]
    assert second.rcpt_tos == ["dots2@example.org"]
    assert_clean_on_the_wire(second)
    assert body_of(second.content).startswith(b"intro\r\n" + DOT_LINES.encode())
    assert lenient.mail_froms == [SENDER, SENDER]

    await check_invariants(h, rec)
    assert len(lenient.transactions) == 3  # two submissions and the canary
