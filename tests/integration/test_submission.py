"""CRM client -> gateway -> sink over real loopback SMTP: what is accepted arrives intact."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import smtplib
from email.message import EmailMessage

import pytest

from tests.integration.conftest import PASSWORD, Harness, dot_stuff, message
from tests.smtpclient import RawSmtp, insecure_context

BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def header_and_body(data: bytes) -> tuple[bytes, bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


async def submit(h: Harness, data: bytes, rcpts: tuple[str, ...] = ("customer@example.org",),
                 sender: str = "sales@example-motors.test") -> str:  # fmt: skip
    client = await h.client()
    try:
        assert (await client.cmd(f"MAIL FROM:<{sender}>")).code == 250
        for rcpt in rcpts:
            assert (await client.cmd(f"RCPT TO:<{rcpt}>")).code == 250
        resp = await client.data(dot_stuff(data))
        return str(resp)
    finally:
        await client.close()


PLAIN = message()
EIGHT_BIT = message(body="Bonjour Zoë, votre essai routier est prêt. Ça roule ?\r\n")
MULTIPART = (
    b"From: sales@example-motors.test\r\nTo: customer@example.org\r\nSubject: Offer\r\n"
    b"Date: Mon, 05 Jan 2026 09:00:00 +0000\r\nMessage-ID: <m2@example-motors.test>\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello\r\n"
    b"--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hello</p>\r\n"
    b".leading dot line\r\n--b1--\r\n"
)


@pytest.mark.parametrize("data", [PLAIN, MULTIPART], ids=["plain", "multipart"])
async def test_accepted_message_arrives_byte_identical(harness: Harness, data: bytes) -> None:
    reply = await submit(harness, data)
    assert reply.startswith("250 2.0.0 queued as "), reply
    await harness.wait_delivered(1)
    got = harness.sink.messages[0]
    assert got.mail_from == "sales@example-motors.test"
    assert got.rcpt_tos == ["customer@example.org"]
    # Our trace and tracking headers go on top; the submitted message follows unchanged.
    assert got.data.endswith(data)
    head, _ = header_and_body(got.data)
    assert head.startswith(b"X-Mailgate-Ref: v1.") or b"\r\nX-Mailgate-Ref: v1." in head
    assert b"Received: from crm.test" in head


async def test_8bit_body_arrives_7bit_with_the_same_text(harness: Harness) -> None:
    # Made 7-bit before signing (any hop can take it unconverted); the text is unchanged.
    reply = await submit(harness, EIGHT_BIT)
    assert reply.startswith("250 2.0.0 queued as "), reply
    await harness.wait_delivered(1)
    got = harness.sink.messages[0].data
    assert got.isascii()
    head, body = header_and_body(EIGHT_BIT)
    got_head = header_and_body(got)[0].split(b"\r\n")
    assert all(field in got_head for field in head.split(b"\r\n"))  # every field as sent
    assert b"Content-Transfer-Encoding: quoted-printable" in got_head
    parsed = email.message_from_bytes(got, policy=email.policy.default)
    assert parsed.get_content() == body.decode()


async def test_lf_only_message_is_normalised_to_crlf(harness: Harness) -> None:
    lf_only = PLAIN.replace(b"\r\n", b"\n")
    client = await harness.client()
    assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
    assert (await client.cmd("RCPT TO:<customer@example.org>")).code == 250
    # Sent raw: the lines end in bare LF, only the final terminator is CRLF.CRLF.
    resp = await client.data(lf_only + b"\r\n.\r\n")
    await client.close()
    assert resp.code == 250, resp
    await harness.wait_delivered(1)
    data = harness.sink.messages[0].data
    assert not BARE.search(data)
    assert data.endswith(PLAIN + b"\r\n")


def smtplib_send(port: int, data: bytes, to: str = "customer@example.org") -> tuple[int, bytes]:
    """Submit ``data`` exactly as a Python CRM does: smtplib, STARTTLS, AUTH, sendmail(bytes).

    ``sendmail`` sends bytes as given (bare LF included) and dot-stuffs every "^." line;
    returns the reply to the end of data.
    """
    with smtplib.SMTP("127.0.0.1", port, local_hostname="crm.test", timeout=30) as client:
        client.starttls(context=insecure_context())
        client.login("example-crm", PASSWORD)
        replies: list[tuple[int, bytes]] = []
        original = client.data

        def recording_data(msg: bytes | str) -> tuple[int, bytes]:
            replies.append(original(msg))
            return replies[-1]

        client.data = recording_data  # type: ignore[method-assign]
        client.sendmail("sales@example-motors.test", [to], data)
        return replies[0]


def service_reminder(lines: int) -> EmailMessage:
    """A CRM's plain-text service reminder, long enough to need ``lines`` lines."""
    msg = EmailMessage()
    msg["From"] = "Example Motors Service <service@example-motors.test>"
    msg["To"] = "customer@example.org"
    msg["Subject"] = "Your vehicle is due for service"
    msg["Date"] = "Mon, 05 Jan 2026 09:00:00 +0000"
    msg["Message-ID"] = "<reminder-1@example-motors.test>"
    body = [
        f"Line {n:05d}: oil change, tyre rotation and brake check are due." for n in range(lines)
    ]
    body[10] = ".NET portal users can book online."  # a line that smtplib dot-stuffs
    body[11] = "."
    msg.set_content("\n".join(body) + "\n")
    return msg


