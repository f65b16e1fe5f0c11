"""8-bit CRM mail end to end: declared, made 7-bit before signing, and DKIM still verifies.

The CRM submits over a real session; the gateway relays to a real aiosmtpd sink that does
or does not advertise 8BITMIME (RFC 6152) and SMTPUTF8 (RFC 6531). At the sink the text
must read as the dealer wrote it and the DKIM signature must verify (dkimpy, with the
test key's public record).
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import dkim
import pytest

from gateway.app import Gateway
from gateway.delivery.client import SmtpUpstream
from gateway.dkim.keys import generate_key, public_record, write_private_key
from gateway.settings import DeliverySettings, Settings, UpstreamSettings
from gateway.types import MessageId, MessageState, OutcomeKind
from tests.integration.conftest import Harness, add_credentials, dot_stuff, make_settings
from tests.sinks import Sink, SinkHandler

KEY = generate_key("rsa")
RECORD = public_record(KEY).encode()
TEXT = "Bonjour Zoë, votre révision est prête : 189 € TTC. À bientôt !"


def dns(name: bytes, timeout: int = 5) -> bytes | None:
    return RECORD if name == b"mg1._domainkey.example-motors.test." else None


def verifies(data: bytes) -> bool:
    return bool(dkim.verify(data, dnsfunc=dns))


def settings_with_key(tmp_path: Path, sink_port: int, **sections: dict[str, Any]) -> Settings:
    settings = make_settings(tmp_path, sink_port, **sections)
    policies = settings.server.policies_dir
    write_private_key(policies / "keys" / "mg1.pem", KEY)
    dealer = policies / "dealers" / "example-motors.toml"
    entry = '[[dkim]]\ndomain = "example-motors.test"\nselector = "mg1"\nkey_file = "keys/mg1.pem"'
    dealer.write_text(dealer.read_text() + "\n" + entry + "\n")
    return settings


MakeGate = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_gate(tmp_path: Path) -> AsyncIterator[MakeGate]:
    """A gateway relaying to a sink made with ``Sink(**kind)``."""
    running: list[tuple[Gateway, Sink]] = []

    async def make(*, without: set[str] | None = None, smtputf8: bool = False) -> Harness:
        sink = await Sink(SinkHandler(ehlo_without=without or set()), smtputf8=smtputf8).start()
        gateway = await Gateway.build(settings_with_key(tmp_path, sink.port))
        await add_credentials(gateway)
        await gateway.start()
        running.append((gateway, sink))
        return Harness(gateway, sink)

    yield make
    for gateway, sink in running:
        await gateway.stop()
        await sink.stop()


async def submit(h: Harness, data: bytes) -> str:
    client = await h.client()
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test> BODY=8BITMIME")).code == 250
        assert (await client.cmd("RCPT TO:<customer@example.org>")).code == 250
        return str(await client.data(dot_stuff(data)))
    finally:
        await client.close()


def no_mime(
    body: bytes, subject: bytes = b"Votre rendez-vous", name: bytes = b"Example Motors"
) -> bytes:
    """What an old CRM or an Excel mail merge sends: 8-bit text and no MIME headers at all."""
    return (
        b"From: " + name + b" <sales@example-motors.test>\r\nTo: <customer@example.org>\r\n"
        b"Subject: " + subject + b"\r\nDate: Mon, 05 Jan 2026 09:00:00 +0000\r\n"
        b"Message-ID: <rdv-1@crm.example-motors.test>\r\n\r\n" + body + b"\r\n"
    )


@pytest.mark.parametrize("hop", ["8bitmime", "7bit-only"])
@pytest.mark.parametrize("charset", ["utf-8", "windows-1252"])
async def test_undeclared_8bit_text_arrives_declared_readable_and_signed(
    make_gate: MakeGate, hop: str, charset: str
) -> None:
    h = await make_gate(without={"8BITMIME"} if hop == "7bit-only" else None)
    reply = await submit(h, no_mime(TEXT.encode(charset)))
    assert reply.startswith("250 2.0.0 queued as "), reply
    await h.wait_delivered(1)
    got = h.sink.messages[0].data
    # 7-bit on the wire (nothing for a hop to convert), the charset declared, the text
    # exactly what the dealer wrote, and the signature made over these very bytes.
    assert got.isascii()
    parsed = email.message_from_bytes(got, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content_charset() == charset
    # Quoted-printable or base64, whichever is shorter for this text (RFC 2045 §6.7, §6.8).
    assert parsed["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert parsed.get_content().rstrip("\r\n") == TEXT
    assert verifies(got)
    assert h.sink.handler.mail_options == [[]]  # a 7-bit message declares nothing


async def test_8bit_multipart_is_reencoded_before_signing(make_gate: MakeGate) -> None:
    h = await make_gate(without={"8BITMIME"})
    html = f"<p>{TEXT}</p>"
    data = (
        "From: Example Motors <sales@example-motors.test>\r\nTo: <customer@example.org>\r\n"
        "Subject: Offre\r\nDate: Mon, 05 Jan 2026 09:00:00 +0000\r\n"
        "Message-ID: <offre-1@crm.example-motors.test>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="b1"\r\nContent-Transfer-Encoding: 8bit\r\n'
        "\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit"
        f"\r\n\r\n{TEXT}\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: 8bit\r\n\r\n{html}\r\n--b1--\r\n"
    ).encode()
    assert (await submit(h, data)).startswith("250 ")
    await h.wait_delivered(1)
    got = h.sink.messages[0].data
    assert got.isascii() and verifies(got)
    parsed = email.message_from_bytes(got, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    assert parsed["Content-Transfer-Encoding"] == "7bit"
    plain, rich = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain is not None and plain.get_content().rstrip("\r\n") == TEXT
    assert rich is not None and rich.get_content().rstrip("\r\n") == html


@pytest.mark.parametrize("charset", ["utf-8", "windows-1252"])
async def test_8bit_subject_becomes_encoded_words_for_any_hop(
    make_gate: MakeGate, charset: str
) -> None:
    h = await make_gate()  # no SMTPUTF8 at the next hop
    subject = "Rendez-vous confirmé pour Zoë — merci"
    assert (await submit(h, no_mime(b"Hello", subject=subject.encode(charset)))).startswith("250 ")
    await h.wait_delivered(1)
    got = h.sink.messages[0].data
    assert got.isascii() and b"Subject: =?utf-8?" in got  # RFC 2047, 7-bit
    assert email.message_from_bytes(got, policy=email.policy.default)["Subject"] == subject
    assert h.sink.handler.mail_options == [[]]
    assert verifies(got)


NAME = "Zoë Müller, Example Motors".encode()  # a UTF-8 display name (RFC 6532)


async def test_utf8_address_header_negotiates_smtputf8(make_gate: MakeGate) -> None:
    h = await make_gate(smtputf8=True)
    assert (await submit(h, no_mime(b"Hello", name=b'"' + NAME + b'"'))).startswith("250 ")
    await h.wait_delivered(1)
    got = h.sink.messages[0].data
    assert b'\r\nFrom: "' + NAME + b'" <sales@example-motors.test>\r\n' in got  # as written
    assert h.sink.handler.mail_options == [["SMTPUTF8", "BODY=8BITMIME"]]
    assert verifies(got)


async def test_utf8_address_header_to_a_hop_without_smtputf8_fails_with_a_dsn(
    make_gate: MakeGate,
) -> None:
    h = await make_gate()  # aiosmtpd's default: 8BITMIME, no SMTPUTF8
    reply = await submit(h, no_mime(b"Hello", name=b'"' + NAME + b'"'))
    assert reply.startswith("250 2.0.0 queued as "), reply
    await h.wait_delivered(1)  # the DSN; the message itself is never handed over
    (dsn,) = h.sink.messages
    assert dsn.rcpt_tos == ["sales@example-motors.test"] and dsn.mail_from == "<>"
    text = dsn.data.decode()
    assert "Status: 5.6.9" in text and "SMTPUTF8" in text
    assert "Final-Recipient: rfc822; customer@example.org" in text
    (row,) = [m for m in await h.gateway.storage.list_messages() if not m.system]
    assert row.state is MessageState.FAILED
    assert await h.gateway.storage.get(MessageId(f"{row.id}.dsn")) is not None


@pytest.mark.parametrize("hop", ["8bitmime", "7bit-only"])
async def test_client_declares_8bit_or_fails_without_converting(hop: str) -> None:
    # A copy with an 8-bit body (queued before intake made bodies 7-bit, or a part header
    # intake cannot re-encode), handed straight to the delivery client.
    sink = await Sink(
        SinkHandler(ehlo_without={"8BITMIME"} if hop == "7bit-only" else set())
    ).start()
    upstream = SmtpUpstream(
        UpstreamSettings(host="127.0.0.1", port=sink.port, tls="none"),
        DeliverySettings(command_timeout=timedelta(seconds=5)),
        "mailgate.test",
    )
    data = no_mime("Zoë".encode())
    try:
        outcome = await upstream.send("sales@example-motors.test", "customer@example.org", data)
    finally:
        await upstream.close()
        await sink.stop()
    if hop == "8bitmime":
        assert outcome.kind is OutcomeKind.DELIVERED, outcome
        assert sink.handler.mail_options == [["BODY=8BITMIME"]]
        assert sink.messages[0].data == data
    else:
        assert (outcome.kind, outcome.code, outcome.enhanced) == (OutcomeKind.FAILED, 554, "5.6.3")
        assert "8BITMIME" in outcome.text and "DKIM" in outcome.text
        assert sink.handler.mail_commands == 0  # nothing mislabelled was ever sent
