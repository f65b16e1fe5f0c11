"""SMTP smuggling (reliability A1/A2) and open-relay forms (B1, B3-B6) against the real gateway."""

from __future__ import annotations

import re

import pytest

from tests.integration.conftest import Harness, message
from tests.smtpclient import RawSmtp

BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")

# The end-of-data sequences of SEC Consult's scanner, inbound and outbound (A1, A2).
SEQUENCES = [
    b"\n.\n", b"\n.\r", b"\r.\n", b"\r.\r", b"\n.\r\n", b"\r.\r\n",
    b"\r\n\x00.\r\n", b"\r\n.\r\r\n", b"\r\r\n.\r\r\n", b"\r\n.\n",
]  # fmt: skip


@pytest.mark.parametrize("seq", SEQUENCES, ids=[repr(s)[2:-1] for s in SEQUENCES])
async def test_smuggled_second_message_never_escapes(harness: Harness, seq: bytes) -> None:
    smuggled = (
        b"MAIL FROM:<smuggled@evil.test>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
        b"From: smuggled@evil.test\r\nTo: victim@example.org\r\nSubject: spoofed\r\n\r\n"
        b"SMUGGLED\r\n"
    )
    payload = message(body="hello") + seq + smuggled + b"\r\n.\r\n"
    client = await harness.client()
    assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
    assert (await client.cmd("RCPT TO:<customer@example.org>")).code == 250
    resp = await client.data(payload)
    # Exactly one reply for DATA: the next command is answered in order, not swallowed.
    noop = await client.cmd("NOOP")
    await client.close()
    assert resp.code == 250, resp
    assert noop.code == 250
    await harness.wait_delivered(1)
    assert len(harness.sink.messages) == 1
    got = harness.sink.messages[0]
    assert got.mail_from == "sales@example-motors.test"
    assert got.rcpt_tos == ["customer@example.org"]
    assert not BARE.search(got.data)
    rows = await harness.gateway.storage.list_messages()
    assert [r.mail_from for r in rows] == ["sales@example-motors.test"]


NMAP_FORMS = [
    ("<>", "<relaytest@victim.test>"),
    ("<antispam@victim.test>", "<relaytest@victim.test>"),
    ("<antispam@mailgate.test>", "<relaytest@victim.test>"),
    ("<antispam@[127.0.0.1]>", "<relaytest@victim.test>"),
    ("<antispam@mailgate.test>", "<relaytest%victim.test@[127.0.0.1]>"),
    ("<antispam@mailgate.test>", "<relaytest%victim.test@mailgate.test>"),
    ("<antispam@mailgate.test>", '<"relaytest@victim.test">'),
    ("<antispam@mailgate.test>", '<"relaytest%victim.test">'),
    ("<antispam@mailgate.test>", "<relaytest@victim.test@[127.0.0.1]>"),
    ("<antispam@mailgate.test>", '<"relaytest@victim.test"@[127.0.0.1]>'),
    ("<antispam@mailgate.test>", "<relaytest@victim.test@mailgate.test>"),
    ("<antispam@mailgate.test>", "<@[127.0.0.1]:relaytest@victim.test>"),
    ("<antispam@mailgate.test>", "<@mailgate.test:relaytest@victim.test>"),
    ("<antispam@mailgate.test>", "<victim.test!relaytest>"),
    ("<antispam@mailgate.test>", "<victim.test!relaytest@[127.0.0.1]>"),
    ("<antispam@mailgate.test>", "<victim.test!relaytest@mailgate.test>"),
]


@pytest.mark.parametrize("sender,rcpt", NMAP_FORMS)
async def test_open_relay_forms_without_auth_are_refused(
    harness: Harness, sender: str, rcpt: str
) -> None:
    client = await RawSmtp.connect("127.0.0.1", harness.port)
    await client.cmd("EHLO relay.test")
    await client.starttls()
    await client.cmd("EHLO relay.test")
    mail = await client.cmd(f"MAIL FROM:{sender}")
    rcpt_resp = await client.cmd(f"RCPT TO:{rcpt}")
    data = await client.cmd("DATA")
    await client.close()
    assert (mail.code, mail.enhanced) == (530, "5.7.0")
    assert rcpt_resp.code >= 500 and data.code >= 500
    assert harness.sink.messages == []


ROUTING_TRICKS = [
    "<relay%victim.test@example.org>",
    "<victim.test!relay@example.org>",
    '<"relay@victim.test"@example.org>',
    "<relay@victim.test@example.org>",
    "<@example.org:relay@victim.test>",  # aiosmtpd strips the route: judged as relay@victim.test
    '<"relay@victim.test">',
    "<u@[127.0.0.1]>",
    "<u@[10.0.0.1]>",
    "<u@[IPv6:::1]>",
    "<u@localhost>",
    '<"x\rRSET"@example.org>',  # a real CR inside the quoted local part (A15)
    '<"a\x00b"@example.org>',  # a real NUL
    "<" + "a" * 65 + "@example.org>",
    "<a@" + "b" * 64 + ".example.org>",
    "<a@b.>",
]


@pytest.mark.parametrize("rcpt", ROUTING_TRICKS)
async def test_authenticated_routing_tricks_are_refused_or_delivered_to_the_literal_address(
    harness: Harness, rcpt: str
) -> None:
    client = await harness.client()
    assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
    resp = await client.cmd(f"RCPT TO:{rcpt}")
    await client.close()
    if rcpt == "<@example.org:relay@victim.test>":
        # RFC 5321 §4.1.1.3: source routes are accepted and ignored; the mailbox after the
        # route is judged (and, here, accepted) like any other address.
        assert resp.code == 250
    else:
        assert resp.code in (501, 550, 553), resp
        assert resp.enhanced.startswith("5."), resp
    assert harness.sink.messages == []


async def test_null_sender_is_refused_by_default(harness: Harness) -> None:
    client = await harness.client()
    resp = await client.cmd("MAIL FROM:<>")
    await client.close()
    assert (resp.code, resp.enhanced) == (553, "5.7.1")


@pytest.mark.parametrize(
    "command",
    [b"RCPT TO:<a@b.example\rDATA>", b"RCPT TO:<a@b.example>\nRCPT TO:<c@d.example>"],
    ids=["cr-inside", "bare-lf-inside"],
)
async def test_cr_or_lf_inside_a_command_is_refused_whole(harness: Harness, command: bytes) -> None:
    client = await harness.client()
    assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
    refused = await client.cmd(command)
    # The session goes on in order: one reply for that line, then the next command's.
    assert (await client.cmd("RCPT TO:<customer@example.org>")).code == 250
    resp = await client.data(message() + b"\r\n.\r\n")
    await client.close()
    assert (refused.code, refused.enhanced) == (501, "5.5.2"), refused
    assert resp.code == 250, resp
    await harness.wait_delivered(1)
    assert [m.rcpt_tos for m in harness.sink.messages] == [["customer@example.org"]]
