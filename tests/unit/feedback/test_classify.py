"""Hard or soft, and why: status codes and wordings (table-driven)."""

from __future__ import annotations

import pytest

from gateway.feedback.classify import classify
from gateway.feedback.reports import BounceKind, BounceReason

F, D = BounceKind.BOUNCE, BounceKind.DELAY
R = BounceReason

# (kind, status, smtp code, diagnostic, context, reason, hard)
CASES = [
    (
        F,
        "5.1.1",
        "550",
        "5.1.1 <a@b.example>: Recipient address rejected: User unknown",
        "",
        R.UNKNOWN_USER,
        True,
    ),
    (F, "5.1.2", "550", "Host or domain name not found", "", R.DOMAIN_NOT_FOUND, True),
    (F, "5.1.10", "550", "Recipient domain has a null MX", "", R.DOMAIN_NOT_FOUND, True),
    (F, "5.2.2", "552", "Mailbox full", "", R.MAILBOX_FULL, False),
    (F, "5.1.1", "550", "mailbox is full", "", R.MAILBOX_FULL, False),
    (
        F,
        "5.7.1",
        "554",
        "Service unavailable; client host blocked using zen.spamhaus.org",
        "",
        R.BLOCKED_SPAM,
        False,
    ),
    (F, "5.7.1", "550", "Delivery not authorized", "", R.POLICY, False),
    (F, "5.1.8", "553", "Sender address rejected: Domain not found", "", R.POLICY, False),
    (F, "5.0.0", "550", "", "The address couldn't be found", R.UNKNOWN_USER, True),
    (F, "5.0.0", "550", "Unknown user", "(in reply to end of DATA command)", R.POLICY, False),
    (F, "4.2.2", "452", "Mailbox full", "", R.MAILBOX_FULL, False),
    (F, "4.1.1", "450", "User unknown in virtual alias table", "", R.UNKNOWN_USER, False),
    (D, "4.4.7", "451", "Timeout waiting for input", "", R.TEMPORARY, False),
    (F, "5.1.1", "550", "has sent to too many recipients this hour", "", R.POLICY, False),
    (F, "5.4.4", "550", "Host not found, try again", "", R.OTHER, False),
    (F, None, None, "", "", R.OTHER, False),
    (F, "5.1.1", None, "", "our anti-spam policy", R.UNKNOWN_USER, True),
    # X.2.1 "User Unknown" from a milter or filter (PowerMTA, Messaging Server): disabled
    # or filtered mailbox, soft; the same reply at RCPT TO does name an unknown user.
    (F, "5.2.1", "550", "550 5.2.1 <a@b.example>... User Unknown", "", R.POLICY, False),
    (
        F,
        "5.2.1",
        "550",
        "after RCPT TO:<a@b.example>: 550 5.2.1 <a@b.example>... User Unknown",
        "",
        R.UNKNOWN_USER,
        True,
    ),
    # "User unknown" canned under 5.7.1 (Messaging Server access mapping): policy, soft;
    # a lookup worded otherwise under 5.7.1 stays hard.
    (F, "5.7.1", "550", "550 5.7.1 550 User Unknown: a@b.example", "", R.POLICY, False),
    (F, "5.7.1", "550", "550 5.7.1 No such user c18si2365148", "", R.UNKNOWN_USER, True),
]


@pytest.mark.parametrize(
    ("kind", "status", "code", "diagnostic", "context", "reason", "hard"),
    CASES,
    ids=[f"{c[1]}-{c[5].value}" for c in CASES],
)
def test_classify(
    kind: BounceKind,
    status: str | None,
    code: str | None,
    diagnostic: str,
    context: str,
    reason: BounceReason,
    hard: bool,
) -> None:
    assert classify(kind, status, code, diagnostic, context) == (reason, hard)
