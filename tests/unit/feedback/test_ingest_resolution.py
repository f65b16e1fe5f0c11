"""Whom a bounce is about: the sent log's recipient, through a verified reference.

Table-driven over bounces that name the recipient well, badly or not at all, ingested by
the real ``FeedbackIngest`` over a real store (SQLite, and PostgreSQL where reachable):
the copy's X-Mailgate-Ref names the message, the sent log its recipient, and that address
(never another one the text mentions) is what gets suppressed.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.feedback.ingest import FeedbackIngest, Untrusted, Via
from gateway.metrics import Metrics
from gateway.policy.store import PolicyStore
from gateway.reputation.records import EventKind
from gateway.reputation.suspensions import Suspensions
from gateway.storage.base import Storage
from gateway.tracking import RefCodec, message_id_for, new_submission_id
from gateway.types import DealerId, NewMessage
from tests.contract.conftest import Backend, SqliteBackend, postgres_backend
from tests.shipped import copy_shipped

# The shipped policy files, copied once for this module (never the checkout's live directory).
POLICIES = copy_shipped(Path(tempfile.mkdtemp(prefix="mailgate-policies-")) / "policies")
DEALER = DealerId("example-motors")
RCPT = "pat.customer@customers.example"
KEY = b"k" * 32


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    backend: Backend
    if request.param == "sqlite":
        backend = SqliteBackend(tmp_path / "mailgate.db")
    else:
        backend = await postgres_backend()
    try:
        yield await backend.open()
    finally:
        await backend.cleanup()


@dataclass(frozen=True, slots=True)
class Sent:
    ingest: FeedbackIngest
    storage: Storage
    clock: FakeClock
    ref: str  # the X-Mailgate-Ref header value of the copy sent to RCPT


async def _sent(storage: Storage) -> Sent:
    clock = FakeClock()
    refs = RefCodec(KEY)
    message_id = message_id_for(new_submission_id(clock.now()), 0)
    await storage.enqueue(
        [
            NewMessage(
                id=message_id,
                dealer_id=DEALER,
                mail_from="bounces@mailgate.test",
                rcpt=RCPT,
                data=b"Subject: Your service appointment\r\n\r\nSee you on Monday.\r\n",
                received_at=clock.now(),
            )
        ]
    )
    policies = PolicyStore(POLICIES)
    metrics = Metrics()
    suspensions = Suspensions(storage, policies, clock, metrics)
    ingest = FeedbackIngest(storage, refs, policies, clock, metrics, suspensions)
    return Sent(ingest, storage, clock, refs.header_value(message_id, DEALER, RCPT))


def _original(ref: str, to: str, *, list_mail: bool = False) -> str:
    list_headers = "List-Id: <owners.lists.example>\r\nPrecedence: list\r\n" if list_mail else ""
    return (
        "--b1\r\nContent-Type: message/rfc822\r\n\r\n"
        f"From: Service <service@example-motors.example>\r\nTo: {to}\r\n"
        f"Subject: Your service appointment\r\nX-Mailgate-Ref: {ref}\r\n{list_headers}"
        "\r\nSee you on Monday.\r\n\r\n--b1--\r\n"
    )


def _notice(text: str, original: str, *, dsn: str = "") -> bytes:
    report = f"--b1\r\nContent-Type: message/delivery-status\r\n\r\n{dsn}\r\n" if dsn else ""
    kind = "multipart/report; report-type=delivery-status" if dsn else "multipart/mixed"
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.customers.example>\r\n"
        "To: bounces@mailgate.test\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f'MIME-Version: 1.0\r\nContent-Type: {kind}; boundary="b1"\r\n\r\n'
        f"--b1\r\nContent-Type: text/plain\r\n\r\n{text}\r\n{report}{original}"
    ).encode()


def _dsn(final: str, original: str | None, status: str, diagnostic: str) -> str:
    orig = f"Original-Recipient: rfc822; {original}\r\n" if original else ""
    return (
        "Reporting-MTA: dns; mx.customers.example\r\n\r\n"
        f"{orig}Final-Recipient: rfc822; {final}\r\nAction: failed\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {diagnostic}\r\n"
    )


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    build: str  # which report to build, see _report
    kind: EventKind | None  # None: nothing recorded
    reported_as: str | None = None  # the parsed address when it is not the resolved one


CASES = [
    Case("dsn-names-the-address", "direct", EventKind.HARD_BOUNCE),
    # RFC 3464: forwarded to another mailbox that does not exist; we sent to the original.
    Case(
        "forwarded-original-recipient", "forwarded", EventKind.HARD_BOUNCE, "old@elsewhere.example"
    ),
    # Exchange's X.400 form of the same address.
    Case("x400-smtp-prefix", "x400", EventKind.HARD_BOUNCE),
    # "User unknown", nobody named, the original's To: is our recipient: the sent log
    # confirms the candidate.
    Case("names-nobody-original-to", "nobody", EventKind.HARD_BOUNCE),
    # Nobody named and the original went through a list: the list is not offered, the
    # sent log still says whom the copy was for.
    Case("names-nobody-list-mail", "nobody-list", EventKind.HARD_BOUNCE, "nobody"),
    # A full mailbox named by nobody: resolved, soft.
    Case("names-nobody-mailbox-full", "nobody-full", EventKind.SOFT_BOUNCE, "nobody"),
    # The report names someone else: our token never suppresses them, nor our recipient.
    Case("names-another-address", "other", None),
]


def _report(build: str, ref: str) -> bytes:
    unknown = "550 5.1.1 {0}: Recipient address rejected: User unknown"
    if build == "direct":
        dsn = _dsn(RCPT, None, "5.1.1", unknown.format(f"<{RCPT}>"))
        return _notice("Delivery failed.", _original(ref, RCPT), dsn=dsn)
    if build == "forwarded":
        old = "old@elsewhere.example"
        dsn = _dsn(old, RCPT, "5.1.1", unknown.format(f"<{old}>"))
        return _notice("Delivery failed.", _original(ref, RCPT), dsn=dsn)
    if build == "x400":
        text = (
            "Your message did not reach some or all of the intended recipients.\r\n\r\n"
            f"  c=US;a= ;p=CUSTOMERS;o=Mail;dda:SMTP={RCPT}; on Mon, 5 Jan 2026\r\n"
            "    The recipient name is not recognized (user unknown)\r\n"
        )
        return _notice(text, _original(ref, RCPT))
    if build in ("nobody", "nobody-list"):
        text = "Your message could not be delivered.\r\nReason: 550 User unknown.\r\n"
        to = RCPT if build == "nobody" else "owners@lists.example"
        return _notice(text, _original(ref, to, list_mail=build == "nobody-list"))
    if build == "nobody-full":
        text = "Your message could not be delivered: mailbox full (quota exceeded).\r\n"
        return _notice(text, _original(ref, "owners@lists.example", list_mail=True))
    assert build == "other"
    other = "someone.else@customers.example"
    dsn = _dsn(other, None, "5.1.1", unknown.format(f"<{other}>"))
    return _notice("Delivery failed.", _original(ref, RCPT), dsn=dsn)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_the_sent_log_says_whom_a_bounce_is_about(store: Storage, case: Case) -> None:
    sent = await _sent(store)
    result = await sent.ingest.ingest(_report(case.build, sent.ref), Via("import", source="t"))
    suppressed = await store.find_suppression(DEALER, RCPT, sent.clock.now())
    if case.kind is None:
        assert result.recorded == ()
        assert result.refused == (Untrusted.RECIPIENT_MISMATCH,)
        assert suppressed is None
        other = await store.find_suppression(
            DEALER, "someone.else@customers.example", sent.clock.now()
        )
        assert other is None
        return
    (event,) = result.recorded
    assert (event.kind, event.recipient) == (case.kind, RCPT)
    assert (suppressed is not None) is (case.kind is EventKind.HARD_BOUNCE)
    if case.reported_as is None:
        assert "reported as" not in event.detail
    else:
        assert f"(reported as {case.reported_as})" in event.detail
