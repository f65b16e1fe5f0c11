from __future__ import annotations

from pathlib import Path

import pytest

from gateway.intake import repair
from gateway.mail.message import ParseLimits, parse
from gateway.pipeline.attachments import stray_attachment
from gateway.pipeline.base import CheckContext, Finding
from gateway.policy.model import DealerPolicy

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "messages" / "inspection"
LIMITS = ParseLimits(max_header_bytes=102_400, max_mime_depth=100)


def repairs(raw: bytes, dealer: DealerPolicy, ctx: CheckContext) -> list[Finding]:
    return [f for f in stray_attachment(parse(raw, LIMITS), dealer, ctx) if f.repair]


@pytest.mark.parametrize(
    ("name", "attachments"),
    [
        ("unknown1-html.eml", []),
        ("unknown1-toplevel.eml", []),
        ("unknown1-with-pdf.eml", ["brochure.pdf"]),
    ],
)
def test_html_attachment_becomes_the_body(
    name: str, attachments: list[str], dealer: DealerPolicy, ctx: CheckContext
) -> None:
    raw = (SAMPLES / name).read_bytes()
    fixed = repair.apply(raw, repairs(raw, dealer, ctx))
    assert fixed is not None
    msg = parse(fixed, LIMITS)
    assert len(msg.html_parts) == 1 and "test drive" in msg.html_parts[0]
    assert len(msg.text_parts) == 1 and "test drive" in msg.text_parts[0]
    assert [a.filename for a in msg.attachments] == attachments
    assert not list(stray_attachment(msg, dealer, ctx))
    # The sender's own header fields are kept as submitted.
    head = fixed.split(b"\r\n\r\n", 1)[0]
    assert raw.split(b"\r\n", 1)[0] in head
    assert b"Subject: Your test drive\r\n" in head
    assert head.count(b"Content-Type:") == 1
    content_type = msg.header("Content-Type") or ""
    kind = "multipart/mixed" if attachments else "multipart/alternative"
    assert content_type.startswith(kind)
    assert b"\r\n" in fixed and b"\n" not in fixed.replace(b"\r\n", b"")


def test_generated_text_part_reads_like_the_html(dealer: DealerPolicy, ctx: CheckContext) -> None:
    raw = (SAMPLES / "unknown1-toplevel.eml").read_bytes()
    fixed = repair.apply(raw, repairs(raw, dealer, ctx))
    assert fixed is not None
    (text,) = parse(fixed, LIMITS).text_parts
    assert "Your test drive of the Civic is booked for Saturday." in text
    assert "View your booking (https://example-motors.test/booking)" in text
    assert "<" not in text


def test_winmail_dat_is_cut_out_and_nothing_else_changes(
    dealer: DealerPolicy, ctx: CheckContext
) -> None:
    raw = (SAMPLES / "winmail.eml").read_bytes()
    fixed = repair.apply(raw, repairs(raw, dealer, ctx))
    assert fixed is not None
    msg = parse(fixed, LIMITS)
    assert msg.attachments == () and msg.text_parts[0].startswith("Hello Sam")
    start = raw.index(b"\r\n--mix1\r\nContent-Type: application/ms-tnef")
    end = raw.index(b"\r\n--mix1--")
    assert fixed == raw[:start] + raw[end:]


def test_winmail_dat_first_in_the_multipart(dealer: DealerPolicy, ctx: CheckContext) -> None:
    raw = (SAMPLES / "winmail.eml").read_bytes()
    head, body = raw.split(b"\r\n\r\n", 1)
    parts = body.split(b"--mix1")
    swapped = head + b"\r\n\r\n" + b"--mix1".join([parts[0], parts[2], parts[1], parts[3]])
    fixed = repair.apply(swapped, repairs(swapped, dealer, ctx))
    assert fixed is not None
    msg = parse(fixed, LIMITS)
    assert msg.attachments == () and msg.text_parts[0].startswith("Hello Sam")


def test_a_repair_that_does_not_fit_gives_none() -> None:
    finding = Finding("stray-attachment", "x", repair="html-attachment-as-body")
    plain = b"From: a@example-motors.test\r\nSubject: x\r\n\r\nno attachments here\r\n"
    assert repair.apply(plain, [finding]) is None
    assert repair.apply(plain, []) == plain
