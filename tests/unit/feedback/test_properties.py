"""Junk never raises and never takes long: arbitrary bytes and MIME-shaped junk."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.feedback import FeedbackKind, classify_message, parse_arf, parse_bounce

FIELDS = [
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=b",
    b"Content-Type: multipart/report; report-type=feedback-report; boundary=b",
    b"Content-Type: message/rfc822",
    b"Content-Type: message/delivery-status",
    b"Content-Type: message/feedback-report",
    b"Content-Type: text/rfc822-headers",
    b"Content-Transfer-Encoding: base64",
    b"Content-Transfer-Encoding: quoted-printable",
    b"From: MAILER-DAEMON@example.org",
    b"Subject: Undelivered Mail Returned to Sender",
    b"Auto-Submitted: auto-replied",
    b"Final-Recipient: rfc822; a@example.org",
    b"Original-Recipient: rfc822;",
    b"Action: failed",
    b"Status: 5.1.1",
    b"Status: 9.9.9.9",
    b"Diagnostic-Code: smtp; 550 5.1.1 user unknown",
    b"Feedback-Type: abuse",
    b"Original-Rcpt-To: <>",
    b"Arrival-Date: not a date",
    b"X-Mailgate-Ref: v1.0.0.aaaaaaaaaaaaaaaa",
    b"X-HmXmrOriginalRecipient: x@y.z",
    b"X-Failed-Recipients: , , @",
    b'{"notificationType":"Bounce","bounce":{"bouncedRecipients":[{"emailAddress":7}]}}',
    b"--b",
    b"--b--",
    b"",
    b" folded continuation",
    b"<a@b.c>:",
    b"This is the qmail-send program at x.",
    b"The following address(es) failed:",
]
mime_junk = st.lists(st.one_of(st.sampled_from(FIELDS), st.binary(max_size=40)), max_size=60).map(
    lambda lines: b"\n".join(lines)
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    started = time.perf_counter()
    result = classify_message(raw)
    assert result.kind in FeedbackKind
    parse_arf(raw)
    parse_bounce(raw)
    assert time.perf_counter() - started < 2.0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mime_junk, st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_mime_shaped_junk_never_raises(raw: bytes, ending: bytes) -> None:
    started = time.perf_counter()
    classify_message(raw.replace(b"\n", ending))
    assert time.perf_counter() - started < 2.0


def test_deep_nesting_and_huge_original_are_bounded() -> None:
    # 2,000 nested enclosures, then a 6 MB returned original: capped, not recursed.
    nested = b"Content-Type: message/rfc822\n\n" * 2000 + b"Subject: x\n\nbody\n"
    huge = (
        b"From: MAILER-DAEMON@example.org\nSubject: Undelivered Mail\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
        b"--b\nContent-Type: message/delivery-status\n\nFinal-Recipient: rfc822; a@example.org\n"
        b"Action: failed\nStatus: 5.1.1\n\n--b\nContent-Type: message/rfc822\n\n"
        b"Subject: big\n\n" + b"x" * 6_000_000 + b"\n--b--\n"
    )
    for raw in (nested, huge):
        started = time.perf_counter()
        classify_message(raw)
        assert time.perf_counter() - started < 3.0
    result = classify_message(huge)
    assert result.bounce is not None
    assert result.bounce.recipients[0].hard
