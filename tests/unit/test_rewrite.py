from __future__ import annotations

import binascii
import email
import email.policy
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mail.message import ParseLimits, parse
from gateway.mail.rewrite import (
    LineTooLong,
    fold_long_lines,
    has_bare_line_endings,
    neutralize_nul_dot_lines,
    normalize_line_endings,
    prepend_headers,
    remove_headers,
    split_header_body,
)

# reliability.md A1: the ten end-of-data look-alikes used for SMTP smuggling.
SMUGGLING = [
    b"\n.\n",
    b"\n.\r",
    b"\r.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n\x00.\r\n",
    b"\r\n.\r\r\n",
    b"\r\r\n.\r\r\n",
    b"\r\n.\n",
]
BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def dot_stuff(data: bytes) -> bytes:
    # What the SMTP client does on the way out (RFC 5321 §4.5.2).
    return re.sub(rb"(?m)^\.", b"..", data)


@pytest.mark.parametrize("seq", SMUGGLING, ids=repr)
def test_smuggling_sequences_leave_no_bare_line_endings(seq: bytes) -> None:
    raw = (
        b"From: a@example.test\r\nSubject: x\r\n\r\nhello"
        + seq
        + b"MAIL FROM:<smuggled@evil.test>\r\nRCPT TO:<r@x.test>\r\nDATA\r\nmore\r\n"
    )
    assert has_bare_line_endings(raw) or seq == b"\r\n\x00.\r\n"
    out, fixed = normalize_line_endings(raw)
    assert not BARE.search(out)
    assert not has_bare_line_endings(out)
    assert fixed == len(BARE.findall(raw))
    # Once dot-stuffed, no end-of-data sequence remains inside the content.
    assert b"\r\n.\r\n" not in dot_stuff(out)


@pytest.mark.parametrize(
    ("raw", "expected", "fixed"),
    [
        (b"a\r\nb", b"a\r\nb", 0),
        (b"a\nb", b"a\r\nb", 1),
        (b"a\rb", b"a\r\nb", 1),
        (b"a\r\r\nb", b"a\r\n\r\nb", 1),
        (b"a\n\rb", b"a\r\n\r\nb", 2),
        (b"\n", b"\r\n", 1),
        (b"\r", b"\r\n", 1),
        (b"", b"", 0),
    ],
)
def test_normalize_table(raw: bytes, expected: bytes, fixed: int) -> None:
    assert normalize_line_endings(raw) == (expected, fixed)


@settings(max_examples=500)
@given(
    st.binary(max_size=500)
    | st.lists(st.sampled_from([b"\r", b"\n", b".", b"a", b"\r\n"])).map(b"".join)
)
def test_normalize_properties(raw: bytes) -> None:
    out, fixed = normalize_line_endings(raw)
    # Exactly "each bare CR or LF becomes CRLF", whatever the implementation.
    assert (out, fixed) == BARE.subn(b"\r\n", raw)
    assert not BARE.search(out)
    assert normalize_line_endings(out) == (out, 0)
    assert out.replace(b"\r\n", b"") == raw.replace(b"\r\n", b"").replace(b"\r", b"").replace(
        b"\n", b""
    )
    assert len(out) == len(raw) + fixed


def test_split_header_body() -> None:
    assert split_header_body(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore") == (
        b"A: 1\r\nB: 2\r\n",
        b"body\r\n\r\nmore",
    )
    assert split_header_body(b"A: 1\r\n") == (b"A: 1\r\n", b"")
    assert split_header_body(b"\r\nbody") == (b"", b"body")
    assert split_header_body(b"A: 1\n\nbody") == (b"A: 1\n", b"body")


def test_bcc_removed_with_continuation_lines() -> None:
    raw = (
        b"From: a@example.test\r\nBcc: hidden@x.test,\r\n  other@y.test\r\n"
        b"To: b@example.test\r\nBCC : third@z.test\r\nSubject: Bcc: in subject\r\n\r\n"
        b"Bcc: in the body stays\r\n"
    )
    out = remove_headers(raw, {"Bcc"})
    assert out == (
        b"From: a@example.test\r\nTo: b@example.test\r\nSubject: Bcc: in subject\r\n\r\n"
        b"Bcc: in the body stays\r\n"
    )


