"""Hard or soft, and why: status codes and wordings (table-driven)."""

from __future__ import annotations

import pytest

from gateway.feedback.classify import classify, provider_reason
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
    # X.2.1 "Mailbox not available" is a disabled account even at RCPT TO.
    (
        F,
        "5.2.1",
        "550",
        "550 5.2.1 Mailbox not available",
        "in reply to RCPT TO command",
        R.POLICY,
        False,
    ),
    # Trend Micro InterScan's wording for a refused recipient.
    (
        F,
        None,
        None,
        "Unable to deliver message to <a@b.example>. Please check if address is correct.",
        "",
        R.UNKNOWN_USER,
        True,
    ),
    # RFC 7504 521/556 and Exim's null-MX wording: the host or domain takes no mail, hard.
    (
        F,
        "5.3.2",
        "521",
        "521 5.3.2 System not accepting network messages",
        "",
        R.DOMAIN_NOT_FOUND,
        True,
    ),
    (F, None, None, "an MX or SRV record indicated no SMTP service", "", R.DOMAIN_NOT_FOUND, True),
    # The local delivery program failed (procmail, Exim pipe): mailer error, soft.
    (
        F,
        "5.1.1",
        None,
        'procmail: Couldn\'t create "/var/mail/a" id: No such user',
        "",
        R.OTHER,
        False,
    ),
    (F, "5.0.0", None, "", "pipe to |/usr/bin/prog a@b.example: No such user", R.OTHER, False),
    # A specific X.1.1 reported with DATA as the last (pipelined) command stays hard.
    (
        F,
        "5.1.1",
        "550",
        "550 5.1.1 <a@b.example>: Recipient address rejected: User unknown SMTP command DATA",
        "",
        R.UNKNOWN_USER,
        True,
    ),
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


# (address, wording, origin, status, reason): PROVIDER_RULES, one row per emitter.
PROVIDER_CASES = [
    # au by KDDI: the recipient's own sender filter.
    ("a@ezweb.ne.jp", "550 : User unknown", "", None, R.POLICY),
    ("a@example.jp", "550 : User unknown", "", None, None),
    # Filtering gateways relaying "unknown user" without a specific code: filtered, soft.
    (
        "a@b.example",
        "550 Unknown user a@b.example",
        "X-NAI-Header: McAfee Email Gateway",
        None,
        R.POLICY,
    ),
    (
        "a@b.example",
        "550 unknown user <a@b.example>",
        "From: <MAILER-DAEMON@1.mxlogic.net>",
        None,
        R.POLICY,
    ),
    ("a@b.example", "User unknown", "X-AHMAILID: 20110429T233445", None, R.POLICY),
    ("a@b.example", "550 No such user here", "Received: by mx (MAILFOUNDRY) id 1", None, R.POLICY),
    (
        "a@b.example",
        "550 a@b.example... No such user",
        "X-Mailer: SurfControl E-mail Filter",
        "5.0.0",
        R.POLICY,
    ),
    ("a@b.example", "mailbox unavailable", "X-Mailer: Zoho Mail", None, R.POLICY),
    ("a@b.example", "Invalid user address", "Message-ID: <0.JavaMail.c@b.example>", None, R.POLICY),
    (
        "a@b.example",
        "a@b.example [User unknown]",
        "---The following addresses had delivery errors---",
        None,
        R.POLICY,
    ),
    (
        "a@b.example",
        "Recipient Not Found MSEXCH:IMC:X",
        "X-Mailer: Microsoft Exchange Server Internet Mail Connector",
        None,
        R.POLICY,
    ),
    # ... but a specific X.1.1 from the server behind the gateway names the mailbox.
    ("a@b.example", "550 5.1.1 User unknown", "X-NAI-Header: McAfee Email Gateway", "5.1.1", None),
    # Amazon SES: its label around a remote policy refusal, or a non-mailbox problem.
    (
        "a@b.example",
        "5.1.0 - Unknown address error 550-'5.7.1 <x@y.example>... Access denied'",
        "Reporting-MTA: dns; a192-79.smtp-out.amazonses.com",
        "5.0.0",
        R.POLICY,
    ),
    (
        "a@b.example",
        "5.3.0 - Other mail system problem 550-'Unknown user a@b.example'",
        "reporting-mta: a192-79.smtp-out.amazonses.com",
        "5.0.0",
        R.POLICY,
    ),
    (
        "a@b.example",
        "5.1.0 - Unknown address error 550-'5.1.1 <a@b.example>... User unknown'",
        "reporting-mta: a192-79.smtp-out.amazonses.com",
        "5.0.0",
        None,
    ),
    # Yahoo's own qmail-format notice, versus the same words relayed as an SMTP reply.
    (
        "a@yahoo.example",
        "<a@yahoo.example>: This user doesn't have a yahoo.example account",
        "",
        None,
        R.POLICY,
    ),
    (
        "a@yahoo.example",
        "554 delivery error: dd This user doesn't have a yahoo.example account",
        "",
        "5.0.0",
        None,
    ),
]


@pytest.mark.parametrize(("address", "wording", "origin", "status", "reason"), PROVIDER_CASES)
def test_provider_rules(
    address: str, wording: str, origin: str, status: str | None, reason: BounceReason | None
) -> None:
    assert provider_reason(address, wording, origin, status) == reason
