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
        ("unknown1-html-placeholder.eml", []),
        ("att00001-empty-body.eml", []),
    ],
)
def test_html_attachment_becomes_the_body(
    name: str, attachments: list[str], dealer: DealerPolicy, ctx: CheckContext
) -> None:
    raw = (SAMPLES / name).read_bytes()
    fixed = repair.apply(raw, repairs(raw, dealer, ctx))
    assert fixed is not None
    msg = parse(fixed, LIMITS)
    words = "test drive" if "test drive" in msg.html_parts[0] else "service appointment"
    assert len(msg.html_parts) == 1 and words in msg.html_parts[0]
    assert len(msg.text_parts) == 1 and words in msg.text_parts[0]
    assert [a.filename for a in msg.attachments] == attachments
    assert not list(stray_attachment(msg, dealer, ctx))
    # The sender's own header fields are kept as submitted.
    head = fixed.split(b"\r\n\r\n", 1)[0]
    assert raw.split(b"\r\n", 1)[0] in head
    assert b"Subject: Your " in head
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


def test_a_one_line_placeholder_is_not_the_text_alternative(
    dealer: DealerPolicy, ctx: CheckContext
) -> None:
    raw = (SAMPLES / "unknown1-html-placeholder.eml").read_bytes()
    fixed = repair.apply(raw, repairs(raw, dealer, ctx))
    assert fixed is not None
    msg = parse(fixed, LIMITS)
    (text,) = msg.text_parts
    assert "Please see the attached" not in text
    assert "Your service appointment for the Accord is confirmed for Tuesday at 9:00." in text
    assert "Manage your appointment (https://example-motors.test/appointments)" in text


def test_a_text_body_of_the_same_message_is_kept(dealer: DealerPolicy, ctx: CheckContext) -> None:
    raw = (SAMPLES / "unknown1-with-pdf.eml").read_bytes()
    fixed = repair.apply(raw, repairs(raw, dealer, ctx))
    assert fixed is not None
    (text,) = parse(fixed, LIMITS).text_parts
    assert " ".join(text.split()) == "Hello Sam, Your test drive is booked for Saturday."


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("invoice-html-octet.eml", None),  # a named document: not stray at all
        ("invoice-html-harmless.eml", None),
        ("unknown1-script.eml", "because it runs a script"),
        ("unknown1-form.eml", "because it has a form"),
        ("unknown1-own-text.eml", "because the text body is a message of its own"),
    ],
)
def test_only_the_incident_shape_is_repaired(
    name: str, why: str | None, dealer: DealerPolicy, ctx: CheckContext
) -> None:
    raw = (SAMPLES / name).read_bytes()
    strays = list(stray_attachment(parse(raw, LIMITS), dealer, ctx))
    assert all(f.repair is None for f in strays)
    if why is None:
        assert strays == []
    else:
        (finding,) = strays
        assert finding.detail.endswith(why), finding.detail
    # The repair itself refuses the shape too, whoever names it.
    forged = Finding("stray-attachment", "x", repair="html-attachment-as-body")
    assert repair.apply(raw, [forged]) is None
