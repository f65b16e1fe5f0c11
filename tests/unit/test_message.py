from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mail.message import MessageRejected, ParseLimits, parse

# The shared corpus sits beside the checkout (../shared/corpus), locally and in CI.
CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
CPYTHON = CORPUS / "cpython-test-email" / "data"
FLANKER = CORPUS / "flanker" / "tests" / "fixtures" / "messages"
LIMITS = ParseLimits(max_header_bytes=102_400, max_mime_depth=100)

# Corpus files that break a limit on purpose (see the flanker MANIFEST.md): they must give
# MessageRejected, never another exception.
REJECTED = {
    "enclosed-endless.eml": "too-many-parts",  # flanker expects a decoding error
    "long-header.eml": "header-too-large",  # a single 200 KB header section
}


def corpus_files() -> list[Path]:
    files = [p for root in (CPYTHON, FLANKER) if root.is_dir() for p in sorted(root.rglob("*"))]
    return [p for p in files if p.is_file() and p.suffix in (".txt", ".eml")]


def nested(depth: int) -> bytes:
    parts = [b"From: a@example.test\r\nMIME-Version: 1.0\r\n"]
    for level in range(depth):
        parts.append(
            b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (level, level)
        )
    parts.append(b"Content-Type: text/plain\r\n\r\ndeep\r\n")
    for level in reversed(range(depth)):
        parts.append(b"--b%d--\r\n" % level)
    return b"".join(parts)


@pytest.mark.skipif(not CPYTHON.is_dir(), reason="shared corpus not present")
@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_parses(path: Path) -> None:
    raw = path.read_bytes()
    if path.name in REJECTED:
        with pytest.raises(MessageRejected) as caught:
            parse(raw, LIMITS)
        assert caught.value.reply_kind == REJECTED[path.name]
        return
    msg = parse(raw, LIMITS)
    assert msg.raw is raw and msg.size == len(raw)


@pytest.mark.skipif(not FLANKER.is_dir(), reason="shared corpus not present")
def test_torture_test_structure() -> None:
    msg = parse((FLANKER / "torture.eml").read_bytes(), LIMITS)
    assert msg.from_addrs == ("mrc@cac.washington.edu",)
    assert msg.mime_depth >= 3
    assert len(msg.attachments) + len(msg.text_parts) + len(msg.html_parts) > 10


@pytest.mark.skipif(not CPYTHON.is_dir(), reason="shared corpus not present")
@pytest.mark.parametrize("name", ["msg_15.txt", "msg_25.txt", "msg_41.txt", "msg_42.txt"])
def test_corpus_defects_are_recorded(name: str) -> None:
    expected = json.loads((CPYTHON.parent / "expected.json").read_text())
    assert name in json.dumps(expected)
    msg = parse((CPYTHON / name).read_bytes(), LIMITS)
    if name in ("msg_25.txt", "msg_41.txt"):
        assert "NoBoundaryInMultipartDefect" in msg.defects
    if name == "msg_15.txt":
        assert "StartBoundaryNotFoundDefect" in msg.defects


def test_deep_nesting_is_rejected_without_recursion_error() -> None:
    with pytest.raises(MessageRejected) as caught:
        parse(nested(2000), LIMITS)
    assert caught.value.reply_kind == "mime-too-deep"
    assert (caught.value.code, caught.value.enhanced) == (554, "5.6.0")


def test_deep_nesting_beyond_the_stdlib_with_a_generous_limit() -> None:
    # The scanner lets 5,000 levels through; the stdlib parser would recurse and fail.
    generous = ParseLimits(max_header_bytes=102_400, max_mime_depth=10_000, max_parts=10_000)
    with pytest.raises(MessageRejected) as caught:
        parse(nested(5000), generous)
    assert caught.value.reply_kind == "mime-too-deep"


def test_nesting_within_limit() -> None:
    msg = parse(nested(50), LIMITS)
    assert msg.mime_depth == 50  # the text leaf sits inside 50 multiparts
    assert msg.text_parts == ("deep",)


def test_flat_part_bomb() -> None:
    body = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(10_000))
    raw = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + body + b"--b--\r\n"
    with pytest.raises(MessageRejected) as caught:
        parse(raw, LIMITS)
    assert caught.value.reply_kind == "too-many-parts"


def test_header_bomb() -> None:
    raw = b"".join(b"X-Junk: %d\r\n" % i for i in range(100_000)) + b"\r\nbody\r\n"
    with pytest.raises(MessageRejected) as caught:
        parse(raw, LIMITS)
    assert caught.value.reply_kind == "header-too-large"
    assert (caught.value.code, caught.value.enhanced) == (552, "5.3.4")


def test_huge_boundary_and_repeated_boundary() -> None:
    boundary = b"B" * 3000
    raw = (
        b'Content-Type: multipart/mixed; boundary="'
        + boundary
        + b'"\r\n\r\n--'
        + boundary
        + b"\r\n\r\ntext mentioning "
        + boundary
        + b" inline\r\n--"
        + boundary
        + b"--\r\n"
    )
    msg = parse(raw, LIMITS)
    assert len(msg.text_parts) == 1


