"""The pure core of intake: refusals, the copies it builds, state passed in, one MIME scan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import pytest

from gateway import replies
from gateway.duplicates.fingerprints import (
    DuplicateOptions,
    PriorSend,
    RecipientHistory,
    Recipients,
    print_message,
)
from gateway.findings import CATALOGUE
from gateway.intake.prepare import Limits, Prepared, Stamp, State, admit, prepare
from gateway.mail import mimetree
from gateway.mail.message import ParsedMessage, ParseLimits
from gateway.mail.rewrite import normalize_line_endings
from gateway.policy.model import CheckRule, DealerPolicy
from gateway.tracking import RefCodec, new_submission_id, parse_verp
from gateway.types import Action, DealerId, Envelope, MessageId, MessageState

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "messages" / "inspection"
NOW = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
LIMITS = Limits(ParseLimits(max_header_bytes=100 * 1024, max_mime_depth=50), max_hops=50)
REFS = RefCodec(b"unit-test-reference-key-0123456789")
STAMP = Stamp("mailgate.test", REFS)
SUBMISSION = new_submission_id(NOW, rand=bytes)
DEALER = DealerPolicy(
    dealer_id=DealerId("example-motors"),
    name="Example Motors",
    auth_users=frozenset({"example-crm"}),
    from_domains=frozenset({"example-motors.test"}),
    contacts=(),
    checks=MappingProxyType({c: CheckRule(k.default_action) for c, k in CATALOGUE.items()}),
)
PLAIN = (
    b"From: Example Motors <sales@example-motors.test>\r\nTo: buyer@customer.test\r\n"
    b"Bcc: secret@customer.test\r\nSubject: Your service appointment\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    b"Your car is booked for Saturday at 9.\r\n"
)


def envelope(*rcpts: str) -> Envelope:
    return Envelope(
        dealer_id=DEALER.dealer_id,
        mail_from="sales@example-motors.test",
        rcpt_tos=rcpts or ("buyer@customer.test",),
        peer="192.0.2.10",
        auth_user="example-crm",
        helo="crm.example-motors.test",
        received_at=NOW,
    )


def run(
    raw: bytes,
    env: Envelope | None = None,
    *,
    limits: Limits = LIMITS,
    stamp: Stamp = STAMP,
    state: State | None = None,
) -> Prepared:
    return prepare(raw, env or envelope(), DEALER, limits=limits, stamp=stamp, now=NOW,
                   submission_id=SUBMISSION, state=state or State())  # fmt: skip


def test_a_plain_message_becomes_one_copy_per_recipient() -> None:
    prepared = run(PLAIN, envelope("buyer@customer.test", "spouse@customer.test"))
    # No Date: (header-defect, tag by default): the gateway adds one and says so.
    assert prepared.action is Action.TAG and prepared.reply is None and not prepared.refused
    assert [m.rcpt for m in prepared.messages] == ["buyer@customer.test", "spouse@customer.test"]
    assert [m.id for m in prepared.messages] == [f"{SUBMISSION}.1", f"{SUBMISSION}.2"]
    refs = set()
    for message in prepared.messages:
        head = message.data.split(b"\r\n\r\n", 1)[0]
        assert message.state is MessageState.QUEUED
        assert message.findings == ("header-defect",)
        assert b"\r\nX-Mailgate-Findings: header-defect\r\n" in head
        assert b"Bcc:" not in head  # RFC 6409 §8.1
        assert head.startswith(b"X-Mailgate-Ref: ")  # per copy, above the shared fields
        assert b"\r\nReceived: from crm.example-motors.test ([192.0.2.10]) by mailgate.test" in head
        assert f"Message-ID: <{SUBMISSION}@mailgate.test>".encode() in head
        assert b"\r\nDate: " in head
        assert message.data.endswith(b"\r\n\r\nYour car is booked for Saturday at 9.\r\n")
        refs.add(head.split(b"\r\n", 1)[0])
    assert len(refs) == 2


def test_a_bounce_domain_gives_each_copy_its_verp_sender() -> None:
    stamp = Stamp("mailgate.test", REFS, bounce_domain="bounces.mailgate.test")
    (copy,) = run(PLAIN, stamp=stamp).messages
    assert copy.mail_from.endswith("@bounces.mailgate.test")
    verp = parse_verp(copy.mail_from)
    assert verp is not None and verp.message_id == MessageId(f"{SUBMISSION}.1")


@pytest.mark.parametrize(
    ("raw", "limits", "reply", "reason"),
    [
        (PLAIN.replace(b"\r\n", b"\n"), Limits(LIMITS.parse, 50, "reject"),
         replies.BARE_LINE_ENDING, "bare-line-ending"),
        (b"Received: from a by b; Mon, 1 Jun 2026 10:00:00 +0000\r\n" * 50 + PLAIN, LIMITS,
         replies.TOO_MANY_HOPS, "too-many-hops"),
        (b"X-Big: " + b"x " * 60_000 + b"\r\n" + PLAIN, LIMITS,
         replies.HEADER_TOO_BIG, "header-too-large"),
    ],
    ids=["bare-lf-refused", "hops", "header-size"],
)  # fmt: skip
def test_refusals_before_the_checks(raw: bytes, limits: Limits, reply: object, reason: str) -> None:
    prepared = run(raw, limits=limits)
    assert prepared.reply == reply and prepared.refused == reason
    assert prepared.action is Action.REJECT and prepared.verdict is None
    assert prepared.messages == () and prepared.findings == ()


def test_bare_line_ends_and_nul_dot_lines_are_fixed_before_anything_reads_them() -> None:
    raw = PLAIN.replace(b"\r\n", b"\n").replace(b"at 9.\n", b"at 9.\n\x00.\nMAIL FROM:<x@y>\n")
    admitted = admit(raw, LIMITS)
    assert isinstance(admitted, ParsedMessage)
    assert b"\n\x00." not in admitted.raw and b"\r\n.\r\nMAIL FROM" in admitted.raw
    (copy,) = run(raw).messages
    assert copy.data.count(b"\n") == copy.data.count(b"\r\n")
    assert b"\x00" not in copy.data


def test_an_unfoldable_header_line_is_refused_after_the_checks() -> None:
    raw = (SAMPLES / "long-header.eml").read_bytes()
    prepared = run(raw)
    assert prepared.reply == replies.HEADER_LINE_UNFOLDABLE
    assert prepared.refused == "header-unfoldable" and prepared.action is Action.REJECT
    assert prepared.verdict is not None and prepared.messages == ()


def test_a_repair_is_applied_to_every_copy() -> None:
    raw = (SAMPLES / "unknown1-html.eml").read_bytes()
    prepared = run(raw)
    assert prepared.action is Action.REPAIR and not prepared.repair_failed
    (copy,) = prepared.messages
    assert copy.state is MessageState.QUEUED and copy.findings == ("stray-attachment",)
    assert b"multipart/alternative" in copy.data and b"unknown1.txt" not in copy.data


def test_a_repair_that_does_not_fit_holds_the_message() -> None:
    # The parser sees the forwarded message as one attachment, so the check names the
    # repair; the repair looks inside it, finds a second HTML body and gives up.
    inner = (
        b"--mix1\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: a@example-motors.test\r\nContent-Type: text/html\r\n\r\n<p>inner</p>\r\n"
    )
    raw, _ = normalize_line_endings((SAMPLES / "unknown1-html.eml").read_bytes())
    raw = raw.replace(b"--mix1--", inner + b"--mix1--")
    prepared = run(raw)
    assert prepared.verdict is not None and prepared.verdict.action is Action.REPAIR
    assert prepared.repair_failed and prepared.action is Action.HOLD
    (copy,) = prepared.messages
    assert copy.state is MessageState.HELD
    assert copy.note.startswith("the repair could not be applied: ")


def test_the_recipient_history_passed_in_drops_a_duplicate() -> None:
    admitted = admit(PLAIN, LIMITS)
    assert isinstance(admitted, ParsedMessage)
    options = DuplicateOptions()
    fingerprint = print_message(admitted, options)
    earlier = PriorSend(MessageId("01HZ.1"), NOW - timedelta(hours=1), fingerprint.fingerprint,
                        fingerprint.signature, fingerprint.category)  # fmt: skip
    buyer, spouse = "buyer@customer.test", "spouse@customer.test"
    recipients = Recipients(
        options,
        MappingProxyType({buyer: buyer, spouse: spouse}),
        MappingProxyType(
            {buyer: RecipientHistory(b"k1", 1, (earlier,)), spouse: RecipientHistory(b"k2")}
        ),
    )
    prepared = run(PLAIN, envelope(buyer, spouse), state=State(recipients=recipients))
    assert prepared.duplicates is not None
    assert [m.rcpt for m in prepared.messages] == [spouse]
    assert prepared.verdict is not None and list(prepared.verdict.dropped) == [buyer]
    alone = run(PLAIN, envelope(buyer), state=State(recipients=recipients))
    assert alone.action is Action.DROP and alone.messages == ()
    assert alone.reply == replies.nothing_to_send(SUBMISSION)


def test_the_message_is_scanned_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """parse's MIME scan serves the encoding check, the repair and the long-line fix."""
    calls: list[int] = []
    real = mimetree.scan

    def counting(raw: bytes, **limits: int) -> mimetree.Structure:
        calls.append(len(raw))
        return real(raw, **limits)

    monkeypatch.setattr(mimetree, "scan", counting)
    # 8-bit and quoted-printable (the encoding check reads the spans) and a body line over
    # 998 octets (fold_long_lines re-encodes that part from the spans).
    raw = (
        b"From: Example Motors <sales@example-motors.test>\r\nSubject: Offer\r\n"
        b"Date: Mon, 1 Jun 2026 10:00:00 +0000\r\nMessage-ID: <a@example-motors.test>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit"
        b"\r\n\r\nCaf\xc3\xa9 " + b"word " * 300 + b"\r\n--b\r\nContent-Type: text/html; "
        b"charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"<p>Caf=C3=A9</p>\r\n--b--\r\n"
    )
    prepared = run(raw)
    assert prepared.messages and b"quoted-printable" in prepared.messages[0].data.split(b"--b")[1]
    assert len(calls) == 1
    calls.clear()
    assert run((SAMPLES / "unknown1-html.eml").read_bytes()).action is Action.REPAIR
    assert len(calls) == 1