def test_remove_headers_is_identity_when_absent() -> None:
    raw = b"From: a@example.test\r\n\r\nbody"
    assert remove_headers(raw, {"bcc"}) == raw


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("List-Unsubscribe", "<https://x.test/u>\r\nBcc: victim@x.test"),
        ("X-Dealer", "Acme\nBcc: victim@x.test"),
        ("X-Dealer", "Acme\rBcc: victim@x.test"),
        ("X-Dealer", "Acme\x00"),
        ("X-Bad\r\nBcc", "v"),
        ("Bad Name", "v"),
        ("Colon:", "v"),
        ("", "v"),
    ],
)
def test_header_injection_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError):
        prepend_headers(b"From: a@example.test\r\n\r\nbody", [(name, value)])


def test_prepend_headers_in_order_and_folded() -> None:
    long_value = " ".join(f"<https://unsub.example.test/{i}>" for i in range(8))
    raw = b"From: a@example.test\r\n\r\nbody"
    out = prepend_headers(
        raw, [("X-Mailgate-Ref", "v1.abc.1.def"), ("List-Unsubscribe", long_value)]
    )
    assert out.startswith(b"X-Mailgate-Ref: v1.abc.1.def\r\nList-Unsubscribe: ")
    assert out.endswith(raw)
    header, _ = split_header_body(out)
    assert all(len(line) <= 78 for line in header.split(b"\r\n"))
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed["List-Unsubscribe"] == long_value


def test_prepend_unfoldable_value_is_refused() -> None:
    with pytest.raises(ValueError):
        prepend_headers(b"\r\n", [("X-Token", "x" * 1200)])


def html_message(line: bytes, cte: bytes | None = None) -> bytes:
    cte_line = b"Content-Transfer-Encoding: " + cte + b"\r\n" if cte else b""
    return (
        b"From: a@example.test\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
        b"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain text\r\n"
        b"--alt\r\nContent-Type: text/html; charset=utf-8\r\n"
        + cte_line
        + b"\r\n"
        + line
        + b"\r\n--alt--\r\n"
    )


def max_line(data: bytes) -> int:
    return max(len(line) for line in data.split(b"\r\n"))


@pytest.mark.parametrize("cte", [None, b"7bit", b"8bit", b"binary"])
def test_long_html_line_becomes_quoted_printable(cte: bytes | None) -> None:
    line = ("<table>" + "<td>Prix spécial 10 000 € </td>" * 170 + "</table>").encode()
    assert len(line) > 5000
    raw = html_message(line, cte)
    out, changed = fold_long_lines(raw)
    assert changed and max_line(out) <= 998
    msg = email.message_from_bytes(out, policy=email.policy.default)
    plain, html = msg.get_payload()
    assert html["Content-Transfer-Encoding"] == "quoted-printable"
    assert html.get_payload(decode=True) == line
    # The other part and the structure are untouched byte for byte.
    assert out.startswith(raw[: raw.index(b"--alt\r\nContent-Type: text/html")])
    assert out.endswith(b"\r\n--alt--\r\n")
    assert plain.get_payload(decode=True) == b"plain text"


def test_single_part_message_gets_mime_version() -> None:
    body = b"x" * 5000 + b"\r\nshort\r\n"
    raw = b"From: a@example.test\r\nSubject: s\r\n\r\n" + body
    out, changed = fold_long_lines(raw)
    assert changed and max_line(out) <= 998
    assert b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" in out
    assert email.message_from_bytes(out).get_payload(decode=True) == body


def test_long_base64_is_rewrapped() -> None:
    data = bytes(range(256)) * 30
    encoded = binascii.b2a_base64(data, newline=False)
    raw = html_message(encoded, b"base64")
    out, changed = fold_long_lines(raw)
    assert changed and max_line(out) <= 998
    html = email.message_from_bytes(out).get_payload()[1]
    assert html.get_payload(decode=True) == data


def test_long_quoted_printable_gets_soft_breaks() -> None:
    text = ("caf=C3=A9 " * 600).encode()
    raw = html_message(text, b"quoted-printable")
    out, changed = fold_long_lines(raw)
    assert changed and max_line(out) <= 998
    html = email.message_from_bytes(out).get_payload()[1]
    assert html.get_payload(decode=True) == binascii.a2b_qp(text)


