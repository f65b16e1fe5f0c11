"""One sample per class of bounce the parsers once read wrong (issue 18), table-driven.

Each row: the sample in ``tests/data/dsn/classes/``, then what must come out for every
recipient: address as reported, hard flag, kind, reason, whether the report itself ties
the failure to that address (``confirmed``) and the RFC 3464 Original-Recipient.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from gateway.feedback import BounceKind, BounceReason, FeedbackKind, classify_message

DATA = Path(__file__).resolve().parents[2] / "data" / "dsn" / "classes"
BOUNCE, DELAY = BounceKind.BOUNCE, BounceKind.DELAY
R = BounceReason
PAT = "pat@customers.example"


class Want(NamedTuple):
    address: str
    hard: bool
    kind: BounceKind
    reason: BounceReason
    confirmed: bool = True
    original: str | None = None
    written: str | None = None


CASES: list[tuple[str, list[Want]]] = [
    # X.400/Exchange "SMTP=" prefix; the summary's "To:" (a list) is not a recipient.
    ("x400-smtp-prefix.eml", [Want(PAT, True, BOUNCE, R.UNKNOWN_USER)]),
    ("stray-quote.eml", [Want(PAT, True, BOUNCE, R.UNKNOWN_USER)]),
    # A quoted "Message-Id: <...@host>" is not an address.
    ("message-id-in-quote.eml", [Want(PAT, True, BOUNCE, R.UNKNOWN_USER)]),
    # Nobody named and the original went to a list: the list is not offered, nothing hard.
    ("names-nobody-list.eml", [Want("", False, BOUNCE, R.UNKNOWN_USER, confirmed=False)]),
    # Forwarded to a mailbox that does not exist: both reported, the original kept.
    (
        "original-recipient.eml",
        [Want("pat.old@forward.example", True, BOUNCE, R.UNKNOWN_USER, original=PAT)],
    ),
    # A delivery-status part with per-message fields only: the address is in the text.
    ("dsn-without-recipient-fields.eml", [Want(PAT, True, BOUNCE, R.UNKNOWN_USER)]),
    # Someone forwarded the bounce they got as an attachment.
    ("forwarded-dsn.eml", [Want(PAT, True, BOUNCE, R.UNKNOWN_USER)]),
    # Unencoded GB2312 text: "your mail could not be delivered ... user does not exist".
    ("gb2312-raw-8bit.eml", [Want(PAT, True, BOUNCE, R.UNKNOWN_USER)]),
    # Final vs delay: a "Warning" title or "has NOT been delivered" is no delay; saying
    # that delivery attempts continue is.
    ("warning-subject-user-unknown.eml", [Want(PAT, True, BOUNCE, R.UNKNOWN_USER)]),
    ("has-not-been-delivered-final.eml", [Want(PAT, True, BOUNCE, R.UNKNOWN_USER)]),
    ("further-attempts-delay.eml", [Want(PAT, False, DELAY, R.TEMPORARY)]),
    # Lotus Domino's unknown user ("not listed in ... Address Book"), not a block list.
    ("domino-not-listed.eml", [Want(PAT, True, BOUNCE, R.UNKNOWN_USER)]),
    ("no-account-here.eml", [Want(PAT, True, BOUNCE, R.UNKNOWN_USER)]),
    # "Recipient address rejected" is unknown-user wording; the reason given is a quota.
    ("over-quota-under-unknown-label.eml", [Want(PAT, False, BOUNCE, R.MAILBOX_FULL)]),
    # Disabled accounts stay soft (see gateway.feedback.classify): providers re-enable
    # and recycle them, and X.2.1 says the mailbox exists.
    ("disabled-account.eml", [Want(PAT, False, BOUNCE, R.OTHER)]),
    # Screen names (AOL) and bare local parts listed under "the following recipients:":
    # reported as written, unconfirmed, never hard; only the sent log can complete them.
    (
        "screen-name-list.eml",
        [
            Want("patcustomer", False, BOUNCE, R.OTHER, confirmed=False),
            Want("lee.member", False, BOUNCE, R.OTHER, confirmed=False),
        ],
    ),
    (
        "bare-local-part-directory.eml",
        [Want("pat.customer", False, BOUNCE, R.OTHER, confirmed=False)],
    ),
    # The returned original's To: holds one address with that local part: the candidate
    # address, still unconfirmed (the original's header never makes a hard flag).
    (
        "bare-local-part-original.eml",
        [
            Want(
                "pat.customer@customers.example",
                False,
                BOUNCE,
                R.UNKNOWN_USER,
                confirmed=False,
                written="pat.customer",
            )
        ],
    ),
    # "Final-Recipient: LOCAL; pat.customer" names a local user without the domain.
    (
        "dsn-local-recipient.eml",
        [Want("pat.customer", False, BOUNCE, R.UNKNOWN_USER, confirmed=False)],
    ),
    # A directory gateway's notice: the failed address has the reason in its sentence;
    # the format example and the contact in the same notice are not recipients, and the
    # original quoted after "Original message as received is as follows:" is not read.
    ("directory-example-address.eml", [Want(PAT, True, BOUNCE, R.UNKNOWN_USER)]),
    # "The following mail has been returned because it encountered an error": final.
    ("returned-processing-error.eml", [Want(PAT, False, BOUNCE, R.OTHER)]),
    # Unencoded GB2312 subject and text, "mail transmission failed" / "could not be sent".
    ("zh-raw-send-failed.eml", [Want(PAT, False, BOUNCE, R.OTHER)]),
    # "Unknown user" relayed by a filtering gateway reads like the same reply in a
    # Sendmail transcript: hard at RCPT TO, soft after DATA or in the gateway's own
    # words (no code, no stage: its own filter may have said it).
    ("gateway-unknown-own-words.eml", [Want(PAT, False, BOUNCE, R.POLICY)]),
    ("gateway-relayed-rcpt.eml", [Want(PAT, True, BOUNCE, R.UNKNOWN_USER)]),
    ("sendmail-transcript-rcpt.eml", [Want(PAT, True, BOUNCE, R.UNKNOWN_USER)]),
    ("sendmail-transcript-data.eml", [Want(PAT, False, BOUNCE, R.POLICY)]),
    # A Final-Recipient whose domain is malformed is still the address that failed.
    (
        "dsn-malformed-domain.eml",
        [Want("pat@#customers.example", True, BOUNCE, R.DOMAIN_NOT_FOUND)],
    ),
]


@pytest.mark.parametrize(("name", "want"), CASES, ids=[n for n, _ in CASES])
def test_bounce_class(name: str, want: list[Want]) -> None:
    result = classify_message((DATA / name).read_bytes())
    assert result.kind is (FeedbackKind.BOUNCE if want[0].kind is BOUNCE else FeedbackKind.DELAY)
    assert result.bounce is not None
    got = [
        Want(r.address, r.hard, r.kind, r.reason, r.confirmed, r.original_recipient, r.written)
        for r in result.bounce.recipients
    ]
    assert got == want


def test_unconfirmed_recipients_are_never_hard() -> None:
    for path in sorted(DATA.glob("*.eml")):
        report = classify_message(path.read_bytes()).bounce
        assert report is not None, path.name
        assert not any(r.hard and not r.confirmed for r in report.recipients), path.name


@pytest.mark.parametrize(
    "entries",
    [
        "  Remote-MTA:  dns; mx.customers.example\r\n",  # a field label, not a name
        "  Please check the address and try again.\r\n",  # prose, words one space apart
    ],
)
def test_lines_under_a_recipient_list_that_are_not_names(entries: str) -> None:
    raw = (
        "From: MAILER-DAEMON@mx.customers.example\r\nSubject: Undeliverable mail\r\n\r\n"
        f"Your message could not be delivered to the following recipients:\r\n{entries}"
    ).encode()
    report = classify_message(raw).bounce
    assert report is not None
    assert [r.address for r in report.recipients] == [""]
    assert not report.recipients[0].hard
