"""The consent checks (pipeline/consent.py) and what decide() makes of their findings."""

from __future__ import annotations

import dataclasses
from datetime import date
from types import MappingProxyType

import pytest

from gateway.consent.rules import (
    ConsentEvent,
    ConsentRecord,
    ConsentRules,
    Interaction,
    Window,
)
from gateway.mail.message import ParsedMessage, ParseLimits, parse
from gateway.pipeline import CHECKS, run
from gateway.pipeline.base import CheckContext
from gateway.pipeline.consent import (
    consent_window_expired,
    missing_postal_address,
    missing_unsubscribe,
    no_opt_in,
)
from gateway.pipeline.decide import decide
from gateway.policy.model import CheckRule, DealerPolicy
from gateway.types import Action, DealerId

CASL = ConsentRules(
    enforce=True,
    name="CASL implied-consent",
    windows=MappingProxyType({Interaction.SERVICE: Window(months=24)}),
    require_postal_address=True,
    postal_address="12 Main St, Springfield",
)
RECENT = "recent@customer.test"
LAPSED = "lapsed@customer.test"


def msg(category: str = "", body: str = "Hello", topic: str = "") -> ParsedMessage:
    extra = f"X-Mailgate-Category: {category}\r\n" if category else ""
    extra += f"X-Mailgate-Consent-Topic: {topic}\r\n" if topic else ""
    raw = (
        "From: sales@example-motors.test\r\nTo: x@customer.test\r\nSubject: Offer\r\n"
        "Date: Mon, 01 Jun 2026 10:00:00 +0000\r\nMessage-ID: <c1@example-motors.test>\r\n"
        f"{extra}\r\n{body}\r\n"
    ).encode()
    return parse(raw, ParseLimits(max_header_bytes=102_400, max_mime_depth=100))


def service(address: str, on: date) -> ConsentRecord:
    return ConsentRecord(
        (ConsentEvent(DealerId("example-motors"), address, Interaction.SERVICE, on),)
    )


@pytest.fixture
def casl_dealer(dealer: DealerPolicy) -> DealerPolicy:
    return dataclasses.replace(dealer, consent=CASL)


@pytest.fixture
def consent_ctx(ctx: CheckContext) -> CheckContext:
    envelope = dataclasses.replace(ctx.envelope, rcpt_tos=(RECENT, "Lapsed@customer.test"))
    records = {
        RECENT: service(RECENT, date(2025, 1, 10)),
        "Lapsed@customer.test": service(LAPSED, date(2024, 3, 1)),
    }
    return dataclasses.replace(ctx, envelope=envelope, consent=MappingProxyType(records))


def test_consent_checks_are_registered_before_the_duplicate_checks() -> None:
    names = [check.__name__ for check in CHECKS]  # type: ignore[attr-defined]
    for name in ("missing_postal_address", "no_opt_in", "consent_window_expired"):
        assert names.index(name) < names.index("duplicate_message")


def test_a_lapsed_recipient_is_found_with_the_reason(
    casl_dealer: DealerPolicy, consent_ctx: CheckContext
) -> None:
    found = list(consent_window_expired(msg(), casl_dealer, consent_ctx))
    assert [(f.code, f.recipient) for f in found] == [
        ("consent-window-expired", "Lapsed@customer.test")
    ]
    assert found[0].detail == (
        "Lapsed@customer.test: outside the CASL implied-consent window: last interaction, "
        "a service repair order on 2024-03-01, ended 2026-03-01"
    )
    assert found[0].data["basis"] == "service-repair-order"
    assert list(no_opt_in(msg(), casl_dealer, consent_ctx)) == []


@pytest.mark.parametrize("category", ["transactional", "relationship"])
def test_transactional_mail_is_not_checked(
    casl_dealer: DealerPolicy, consent_ctx: CheckContext, category: str
) -> None:
    assert list(consent_window_expired(msg(category), casl_dealer, consent_ctx)) == []
    assert list(missing_postal_address(msg(category), casl_dealer, consent_ctx)) == []


