"""Hand-written reports in tests/data/{arf,dsn}: one behaviour each."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.feedback import (
    BounceKind,
    BounceReason,
    FeedbackKind,
    classify_message,
    parse_arf,
    parse_bounce,
)
from gateway.tracking import RefToken, parse_header
from gateway.types import MessageId

DATA = Path(__file__).resolve().parents[2] / "data"


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


# (file, kind, feedback type or None, [(address, hard, reason)], reference or None)
SAMPLES = [
    (
        "arf/abuse-with-ref.eml",
        FeedbackKind.COMPLAINT,
        "abuse",
        [],
        "v1.01jnf6w3kq8r0m4t.0.abcdefghijklmnop",
    ),
    ("arf/jmrp.eml", FeedbackKind.COMPLAINT, "abuse", [], "v1.01jnf6w3kq8r0m4t.3.qrstuvwxyzabcdef"),
    ("arf/dmarc-failure.eml", FeedbackKind.COMPLAINT, "auth-failure", [], None),
    (
        "dsn/postfix-user-unknown.eml",
        FeedbackKind.BOUNCE,
        None,
        [("nobody.here@example.org", True, BounceReason.UNKNOWN_USER)],
        "v1.01jnf6w3kq8r0m4t.1.mnopqrstuvwxyzab",
    ),
    (
        "dsn/delay.eml",
        FeedbackKind.DELAY,
        None,
        [("slow@example.com", False, BounceReason.TEMPORARY)],
        "v1.01jnf6w3kq8r0m4t.2.ghijklmnopqrstuv",
    ),
    (
        "dsn/qmail-mailbox-full.eml",
        FeedbackKind.BOUNCE,
        None,
        [("full.box@example.jp", False, BounceReason.MAILBOX_FULL)],
        "v1.01jnf6w3kq8r0m4t.4.abcdefghijklmnop",
    ),
    (
        "dsn/exim-domain-not-found.eml",
        FeedbackKind.BOUNCE,
        None,
        [("someone@no-such-dealer-domain.example", True, BounceReason.DOMAIN_NOT_FOUND)],
        "v1.01jnf6w3kq8r0m4t.5.bcdefghijklmnopq",
    ),
    ("dsn/out-of-office.eml", FeedbackKind.OTHER, None, [], None),
    ("dsn/vacation.eml", FeedbackKind.OTHER, None, [], None),
    ("dsn/normal-mail.eml", FeedbackKind.OTHER, None, [], None),
]


@pytest.mark.parametrize(
    ("name", "kind", "feedback_type", "recipients", "reference"),
    SAMPLES,
    ids=[s[0] for s in SAMPLES],
)
def test_sample(
    name: str,
    kind: FeedbackKind,
    feedback_type: str | None,
    recipients: list[tuple[str, bool, BounceReason]],
    reference: str | None,
) -> None:
    result = classify_message(load(name))
    assert result.kind is kind
    if feedback_type is not None:
        assert result.complaint is not None
        assert result.complaint.feedback_type == feedback_type
    if recipients:
        assert result.bounce is not None
        got = [(r.address, r.hard, r.reason) for r in result.bounce.recipients]
        assert got == recipients
    if reference is None:
        assert result.refs == ()
    else:
        assert result.refs[0] == parse_header(reference)


def test_arf_fields() -> None:
    report = parse_arf(load("arf/abuse-with-ref.eml"))
    assert report is not None
    assert report.variant == "arf"
    assert report.reported_recipients == ("buyer@example.org",)
    assert report.original_rcpt_to == ("buyer@example.org",)
    assert report.source_ip == "192.0.2.25"
    assert report.user_agent == "ExampleFBL/2.1"
    assert report.reporting_mta == "mail.example.net"
    assert report.subject == "Spring service special – 20% off"
    assert report.original_message_id == "<offer-77@acmemotors.example>"
    assert report.arrived_at is not None and report.arrived_at.hour == 9
    assert report.is_abuse
    # The header reference first, then the VERP return path (same message, same MAC here).
    assert report.refs == (RefToken(MessageId("01jnf6w3kq8r0m4t.0"), "abcdefghijklmnop"),)


def test_dmarc_report_is_not_abuse() -> None:
    report = parse_arf(load("arf/dmarc-failure.eml"))
    assert report is not None
    assert report.auth_failure == "dmarc"
    assert report.reported_domain == "acmemotors.example"
    assert not report.is_abuse


def test_bounce_fields_and_verp_reference() -> None:
    report = parse_bounce(load("dsn/postfix-user-unknown.eml"))
    assert report is not None
    assert report.variant == "rfc3464"
    assert report.reporting_mta == "mx.example.org"
    assert report.original_message_id == "<appt-9@acmemotors.example>"
    (rcpt,) = report.recipients
    assert (rcpt.kind, rcpt.status, rcpt.smtp_code) == (BounceKind.BOUNCE, "5.1.1", "550")
    assert "User unknown" in rcpt.diagnostic


def test_parsers_say_none_for_the_other_kind() -> None:
    assert parse_arf(load("dsn/postfix-user-unknown.eml")) is None
    assert parse_arf(load("dsn/out-of-office.eml")) is None
    assert parse_bounce(load("dsn/out-of-office.eml")) is None
    assert parse_bounce(load("dsn/normal-mail.eml")) is None


def test_crlf_and_cr_line_endings_read_the_same() -> None:
    raw = load("dsn/postfix-user-unknown.eml")
    expected = classify_message(raw)
    for ending in (b"\r\n", b"\r"):
        assert classify_message(raw.replace(b"\n", ending)) == expected


# Inline reports for the provider formats and rules (no Subject or From a bounce uses).
_AU_ONE_NET = b"""From: no-reply@x0.dion.ne.jp
To: sender@example.jp
Subject: Mail
MIME-Version: 1.0
Content-Type: text/plain; charset="ISO-2022-JP"

