from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta
from email.message import Message

import pytest

from gateway.delivery.dsn import build_dsn
from gateway.types import (
    DealerId,
    MessageId,
    MessageState,
    OutcomeKind,
    QueuedMessage,
    RcptOutcome,
)

NOW = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
BODY = b"Hello Jane,\r\nyour car is ready. SECRET-BODY-MARKER\r\n"
HEADERS = (
    b"From: Sales <sales@dealer.example>\r\n"
    b"To: jane@customer.example\r\n"
    b"Subject: Your service appointment\r\n"
    b"Message-ID: <abc@dealer.example>\r\n"
)
FAILED = RcptOutcome(OutcomeKind.FAILED, 550, "5.1.1", "no such user")


def queued(
    data: bytes = HEADERS + b"\r\n" + BODY, rcpt: str = "jane@customer.example"
) -> QueuedMessage:
    return QueuedMessage(
        id=MessageId("m1"),
        dealer_id=DealerId("d1"),
        mail_from="bounces@dealer.example",
        rcpt=rcpt,
        data=data,
        received_at=NOW - timedelta(minutes=30),
        state=MessageState.QUEUED,
        attempts=0,
        next_attempt_at=None,
        last_error="",
        findings=(),
        note="",
        system=False,
        updated_at=NOW,
        size=len(data),
    )


def build(original: QueuedMessage | None = None, outcome: RcptOutcome = FAILED) -> bytes:
    return build_dsn(
        original=original or queued(),
        outcome=outcome,
        reporting_mta="gw.example.net",
        from_addr="MAILER-DAEMON@gw.example.net",
        now=NOW,
        message_id="m1.dsn@gw.example.net",
        remote_mta="relay.example.net",
    )


def parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def part(msg: Message, index: int) -> Message:
    parts = msg.get_payload()
    assert isinstance(parts, list)
    found = parts[index]
    assert isinstance(found, Message)
    return found


def decoded(msg: Message) -> bytes:
    payload = msg.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def status_blocks(raw: bytes) -> tuple[Message, Message]:
    blocks = part(parse(raw), 1).get_payload()
    assert isinstance(blocks, list) and len(blocks) == 2
    per_message, per_rcpt = blocks
    assert isinstance(per_message, Message) and isinstance(per_rcpt, Message)
    return per_message, per_rcpt


def test_structure_is_rfc3464_multipart_report() -> None:
    msg = parse(build())
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["To"] == "<bounces@dealer.example>"
    assert msg["Message-ID"] == "<m1.dsn@gw.example.net>"
    assert [part(msg, i).get_content_type() for i in range(3)] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]


def test_human_part_names_recipient_reason_and_advice() -> None:
    text = decoded(part(parse(build()), 0)).decode()
    assert "jane@customer.example" in text
    assert "550 5.1.1 no such user" in text
    assert "What you can do" in text


def test_delivery_status_fields() -> None:
    per_message, per_rcpt = status_blocks(build())
    assert per_message["Reporting-MTA"] == "dns; gw.example.net"
    assert per_message["Arrival-Date"] == "Mon, 05 Jan 2026 09:00:00 +0000"
    assert per_rcpt["Final-Recipient"] == "rfc822; jane@customer.example"
    assert per_rcpt["Action"] == "failed"
    assert per_rcpt["Status"] == "5.1.1"
    assert per_rcpt["Remote-MTA"] == "dns; relay.example.net"
    assert per_rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"


def test_headers_part_has_headers_only() -> None:
    raw = build()
    assert b"SECRET-BODY-MARKER" not in raw
    headers = decoded(part(parse(raw), 2))
    assert b"Subject: Your service appointment" in headers
    assert b"Message-ID: <abc@dealer.example>" in headers


def test_crlf_and_line_length() -> None:
    long_reply = RcptOutcome(OutcomeKind.FAILED, 550, "5.7.1", "x" * 5000)
    long_header = b"X-Long: " + b"y" * 3000 + b"\r\n"
    raw = build(queued(data=HEADERS + long_header + b"\r\n" + BODY), long_reply)
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert raw.isascii()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(HEADERS + b"Subject: Caf\xc3\xa9\r\n\r\n" + BODY, id="8bit-header"),
        pytest.param(HEADERS.replace(b"\r\n", b"\n") + b"\n" + BODY, id="bare-lf"),
        pytest.param(HEADERS, id="no-body"),
    ],
)
def test_awkward_originals_stay_7bit_and_parse(data: bytes) -> None:
    raw = build(queued(data=data))
    assert raw.isascii()
    headers = decoded(part(parse(raw), 2))
    assert b"Subject: Your service appointment" in headers
    assert b"SECRET-BODY-MARKER" not in headers


def test_non_5xx_status_is_reported_as_permanent() -> None:
    expired = RcptOutcome(OutcomeKind.FAILED, 451, "4.4.1", "no answer")
    _, per_rcpt = status_blocks(build(outcome=expired))
    assert per_rcpt["Status"] == "5.0.0"


def test_control_characters_in_addresses_cannot_forge_headers() -> None:
    raw = build(queued(rcpt="jane@customer.example\r\nBcc: evil@x.example"))
    msg = parse(raw)
    assert msg["Bcc"] is None
    assert "Bcc" not in msg