async def test_lf_only_message_over_the_line_limit_is_accepted_intact(harness: Harness) -> None:
    # 300 KB with LF line ends: every line is short, but no CRLF until the end of data.
    # msg.as_bytes() ends lines with LF, and smtplib sends bytes as they are.
    msg = service_reminder(5000)
    raw = msg.as_bytes()
    assert len(raw) > 300_000 and b"\r\n" not in raw
    assert len(raw) > harness.gateway.settings.submission.max_line_length
    code, text = await asyncio.to_thread(smtplib_send, harness.port, raw)
    assert code == 250 and text.startswith(b"2.0.0 queued as "), (code, text)
    await harness.wait_delivered(1)
    got = harness.sink.messages[0].data
    assert not BARE.search(got)
    # Intact, dots included; smtplib added the final CRLF itself, the data not ending in one.
    assert got.endswith(raw.replace(b"\n", b"\r\n") + b"\r\n")


async def test_bcc_is_stripped_and_missing_ids_added(harness: Harness) -> None:
    data = (
        b"From: sales@example-motors.test\r\nTo: customer@example.org\r\n"
        b"Bcc: boss@example-motors.test,\r\n secret@example-motors.test\r\n"
        b"Subject: Hi\r\n\r\nBody\r\n"
    )
    assert (await submit(harness, data)).startswith("250 ")
    await harness.wait_delivered(1)
    parsed = email.message_from_bytes(harness.sink.messages[0].data, policy=email.policy.default)
    assert parsed["Bcc"] is None
    assert b"secret@" not in harness.sink.messages[0].data
    assert parsed["Message-ID"].endswith("@mailgate.test>")
    assert parsed["Date"] is not None


async def test_each_recipient_gets_its_own_copy_and_reference(harness: Harness) -> None:
    rcpts = ("a@example.org", "b@example.net", "c@example.com")
    reply = await submit(harness, PLAIN, rcpts)
    assert reply.startswith("250 2.0.0 queued as ") and "for 3 recipients" in reply
    await harness.wait_delivered(3)
    by_rcpt = {m.rcpt_tos[0]: m.data for m in harness.sink.messages}
    assert sorted(by_rcpt) == sorted(rcpts)
    refs = {re.search(rb"X-Mailgate-Ref: (\S+)", d).group(1) for d in by_rcpt.values()}  # type: ignore[union-attr]
    assert len(refs) == 3


async def test_long_html_line_is_reencoded_not_truncated(harness: Harness) -> None:
    html = "<p>" + "Spring sale on every model! " * 200 + "</p>"  # ~5,600 characters
    data = (
        "From: sales@example-motors.test\r\nTo: customer@example.org\r\nSubject: Sale\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n"
    ).encode()
    assert (await submit(harness, data)).startswith("250 ")
    await harness.wait_delivered(1)
    got = harness.sink.messages[0].data
    assert max(len(line) for line in got.split(b"\r\n")) <= 998
    parsed = email.message_from_bytes(got, policy=email.policy.default)
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert parsed.get_content().strip() == html


async def test_header_from_of_another_dealer_is_refused(harness: Harness) -> None:
    data = message(sender="sales@rival-motors.test")
    reply = await submit(harness, data)
    assert reply.startswith("553 5.7.1 "), reply
    assert "from-domain-not-allowed" in reply and "rival-motors.test" in reply
    assert harness.sink.messages == []


async def test_envelope_sender_of_another_dealer_is_refused(harness: Harness) -> None:
    client = await harness.client()
    resp = await client.cmd("MAIL FROM:<sales@rival-motors.test>")
    await client.close()
    assert resp.code == 553 and resp.text.startswith("5.7.1 ")
    assert "rival-motors.test" in resp.text and "example-motors" in resp.text


async def test_unauthenticated_mail_is_refused(harness: Harness) -> None:
    client = await RawSmtp.connect("127.0.0.1", harness.port)
    assert (await client.cmd("EHLO crm.test")).code == 250
    before_tls = await client.cmd("MAIL FROM:<sales@example-motors.test>")
    auth_before_tls = await client.cmd("AUTH PLAIN AGEAYg==")
    assert (await client.starttls()).code == 220
    assert (await client.cmd("EHLO crm.test")).code == 250
    after_tls = await client.cmd("MAIL FROM:<sales@example-motors.test>")
    await client.close()
    assert (before_tls.code, before_tls.enhanced) == (530, "5.7.0")
    # RFC 3207 §4: before TLS, anything but NOOP/EHLO/STARTTLS/QUIT gets 530.
    assert (auth_before_tls.code, auth_before_tls.enhanced) == (530, "5.7.0")
    assert (after_tls.code, after_tls.enhanced) == (530, "5.7.0")
    assert harness.sink.messages == []