def test_headers_are_unfolded_decoded_and_in_order() -> None:
    raw = (
        b"Received: from a\r\n by b\r\nReceived: from c\r\n"
        b"From: =?utf-8?q?Gr=C3=BC=C3=9Fe=2C_Team?= <Team@Example-Motors.TEST>\r\n"
        b"Subject: =?utf-8?b?w5xiZXI=?= car\r\nDate: Mon, 1 Jun 2026 10:00:00 +0000\r\n"
        b"Message-ID:  <abc@example.test> \r\n\r\nbody\r\n"
    )
    msg = parse(raw, LIMITS)
    assert [name for name, _ in msg.headers] == [
        "Received",
        "Received",
        "From",
        "Subject",
        "Date",
        "Message-ID",
    ]
    assert msg.headers[0] == ("Received", "from a by b")
    assert msg.header("from") == "Grüße, Team <Team@Example-Motors.TEST>"
    assert msg.from_addrs == ("Team@example-motors.test",)
    assert msg.subject == "Über car"
    assert msg.message_id == "<abc@example.test>"
    assert msg.has_date and msg.received_count == 2 and msg.from_header_count == 1


def test_parseaddr_confusion_is_not_reproduced() -> None:
    # CVE-2023-27043: parseaddr reports "alice@example.org" for some inputs like this one.
    raw = b'From: "alice@example.org" <bob@evil.test>\r\n\r\nx\r\n'
    assert parse(raw, LIMITS).from_addrs == ("bob@evil.test",)


def test_parts_attachments_and_junk_encodings() -> None:
    raw = (
        b"From: a@example.test\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=x-bogus\r\n\r\nhello \xff\r\n"
        b"--b\r\nContent-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n<p>=ZZ=\r\n"
        b"--b\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="quote.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBER!!i0xLjQK===\r\n"
        b"--b\r\nContent-Type: text/plain\r\n"
        b"Content-Disposition: attachment; filename=notes.txt\r\n\r\nnotes\r\n"
        b"--b--\r\n"
    )
    msg = parse(raw, LIMITS)
    assert msg.text_parts == ("hello \ufffd",)
    assert msg.html_parts and msg.html_parts[0].startswith("<p>")
    assert [a.filename for a in msg.attachments] == ["quote.pdf", "notes.txt"]
    pdf = msg.attachments[0]
    assert pdf.content_type == "application/pdf" and pdf.disposition == "attachment"
    assert pdf.content.startswith(b"%PDF") and pdf.size == len(pdf.content)
    assert "UnknownCharsetDefect" in msg.defects
    assert "InvalidBase64CharactersDefect" in msg.defects


def test_attachment_content_is_capped_but_size_is_not() -> None:
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + b"z" * 5000 + b"\r\n--b--\r\n"
    )
    limits = ParseLimits(102_400, 100, max_attachment_bytes=100)
    (attachment,) = parse(raw, limits).attachments
    assert attachment.size == 5000 and len(attachment.content) == 100


def test_undeclared_8bit_headers_and_nul() -> None:
    raw = (
        b"From: J\xf6rg <j@example.test>\r\n"
        b"Subject: \xff\xfe =?bogus?q?x?= =?utf-8?q?broken\r\n\r\na\x00b\r\n"
    )
    msg = parse(raw, LIMITS)
    assert msg.from_addrs == ("j@example.test",)
    assert msg.subject is not None and "\ufffd" in msg.subject
    assert msg.text_parts == ("a\x00b\r\n",)  # never truncated at the NUL


def test_two_from_headers_counted() -> None:
    msg = parse(b"From: a@x.test\r\nFrom: b@y.test\r\n\r\n", LIMITS)
    assert msg.from_header_count == 2 and msg.from_addrs == ("a@x.test", "b@y.test")


def test_forwarded_message_is_an_attachment() -> None:
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee below\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: x@y.test\r\nSubject: old\r\n\r\nold text\r\n--b--\r\n"
    )
    msg = parse(raw, LIMITS)
    assert msg.text_parts == ("see below",)
    assert [a.content_type for a in msg.attachments] == ["message/rfc822"]
    assert msg.mime_depth == 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_parse_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    with contextlib.suppress(MessageRejected):
        parse(raw, ParseLimits(max_header_bytes=1000, max_mime_depth=5, max_parts=20))


MIME_ALPHABET = st.sampled_from(
    [
        b"\r\n",
        b"\n",
        b"\r",
        b"--b",
        b"--b--",
        b"--c",
        b"Content-Type: multipart/mixed; boundary=b",
        b"Content-Type: multipart/mixed; boundary=c",
        b"Content-Type: message/rfc822",
        b"Content-Transfer-Encoding: base64",
        b"Content-Transfer-Encoding: quoted-printable",
        b"Content-Type: text/plain; charset=x-bogus",
        b"From: a@b.test",
        b"From: =?x?q?=FF?= <",
        b"=ZZ",
        b"\xff\xfe",
        b"\x00",
        b" ",
        b"abc==",
        b"Subject: =?utf-8?b?",
        b":",
        b"\t",
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(MIME_ALPHABET, max_size=80))
def test_parse_never_raises_on_mime_shaped_junk(pieces: list[bytes]) -> None:
    with contextlib.suppress(MessageRejected):
        parse(b"".join(pieces), ParseLimits(max_header_bytes=2000, max_mime_depth=4, max_parts=30))
