"""Checking a message before it is sent: the gateway's verdict, explained and located."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import pytest

from gateway.findings import CATALOGUE, REFUSALS
from gateway.intake.prepare import Limits, Stamp, prepare
from gateway.mail.message import ParseLimits
from gateway.policy.model import CheckRule, DealerPolicy
from gateway.policy.options import GmailClippingOptions
from gateway.preflight.core import RECIPIENT, Submission, check, template_message
from gateway.tracking import RefCodec, new_submission_id
from gateway.types import Action, DealerId, Envelope

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "messages" / "inspection"
NOW = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
LIMITS = Limits(ParseLimits(max_header_bytes=100 * 1024, max_mime_depth=50), max_hops=50)
DEALER = DealerPolicy(
    dealer_id=DealerId("example-motors"),
    name="Example Motors",
    auth_users=frozenset({"example-crm"}),
    from_domains=frozenset({"example-motors.test"}),
    contacts=(),
    checks=MappingProxyType({c: CheckRule(k.default_action) for c, k in CATALOGUE.items()}),
)
TEMPLATE = (
    "<!DOCTYPE html><html><head><title>Offer</title><style>p { color: #333 }</style></head>"
    "<body><p>Dear {FirstName},</p><p>Your {{vehicle_model}} is ready for its service.</p>"
    "<p><a href='https://example-motors.test/book'>Book now</a></p></body></html>"
)


def test_template_fields_are_found_with_their_place_and_context() -> None:
    checked = check(
        Submission(html=TEMPLATE, subject="Service offer for [FIRST NAME]"),
        DEALER,
        limits=LIMITS,
        now=NOW,
    )
    codes = [item.finding.code for item in checked.items]
    assert "unfilled-merge-field" in codes and "html-without-text" in codes
    field = next(i for i in checked.items if i.finding.code == "unfilled-merge-field")
    assert field.action is Action.TAG and field.severity == "warning"
    assert field.why == "The message contains a template placeholder that was never filled in."
    assert field.fix.startswith("Check the merge fields")
    by_text = {loc.text: loc for loc in field.locations}
    assert set(by_text) == {"[FIRST NAME]", "{FirstName}", "{{vehicle_model}}"}
    assert by_text["[FIRST NAME]"].where == "subject"
    assert by_text["[FIRST NAME]"].before == "Service offer for "
    html = by_text["{FirstName}"]
    assert html.where == "HTML" and html.kind == "field" and html.line == 1
    assert html.before.endswith("<p>Dear ") and html.after.startswith(",</p>")
    assert checked.action is Action.TAG
    assert checked.verdict == "deliver it with an X-Mailgate-Findings header"


def test_the_verdict_is_the_one_intake_gives() -> None:
    raw = template_message(TEMPLATE, "Hello", DEALER, NOW)
    checked = check(Submission(raw=raw), DEALER, limits=LIMITS, now=NOW)
    env = Envelope(DEALER.dealer_id, "noreply@example-motors.test", (RECIPIENT,), "127.0.0.1",
                   "", "crm", NOW)  # fmt: skip
    prepared = prepare(raw, env, DEALER, limits=LIMITS, stamp=Stamp("h", RefCodec(b"k" * 32)),
                       now=NOW, submission_id=new_submission_id(NOW))  # fmt: skip
    assert checked.action is prepared.action
    assert [i.finding for i in checked.items] == list(prepared.findings)


def test_with_text_the_plain_version_is_sent_too() -> None:
    checked = check(Submission(html=TEMPLATE, with_text=True), DEALER, limits=LIMITS, now=NOW)
    codes = {item.finding.code for item in checked.items}
    assert "html-without-text" not in codes and "unfilled-merge-field" in codes


def test_unknown1_attachment_is_named_with_what_the_gateway_does() -> None:
    raw = (SAMPLES / "unknown1-html.eml").read_bytes()
    checked = check(Submission(raw=raw, name="unknown1-html.eml"), DEALER, limits=LIMITS, now=NOW)
    stray = next(i for i in checked.items if i.finding.code == "stray-attachment")
    assert stray.action is Action.REPAIR
    (loc,) = stray.locations
    assert loc.kind == "attachment" and loc.text == "unknown1.txt"
    assert "send its HTML as the body" in loc.note
    assert checked.action is Action.REPAIR and checked.name == "unknown1-html.eml"


def test_dangerous_attachment_would_hold_the_message() -> None:
    raw = (SAMPLES / "double-extension.eml").read_bytes()
    checked = check(Submission(raw=raw), DEALER, limits=LIMITS, now=NOW)
    assert checked.action is Action.HOLD
    held = next(i for i in checked.items if i.finding.code == "dangerous-attachment")
    assert held.severity == "error"
    assert held.locations[0].kind == "attachment"
    assert held.locations[0].note == "the gateway would hold the message because of it"


def test_clipping_point_is_the_byte_offset_gmail_cuts_at() -> None:
    filler = "<p>" + "Spring service offers for every model. " * 60 + "</p>\n"
    html = (
        "<html><body>" + filler * 60 + "<p><a href='https://example-motors.test/unsub'>"
        "Unsubscribe</a></p></body></html>"
    )
    checked = check(Submission(html=html, subject="Offers"), DEALER, limits=LIMITS, now=NOW)
    clip = next(i for i in checked.items if i.finding.code == "gmail-clipping")
    (loc,) = clip.locations
    assert loc.kind == "clipping" and loc.offset == GmailClippingOptions().max_bytes
    assert loc.line is not None and loc.line > 1
    assert "1 link after this point, the unsubscribe link among them" in loc.note
    # the excerpt sits on the clipping point: the text just before and just after it
    squashed = " ".join(html.split())
    joined = (loc.before + loc.after).replace("…", "")
    assert len(joined) > 100 and joined.strip() in squashed


def test_a_message_over_the_size_limit_is_refused_as_the_listener_refuses_it() -> None:
    checked = check(Submission(html="<p>" + "x" * 5000), DEALER, limits=LIMITS, now=NOW,
                    max_bytes=1000)  # fmt: skip
    assert checked.action is Action.REJECT and checked.refused == "message-too-big"
    assert checked.refusal.startswith("552 5.3.4")
    assert checked.refusal_why == "The message is larger than the gateway accepts."
    assert checked.refusal_fix


def test_every_refusal_before_the_checks_has_words() -> None:
    head = b"From: a@example-motors.test\r\nSubject: x\r\n"
    deep = head + b"Received: x\r\n" * 60 + b"\r\nhi\r\n"
    checked = check(Submission(raw=deep), DEALER, limits=LIMITS, now=NOW)
    assert checked.refused == "too-many-hops"
    assert checked.refusal_why.startswith("The message has passed through too many")
    for code in ("message-too-big", "bare-line-ending", "header-too-large", "mime-too-deep",
                 "too-many-parts", "too-many-hops", "header-unfoldable", "check",
                 "checks-timeout"):  # fmt: skip
        assert REFUSALS[code].summary and REFUSALS[code].advice, code


def test_every_finding_code_has_why_and_fix() -> None:
    for code, kind in CATALOGUE.items():
        assert kind.summary and kind.advice, code


@pytest.mark.parametrize("subject", ["Hi\r\nBcc: victim@example.org", "\udcff odd", "é" * 300])
def test_a_subject_cannot_add_a_header(subject: str) -> None:
    raw = template_message("<p>Hello</p>", subject, DEALER, NOW)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in head
    checked = check(Submission(html="<p>Hello</p>", subject=subject), DEALER, limits=LIMITS,
                    now=NOW)  # fmt: skip
    assert checked.action <= Action.TAG


def test_link_and_header_defects_are_located() -> None:
    raw = (SAMPLES / "link-javascript.eml").read_bytes()
    checked = check(Submission(raw=raw), DEALER, limits=LIMITS, now=NOW)
    link = next(i for i in checked.items if i.finding.code == "link-defect")
    assert link.locations and link.locations[0].kind == "link"
    assert "javascript:" in link.locations[0].text
    other = dataclasses.replace(DEALER, from_domains=frozenset({"elsewhere.test"}))
    refused = check(Submission(raw=raw), other, limits=LIMITS, now=NOW)
    assert refused.action is Action.REJECT
    wrong = next(i for i in refused.items if i.finding.code == "from-domain-not-allowed")
    assert wrong.locations[0].kind == "header" and wrong.locations[0].text.startswith("From:")