Your mail sent on: Thu, 29 Apr 2013 00:00:00 +0900
     Could not be delivered to: <kijitora@x0.dion.ne.jp>
     As their mailbox is full.
"""

_MCAFEE = b"""From: <MAILER-DAEMON@gw.example.jp>
To: sender@example.jp
Subject: Delivery Status
X-NAI-Header: Modified by McAfee Email Gateway (4500)
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

--- The following addresses had delivery problems ---
<kijitora@example.com>   (No such user)
--b
Content-Type: message/delivery-status

Reporting-MTA: dns; gw.example.jp

Original-Recipient: <kijitora@example.com>
Final-Recipient: rfc822; kijitora@example.com
Action: failed
Diagnostic-Code: smtp; 550 kijitora@example.com... No such user
--b--
"""


_FML = b"""From: list-admin@example.org
To: sender@example.jp
Subject: You sender@example.jp are not member (list ML)
X-MLServer: fml [fml 4.0.3 release (20011202/4.0.3)]

You are not a member of this mailing list <list@example.org>.
"""


_SENDMAIL_RETURNED_DEFERRED = b"""From: Mail Delivery Subsystem <MAILER-DAEMON@example.com>
To: sender@example.com
Subject: Returned mail: Deferred: Connection timed out during user open with example.org

   ----- Transcript of session follows -----
While talking to smtp.example.org:
>>> RCPT To:<kijitora@example.org>
<<< 550 <kijitora@example.org>, User Unknown
550 <kijitora@example.org>... User unknown
421 example.org (smtp)... Deferred: Connection timed out during user open with example.org
"""


@pytest.mark.parametrize(
    ("raw", "address", "hard", "reason"),
    [
        # KDDI au one net's own notice: mailbox full, soft.
        (_AU_ONE_NET, "kijitora@x0.dion.ne.jp", False, BounceReason.MAILBOX_FULL),
        # A McAfee gateway relaying "No such user" without a status code: filtered, soft.
        (_MCAFEE, "kijitora@example.com", False, BounceReason.POLICY),
        # The same report without the gateway's header is an unknown user, hard.
        (
            _MCAFEE.replace(b"X-NAI-Header: Modified by McAfee Email Gateway (4500)\n", b""),
            "kijitora@example.com",
            True,
            BounceReason.UNKNOWN_USER,
        ),
        # fml refusing a non-member's post: the list is the recipient, soft.
        (_FML, "list@example.org", False, BounceReason.POLICY),
        # Sendmail "Returned mail: Deferred: ..." gives the message back: final, not a delay.
        (_SENDMAIL_RETURNED_DEFERRED, "kijitora@example.org", True, BounceReason.UNKNOWN_USER),
    ],
    ids=["au-one-net", "mcafee-gateway", "no-gateway", "fml-not-member", "returned-deferred"],
)
def test_provider_reports(raw: bytes, address: str, hard: bool, reason: BounceReason) -> None:
    report = parse_bounce(raw)
    assert report is not None
    got = {r.address: (r.hard, r.reason) for r in report.recipients}
    assert got[address] == (hard, reason)
