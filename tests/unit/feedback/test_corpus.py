"""The parsers against the real reports of the shared corpus (table-driven).

Expectations are read as each source's MANIFEST.md describes; ``bench/feedback_accuracy.py``
measures agreement over every file, these tests pin the cases that must never regress.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.feedback import FeedbackKind, classify_message

# The shared corpus sits beside the checkout (../shared/corpus), locally and in CI;
# MAILGATE_CORPUS names another place (a worktree further down, say).
CORPUS = Path(
    os.environ.get("MAILGATE_CORPUS") or Path(__file__).resolve().parents[4] / "shared" / "corpus"
)
SISIMAI = CORPUS / "sisimai-set-of-emails"
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not present")


def _expected(source: str) -> dict[str, Any]:
    path = CORPUS / source / "expected.json"
    if not path.is_file():
        return {}
    files: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))["files"]
    return files


def _sisimai_cases() -> list[tuple[str, dict[str, Any]]]:
    return sorted(_expected("sisimai-set-of-emails").items())


SISIMAI_CASES = _sisimai_cases()
COMPLAINTS = [(n, e) for n, e in SISIMAI_CASES if e["recipients"][0]["reason"] == "feedback"]
AUTO_REPLIES = [(n, e) for n, e in SISIMAI_CASES if e["recipients"][0]["reason"] == "vacation"]
# Bounces whose only recipient is unknown (hard) or a full mailbox (soft): the two cases
# suppression depends on most.
USER_UNKNOWN = [
    (n, e)
    for n, e in SISIMAI_CASES
    if len(e["recipients"]) == 1 and e["recipients"][0]["reason"] in ("userunknown", "hostunknown")
]
MAILBOX_FULL = [
    (n, e)
    for n, e in SISIMAI_CASES
    if len(e["recipients"]) == 1 and e["recipients"][0]["reason"] == "mailboxfull"
]


@needs_corpus
@pytest.mark.parametrize(("name", "entry"), COMPLAINTS, ids=[n for n, _ in COMPLAINTS])
def test_sisimai_feedback_type(name: str, entry: dict[str, Any]) -> None:
    result = classify_message((SISIMAI / "maildir" / "bsd" / name).read_bytes())
    assert result.kind is FeedbackKind.COMPLAINT
    assert result.complaint is not None
    assert result.complaint.feedback_type == entry["recipients"][0]["feedback_type"]


@needs_corpus
@pytest.mark.parametrize(("name", "entry"), AUTO_REPLIES, ids=[n for n, _ in AUTO_REPLIES])
def test_sisimai_auto_replies_are_other(name: str, entry: dict[str, Any]) -> None:
    result = classify_message((SISIMAI / "maildir" / "bsd" / name).read_bytes())
    assert result.kind is FeedbackKind.OTHER


# rb-issue-368-bug.eml is filed under "not" upstream but is a real "Mailbox full" bounce
# notice; reading it as a soft bounce is right for suppression, so it is left out here.
NOT_BOUNCES = [
    p
    for p in sorted((SISIMAI / "maildir" / "not").glob("*.eml"))
    if p.name != "rb-issue-368-bug.eml"
]


@needs_corpus
@pytest.mark.parametrize("path", NOT_BOUNCES, ids=lambda p: p.name)
def test_sisimai_non_bounces_are_other(path: Path) -> None:
    assert classify_message(path.read_bytes()).kind is FeedbackKind.OTHER


def _agreement(cases: list[tuple[str, dict[str, Any]]], *, hard: bool) -> float:
    agree = 0
    for name, _ in cases:
        result = classify_message((SISIMAI / "maildir" / "bsd" / name).read_bytes())
        if result.bounce is not None and result.bounce.recipients[0].hard is hard:
            agree += 1
    return agree / len(cases)


@needs_corpus
def test_sisimai_unknown_users_are_hard() -> None:
    # Measured 93% when written (the rest are Sisimai's "filtered" reading of the same
    # wordings, see bench/feedback_accuracy.py); a drop means the wordings regressed.
    assert _agreement(USER_UNKNOWN, hard=True) >= 0.92


@needs_corpus
def test_sisimai_full_mailboxes_are_soft() -> None:
    # Measured 91% when written: the misses are bounces not found at all (Japanese notices).
    assert _agreement(MAILBOX_FULL, hard=False) >= 0.90


# Upstream assertions of the smaller sources: (source, file, kind, feedback type).
UPSTREAM = [
    ("perl-email-arf", "t/messages/example0.msg", FeedbackKind.COMPLAINT, "abuse"),
    ("perl-email-arf", "t/messages/example1.msg", FeedbackKind.COMPLAINT, "opt-out"),
    ("perl-email-arf", "t/messages/example2.msg", FeedbackKind.COMPLAINT, "abuse"),
    ("flanker", "tests/fixtures/messages/complaints/aol.eml", FeedbackKind.COMPLAINT, "abuse"),
    ("flanker", "tests/fixtures/messages/complaints/yahoo.eml", FeedbackKind.COMPLAINT, "abuse"),
    ("flanker", "tests/fixtures/messages/bounce/zed.eml", FeedbackKind.BOUNCE, None),
    ("flanker", "tests/fixtures/messages/bounce/office365.eml", FeedbackKind.BOUNCE, None),
    ("flanker", "tests/fixtures/messages/bounce/delayed.eml", FeedbackKind.BOUNCE, None),
    ("flanker", "tests/fixtures/messages/signed.eml", FeedbackKind.OTHER, None),
    ("node-mailparser", "test/fixtures/delivery-status.eml", FeedbackKind.BOUNCE, None),
    (
        "ruby-mail-fixtures",
        "spec/fixtures/emails/multipart_report_emails/report_422.eml",
        FeedbackKind.DELAY,
        None,
    ),
    (
        "ruby-mail-fixtures",
        "spec/fixtures/emails/multipart_report_emails/report_530.eml",
        FeedbackKind.BOUNCE,
        None,
    ),
    ("php-bounce-handler", "eml/fbl-hotmail.txt", FeedbackKind.COMPLAINT, "abuse"),
    ("php-bounce-handler", "eml/fbl-comcast.txt", FeedbackKind.COMPLAINT, "abuse"),
    ("php-bounce-handler", "eml/fbl-aol.txt", FeedbackKind.COMPLAINT, "abuse"),
    ("php-bounce-handler", "eml/fbl-yahoo.txt", FeedbackKind.COMPLAINT, "abuse"),
]


@needs_corpus
@pytest.mark.parametrize(
    ("source", "name", "kind", "feedback_type"),
    UPSTREAM,
    ids=[f"{s}/{Path(n).name}" for s, n, _, _ in UPSTREAM],
)
def test_upstream_expectation(
    source: str, name: str, kind: FeedbackKind, feedback_type: str | None
) -> None:
    result = classify_message((CORPUS / source / name).read_bytes())
    assert result.kind is kind
    if feedback_type is not None:
        assert result.complaint is not None
        assert result.complaint.feedback_type == feedback_type


@needs_corpus
def test_parsedmarc_failure_and_aggregate_reports() -> None:
    for name, entry in _expected("parsedmarc").items():
        result = classify_message((CORPUS / "parsedmarc" / name).read_bytes())
        if entry["report_type"] == "failure":
            assert result.complaint is not None, name
            assert result.complaint.feedback_type == "auth-failure", name
        else:
            assert result.kind is FeedbackKind.OTHER, name
    exim = CORPUS / "parsedmarc" / "samples/failure/exim_plain_text_only_no_arf_part.eml"
    report = classify_message(exim.read_bytes()).complaint
    assert report is not None and report.source_ip == "203.0.113.68"


@needs_corpus
def test_ruby_dsn_fields() -> None:
    path = CORPUS / "ruby-mail-fixtures/spec/fixtures/emails/multipart_report_emails/report_422.eml"
    report = classify_message(path.read_bytes()).bounce
    assert report is not None
    (rcpt,) = report.recipients
    assert (rcpt.address, rcpt.status, rcpt.hard) == ("fraser@oooooooo.com.au", "4.2.2", False)


def _every_corpus_message() -> list[Path]:
    roots = ["sisimai-set-of-emails", "perl-mail-deliverystatus-bounceparser", "php-bounce-handler"]
    roots += ["flanker", "parsedmarc", "node-mailparser", "ruby-mail-fixtures"]
    paths = [p for r in roots for p in sorted((CORPUS / r).rglob("*")) if p.is_file()]
    return [p for p in paths if p.suffix not in (".json", ".csv", ".md") and p.stat().st_size]


@needs_corpus
def test_every_corpus_file_parses_quickly() -> None:
    slowest = 0.0
    for path in _every_corpus_message():
        started = time.perf_counter()
        classify_message(path.read_bytes())  # never raises
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 2.0