def test_nothing_is_checked_without_rules_or_records(
    dealer: DealerPolicy, casl_dealer: DealerPolicy, consent_ctx: CheckContext
) -> None:
    assert list(consent_window_expired(msg(), dealer, consent_ctx)) == []
    unread = dataclasses.replace(consent_ctx, consent=None)
    assert list(consent_window_expired(msg(), casl_dealer, unread)) == []


def test_a_recipient_without_a_record_is_locked(
    casl_dealer: DealerPolicy, consent_ctx: CheckContext
) -> None:
    empty = dataclasses.replace(consent_ctx, consent=MappingProxyType({}))
    found = list(consent_window_expired(msg(), casl_dealer, empty))
    assert {f.recipient for f in found} == {RECENT, "Lapsed@customer.test"}


def test_the_postal_address_is_looked_for_in_commercial_mail(
    casl_dealer: DealerPolicy, consent_ctx: CheckContext
) -> None:
    (finding,) = missing_postal_address(msg(), casl_dealer, consent_ctx)
    assert finding.code == "missing-postal-address" and finding.recipient is None
    body = "Hello\r\n\r\nExample Motors, 12 Main St., Springfield"
    assert list(missing_postal_address(msg(body=body), casl_dealer, consent_ctx)) == []


def test_one_lapsed_recipient_of_two_is_left_out(
    casl_dealer: DealerPolicy, consent_ctx: CheckContext
) -> None:
    body = "Hello\r\n\r\n12 Main St, Springfield"
    findings = run(msg(body=body), casl_dealer, consent_ctx)
    verdict = decide(findings, casl_dealer, consent_ctx.envelope.rcpt_tos)
    assert verdict.action is Action.ACCEPT and verdict.reply is None
    assert set(verdict.dropped) == {"Lapsed@customer.test"}


def test_a_lone_lapsed_recipient_gets_550_with_the_reason(
    casl_dealer: DealerPolicy, consent_ctx: CheckContext
) -> None:
    ctx = dataclasses.replace(
        consent_ctx,
        envelope=dataclasses.replace(consent_ctx.envelope, rcpt_tos=("Lapsed@customer.test",)),
    )
    findings = run(msg(body="12 Main St, Springfield"), casl_dealer, ctx)
    verdict = decide(findings, casl_dealer, ctx.envelope.rcpt_tos)
    assert verdict.action is Action.REJECT and verdict.reply is not None
    assert (verdict.reply.code, verdict.reply.enhanced) == (550, "5.7.1")
    assert "ended 2026-03-01" in verdict.reply.text


def hold(dealer: DealerPolicy) -> DealerPolicy:
    checks = dict(dealer.checks)
    checks["consent-window-expired"] = CheckRule(Action.HOLD)
    return dataclasses.replace(dealer, checks=MappingProxyType(checks))


def test_policy_may_hold_a_lapsed_recipient_instead(
    casl_dealer: DealerPolicy, consent_ctx: CheckContext
) -> None:
    policy = hold(casl_dealer)
    findings = run(msg(body="12 Main St, Springfield"), policy, consent_ctx)
    verdict = decide(findings, policy, consent_ctx.envelope.rcpt_tos)
    assert verdict.action is Action.ACCEPT and not verdict.dropped
    assert set(verdict.held) == {"Lapsed@customer.test"}
    only = ("Lapsed@customer.test",)
    alone = decide([verdict.held[only[0]]], policy, only)
    assert alone.action is Action.HOLD and alone.reply is None and set(alone.held) == set(only)


def test_a_refusal_of_another_recipient_refuses_the_held_one_too(
    casl_dealer: DealerPolicy, consent_ctx: CheckContext
) -> None:
    policy = hold(casl_dealer)
    (lapsed,) = consent_window_expired(msg(), policy, consent_ctx)
    refused = dataclasses.replace(lapsed, code="no-opt-in", recipient=RECENT)
    held = dataclasses.replace(lapsed, code="consent-window-expired")
    verdict = decide([held, refused], policy, consent_ctx.envelope.rcpt_tos)
    assert verdict.action is Action.REJECT and not verdict.held