async def test_wrong_password_and_unknown_user_look_the_same(harness: Harness) -> None:
    replies = []
    for user, password in (("example-crm", "wrong password!!"), ("nobody", "whatever1234")):
        client = await RawSmtp.connect("127.0.0.1", harness.port)
        assert (await client.cmd("EHLO crm.test")).code == 250
        await client.starttls()
        await client.cmd("EHLO crm.test")
        replies.append(str(await client.auth_plain(user, password)))
        await client.close()
    assert replies[0] == replies[1] == "535 5.7.8 Authentication credentials invalid"


async def test_ehlo_before_tls_does_not_offer_auth(harness: Harness) -> None:
    client = await RawSmtp.connect("127.0.0.1", harness.port)
    ehlo = await client.cmd("EHLO crm.test")
    await client.close()
    assert "STARTTLS" in ehlo.lines
    assert not any(line.startswith("AUTH") for line in ehlo.lines)


async def test_recipient_limit_answers_452(harness: Harness, sink: object) -> None:
    client = await harness.client()
    await client.cmd("MAIL FROM:<sales@example-motors.test>")
    codes = [(await client.cmd(f"RCPT TO:<r{i}@example.org>")).code for i in range(102)]
    over = await client.cmd("RCPT TO:<r999@example.org>")
    await client.close()
    assert codes[:100] == [250] * 100
    assert codes[100:] == [452, 452]
    assert over.enhanced == "4.5.3"


async def test_size_limits(harness: Harness) -> None:
    limit = harness.gateway.settings.submission.max_message_size
    client = await harness.client()
    too_big = await client.cmd(f"MAIL FROM:<sales@example-motors.test> SIZE={limit + 1}")
    assert (too_big.code, too_big.enhanced) == (552, "5.3.4")
    assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
    assert (await client.cmd("RCPT TO:<customer@example.org>")).code == 250
    body = (b"x" * 998 + b"\r\n") * (limit // 1000 + 10)
    resp = await client.data(message().replace(b"Hello", b"") + body + b".\r\n", timeout=60)
    await client.close()
    assert (resp.code, resp.enhanced) == (552, "5.3.4")
    assert harness.sink.messages == []


async def test_deep_mime_nesting_is_refused(harness: Harness) -> None:
    depth = 2000
    parts = [b"From: sales@example-motors.test\r\nTo: c@example.org\r\nSubject: deep\r\n"]
    for i in range(depth):
        parts.append(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i))
    parts.append(b"Content-Type: text/plain\r\n\r\nhi\r\n")
    for i in reversed(range(depth)):
        parts.append(b"--b%d--\r\n" % i)
    reply = await submit(harness, b"".join(parts))
    assert reply.startswith("554 5.6.0 "), reply
    assert harness.sink.messages == []


async def test_replies_never_leak_tracebacks(harness: Harness) -> None:
    client = await harness.client()
    replies = [
        await client.cmd("DATA"),
        await client.cmd("RCPT TO:<x@example.org>"),
        await client.cmd(b"MAIL FROM:<a\x00b@example-motors.test>"),
        await client.cmd("BOGUS"),
        await client.cmd("MAIL FROM:<sales@example-motors.test> BODY=WHATEVER"),
    ]
    await client.close()
    for resp in replies:
        assert resp.code >= 500 and resp.enhanced, resp
        assert "Traceback" not in resp.text and "Error: (" not in resp.text


async def test_a_multi_line_reply_leaves_in_one_write(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # EHLO's reply is a dozen lines; written line by line, each became a TLS record and a
    # segment of its own, with a drain between. Every write the gateway's transports make
    # is recorded here (the stdlib's socket transport, under TLS and in the clear).
    from asyncio import selector_events

    writes: list[bytes] = []
    original = selector_events._SelectorSocketTransport.write

    def recording(self: selector_events._SelectorSocketTransport, data: bytes) -> None:
        writes.append(bytes(data))
        original(self, data)

    monkeypatch.setattr(selector_events._SelectorSocketTransport, "write", recording)
    client = await RawSmtp.connect("127.0.0.1", harness.port)
    writes.clear()  # the banner, and whatever the client itself wrote
    await client.send(b"EHLO crm.test\r\n")
    reply = await client.read_reply()
    await client.close()
    assert reply.code == 250 and len(reply.lines) > 3, reply
    replies = [w for w in writes if w.startswith(b"250")]
    assert len(replies) == 1, replies
    assert replies[0].count(b"\r\n") == len(reply.lines)