def test_long_header_folded_at_whitespace() -> None:
    subject = b" ".join(b"word%d" % i for i in range(400))
    raw = b"From: a@example.test\r\nSubject: " + subject + b"\r\n\r\nbody\r\n"
    out, changed = fold_long_lines(raw)
    assert changed and max_line(out) <= 998
    header, body = split_header_body(out)
    assert body == b"body\r\n"
    # Unfolding (RFC 5322 §2.2.3) gives back exactly the original field.
    assert (
        header.replace(b"\r\n ", b" ") == b"From: a@example.test\r\nSubject: " + subject + b"\r\n"
    )


def test_unfoldable_header_raises() -> None:
    raw = b"From: a@example.test\r\nX-Blob: " + b"x" * 2000 + b"\r\n\r\nbody\r\n"
    with pytest.raises(LineTooLong):
        fold_long_lines(raw)


def test_unknown_encoding_with_long_line_raises() -> None:
    with pytest.raises(LineTooLong):
        fold_long_lines(html_message(b"x" * 2000, b"x-uuencode"))


def test_short_lines_are_untouched() -> None:
    raw = html_message(b"<p>short</p>")
    assert fold_long_lines(raw) == (raw, False)


def test_nested_and_non_multipart_part_without_headers() -> None:
    inner = (
        b'Content-Type: multipart/related; boundary="rel"\r\n\r\n'
        b"--rel\r\n\r\n" + b"y" * 3000 + b"\r\n--rel--\r\n"
    )
    raw = (
        b"From: a@example.test\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="mix"\r\n\r\n'
        b"--mix\r\n" + inner + b"--mix--\r\n"
    )
    out, changed = fold_long_lines(raw)
    assert changed and max_line(out) <= 998
    msg = email.message_from_bytes(out)
    leaf = msg.get_payload()[0].get_payload()[0]
    assert leaf.get_payload(decode=True) == b"y" * 3000
    assert parse(out, ParseLimits(102_400, 100)).text_parts == ("y" * 3000,)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000), st.integers(min_value=80, max_value=998))
def test_qp_reencoding_round_trips(payload: bytes, limit: int) -> None:
    body = payload + b"z" * (limit + 1)  # always at least one over-long line
    raw = b"From: a@example.test\r\nContent-Type: application/octet-stream\r\n\r\n" + body
    out, changed = fold_long_lines(raw, limit)
    assert changed
    assert max_line(out) <= limit
    assert email.message_from_bytes(out).get_payload(decode=True) == body


PIECES = st.sampled_from(
    [
        b"\r\n", b"--b", b"--b--", b"--c", b"Content-Type: multipart/mixed; boundary=b",
        b"Content-Type: multipart/mixed; boundary=c", b"Content-Type: message/rfc822",
        b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: quoted-printable",
        b"Subject:", b" ", b"x" * 400, b"=3D", b"\xff", b"From: a@b.test",
    ]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(PIECES, max_size=60))
def test_fold_long_lines_fixes_or_refuses(pieces: list[bytes]) -> None:
    raw, _ = normalize_line_endings(b"".join(pieces))
    limits = ParseLimits(max_header_bytes=100_000, max_mime_depth=10, max_parts=100)
    try:
        out, changed = fold_long_lines(raw, 300, limits=limits)
    except LineTooLong:
        return
    assert max_line(out) <= 300
    assert changed == (out != raw)
    assert not has_bare_line_endings(out)
    parse(out, limits)


def test_a_line_of_nuls_around_one_dot_becomes_a_plain_dot() -> None:
    raw = b"Subject: x\r\n\r\nhello\r\n\x00.\r\n.\x00\x00\r\nMAIL FROM:<s@evil.test>\r\n"
    fixed, count = neutralize_nul_dot_lines(raw)
    assert count == 2
    assert fixed == b"Subject: x\r\n\r\nhello\r\n.\r\n.\r\nMAIL FROM:<s@evil.test>\r\n"


def test_nuls_elsewhere_are_kept() -> None:
    raw = b"Subject: x\r\n\r\na\x00b\r\n.\r\n\x00x.\r\n"
    assert neutralize_nul_dot_lines(raw) == (raw, 0)