@pytest.mark.parametrize("rules", [ConsentRules(), CASL])
def test_the_checks_yield_nothing_for_eligible_recipients(
    dealer: DealerPolicy, consent_ctx: CheckContext, rules: ConsentRules
) -> None:
    policy = dataclasses.replace(dealer, consent=rules)
    only_recent = dataclasses.replace(
        consent_ctx, envelope=dataclasses.replace(consent_ctx.envelope, rcpt_tos=(RECENT,))
    )
    assert list(consent_window_expired(msg(), policy, only_recent)) == []
    assert list(no_opt_in(msg(), policy, only_recent)) == []


# -- B5: require_unsubscribe ----------------------------------------------------------------

UNSUBSCRIBING = dataclasses.replace(CASL, require_unsubscribe=True, require_postal_address=False)


def msg_with(extra_headers: str = "", text: str = "", html: str = "") -> ParsedMessage:
    head = (
        "From: sales@example-motors.test\r\nTo: x@customer.test\r\nSubject: Spring tires\r\n"
        "Date: Mon, 01 Jun 2026 10:00:00 +0000\r\nMessage-ID: <u1@example-motors.test>\r\n"
        "MIME-Version: 1.0\r\n" + extra_headers
    )
    if html:
        body = (
            'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            f"{text}\r\n--b\r\nContent-Type: text/html\r\n\r\n"
            f"{html}\r\n--b--\r\n"
        )
    else:
        body = (
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
            f"\r\n{text}\r\n"
        )
    return parse((head + body).encode(), ParseLimits(max_header_bytes=102_400, max_mime_depth=100))


@pytest.mark.parametrize(
    ("headers", "text", "html", "missing"),
    [
        ("", "Tires 20% off this week.", "", True),
        ("", "Tires 20% off. Unsubscribe: reply to this email.", "", True),
        ("List-Unsubscribe: <mailto:u@example-motors.test>\r\n", "Tires.", "", False),
        ("", "Tires.\r\n\r\nTo unsubscribe: https://example-motors.test/u/1", "", False),
        ("", "Tires.\r\nSe désabonner : https://example-motors.test/d/1", "", False),
        ("", "Tires.", '<p>Tires.</p><a href="https://x.test/prefs?u=1">Opt out</a>', False),
        ("", "Tires.", '<a href="https://x.test/unsubscribe/9">here</a>', False),
        ("", "Tires.", '<p>Tires.</p><a href="https://x.test/tires">Book now</a>', True),
    ],
    ids=[
        "none",
        "words-no-link",
        "list-unsubscribe",
        "text-link",
        "french",
        "html-text",
        "html-href",
        "html-other-link",
    ],
)
def test_b5_commercial_mail_needs_a_way_to_unsubscribe(
    dealer: DealerPolicy, ctx: CheckContext, headers: str, text: str, html: str, missing: bool
) -> None:
    policy = dataclasses.replace(dealer, consent=UNSUBSCRIBING)
    found = list(missing_unsubscribe(msg_with(headers, text, html), policy, ctx))
    assert [f.code for f in found] == (["missing-unsubscribe"] if missing else [])


def test_b5_not_when_exempt_not_required_or_added_by_the_gateway(
    dealer: DealerPolicy, ctx: CheckContext
) -> None:
    policy = dataclasses.replace(dealer, consent=UNSUBSCRIBING)
    bare = msg_with(text="Tires 20% off this week.")
    receipt = msg_with("X-Mailgate-Category: transactional\r\n", "Your receipt.")
    assert list(missing_unsubscribe(receipt, policy, ctx)) == []
    relaxed = dataclasses.replace(dealer, consent=CASL)
    assert list(missing_unsubscribe(bare, relaxed, ctx)) == []
    adds = dataclasses.replace(ctx, adds_unsubscribe=True)
    assert list(missing_unsubscribe(bare, policy, adds)) == []
    (finding,) = missing_unsubscribe(bare, policy, ctx)
    verdict = decide([finding], policy, ctx.envelope.rcpt_tos)
    assert verdict.action is Action.REJECT and verdict.reply is not None
    assert "missing-unsubscribe" in verdict.reply.text
