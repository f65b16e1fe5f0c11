"""The consent rules (gateway/consent/rules.py) under each shipped preset, at its boundaries.

The rules come from the real files in policies/presets/, loaded by the real loader, so a
change to a preset shows up here. Time is a FakeClock; a window includes its last day.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.consent.rules import (
    NO_OPT_IN,
    WINDOW_EXPIRED,
    ConsentEvent,
    ConsentRecord,
    ConsentRules,
    Interaction,
    Preference,
    Topic,
    Window,
    collapse,
    evaluate,
    explain,
    message_topic,
    postal_address_present,
)
from gateway.errors import PolicyError
from gateway.policy.loader import load_policy_set
from gateway.types import DealerId
from tests.shipped import copy_shipped

DEALER = DealerId("acme-motors")
ADDRESS = "john@customer.test"

RulesFor = Callable[..., ConsentRules]


@pytest.fixture
def rules_for(tmp_path: Path) -> RulesFor:
    """Load a dealer using ``preset`` with ``extra`` TOML appended to its file."""

    def load(preset: str, extra: str = "") -> ConsentRules:
        root = tmp_path / preset
        shutil.rmtree(root, ignore_errors=True)
        copy_shipped(root)
        (root / "dealers" / "example-motors.toml").unlink()
        (root / "dealers" / "acme-motors.toml").write_text(
            f'dealer_id = "acme-motors"\nname = "Acme Motors"\npreset = "{preset}"\n'
            'auth_users = ["acme-crm"]\nfrom_domains = ["acme.test"]\n' + extra
        )
        policy = load_policy_set(root).dealer("acme-motors")
        assert policy is not None
        return policy.consent

    return load


def ev(kind: Interaction, on: str, last_payment: str | None = None, **kw: str) -> ConsentEvent:
    paid = date.fromisoformat(last_payment) if last_payment else None
    return ConsentEvent(DEALER, ADDRESS, kind, date.fromisoformat(on), paid, **kw)


def pref(topic: Topic, granted: bool, on: str) -> Preference:
    at = datetime.fromisoformat(on).replace(hour=12, tzinfo=UTC)
    return Preference(DEALER, ADDRESS, topic, granted, at, source="web form")


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(hour=15, tzinfo=UTC)


def record(*items: ConsentEvent | Preference) -> ConsentRecord:
    events = tuple(i for i in items if isinstance(i, ConsentEvent))
    prefs = tuple(i for i in items if isinstance(i, Preference))
    return ConsentRecord(events, prefs)


# -- windows, each at its last day and the day after ---------------------------------------

BOUNDARIES = [
    # preset, interaction, its date, last payment, last eligible day
    ("casl", Interaction.INQUIRY, "2025-03-01", None, "2025-09-01"),
    ("casl", Interaction.SHOWROOM, "2025-08-31", None, "2026-02-28"),
    ("casl", Interaction.EMAIL_REPLY, "2025-01-15", None, "2025-07-15"),
    ("casl", Interaction.SALE_CASH, "2024-02-29", None, "2026-02-28"),
    ("casl", Interaction.SERVICE, "2024-03-01", None, "2026-03-01"),
    ("casl", Interaction.SALE_FINANCE, "2019-06-10", "2024-05-31", "2026-05-31"),
    ("crm-windows", Interaction.SALE_FINANCE, "2020-01-10", "2025-01-20", "2026-02-20"),
    ("crm-windows", Interaction.SALE_FINANCE, "2025-01-20", None, "2026-02-20"),
    ("crm-windows", Interaction.SALE_CASH, "2024-01-31", None, "2026-02-28"),
    ("crm-windows", Interaction.SERVICE, "2024-01-05", None, "2026-02-05"),
    ("crm-windows", Interaction.SHOWROOM, "2025-01-05", None, "2026-02-05"),
    ("crm-windows", Interaction.INQUIRY, "2025-10-01", None, "2025-12-30"),
    ("crm-windows", Interaction.EMAIL_REPLY, "2025-10-01", None, "2025-12-30"),
]


@pytest.mark.parametrize(
    ("preset", "kind", "on", "paid", "last_day"),
    BOUNDARIES,
    ids=[f"{b[0]}-{b[1].value}-{b[2]}" for b in BOUNDARIES],
)
def test_a_window_includes_its_last_day_and_ends_the_day_after(
    rules_for: RulesFor, preset: str, kind: Interaction, on: str, paid: str | None, last_day: str
) -> None:
    rules = rules_for(preset)
    rec = record(ev(kind, on, paid))
    clock = FakeClock(at(last_day) - timedelta(days=1))
    before = evaluate(rec, rules, clock.now())
    clock.advance(timedelta(days=1))
    on_last_day = evaluate(rec, rules, clock.now())
    clock.advance(timedelta(days=1))
    after = evaluate(rec, rules, clock.now())
    assert before.eligible and on_last_day.eligible
    assert on_last_day.until == date.fromisoformat(last_day)
    assert not after.eligible and after.code == WINDOW_EXPIRED
    assert after.reason.endswith(f"ended {last_day}")


def test_the_reason_names_the_rules_the_interaction_and_the_end(rules_for: RulesFor) -> None:
    verdict = evaluate(
        record(ev(Interaction.SERVICE, "2024-03-01")), rules_for("casl"), at("2026-03-02")
    )
    assert verdict.reason == (
        "outside the CASL implied-consent window: last interaction, a service repair order "
        "on 2024-03-01, ended 2026-03-01"
    )
    assert verdict.basis is not None and verdict.basis.kind is Interaction.SERVICE


def test_the_window_that_ends_last_wins(rules_for: RulesFor) -> None:
    # crm-windows: the cash sale (25 months) outlasts the later inquiry (90 days).
    rec = record(ev(Interaction.SALE_CASH, "2024-06-10"), ev(Interaction.INQUIRY, "2025-12-01"))
    verdict = evaluate(rec, rules_for("crm-windows"), at("2026-01-05"))
    assert verdict.eligible and verdict.until == date(2026, 7, 10)
    assert verdict.basis is not None and verdict.basis.kind is Interaction.SALE_CASH


def test_no_interaction_at_all_is_locked(rules_for: RulesFor) -> None:
    verdict = evaluate(ConsentRecord(), rules_for("casl"), at("2026-01-05"))
    assert not verdict.eligible and verdict.code == WINDOW_EXPIRED
    assert "no interaction on record" in verdict.reason


def test_a_new_interaction_unlocks_a_locked_recipient(rules_for: RulesFor) -> None:
    rules = rules_for("casl")
    old = ev(Interaction.INQUIRY, "2025-01-10")
    clock = FakeClock(at("2026-01-05"))
    assert not evaluate(record(old), rules, clock.now()).eligible
    renewed = record(old, ev(Interaction.SERVICE, "2026-01-05"))
    verdict = evaluate(renewed, rules, clock.now())
    assert verdict.eligible and verdict.until == date(2028, 1, 5)


# -- express consent, withdrawal and opt-outs --------------------------------------------


def test_express_consent_lasts_until_withdrawn(rules_for: RulesFor) -> None:
    rules = rules_for("casl")
    consent = ev(Interaction.EXPRESS_CONSENT, "2015-07-01", source="web form", proof="f-77")
    verdict = evaluate(record(consent), rules, at("2026-01-05"))
    assert verdict.eligible and verdict.until is None
    assert "express consent on 2015-07-01 (web form)" in verdict.reason
    withdrawn = record(consent, ev(Interaction.WITHDRAWN, "2025-11-02"))
    verdict = evaluate(withdrawn, rules, at("2026-01-05"))
    assert not verdict.eligible and verdict.code == NO_OPT_IN
    assert verdict.reason == "the recipient withdrew consent on 2025-11-02"


def test_a_purchase_after_a_withdrawal_does_not_renew_but_new_consent_does(
    rules_for: RulesFor,
) -> None:
    rules = rules_for("casl")
    rec = record(ev(Interaction.WITHDRAWN, "2025-06-01"), ev(Interaction.SALE_CASH, "2025-12-01"))
    assert evaluate(rec, rules, at("2026-01-05")).code == NO_OPT_IN
    rec = record(*rec.events, ev(Interaction.EXPRESS_CONSENT, "2026-01-02"))
    assert evaluate(rec, rules, at("2026-01-05")).eligible


def test_on_the_same_day_a_refusal_beats_a_grant(rules_for: RulesFor) -> None:
    rec = record(
        ev(Interaction.EXPRESS_CONSENT, "2026-01-02"), ev(Interaction.WITHDRAWN, "2026-01-02")
    )
    assert not evaluate(rec, rules_for("casl"), at("2026-01-05")).eligible


def test_can_spam_has_no_windows_but_honours_opt_outs(rules_for: RulesFor) -> None:
    rules = rules_for("can-spam", 'consent.postal_address = "1 Main St, Springfield, IL 62701"\n')
    assert evaluate(ConsentRecord(), rules, at("2026-01-05")).eligible
    opted_out = record(pref(Topic.DEALER_MARKETING, False, "2025-12-24"))
    verdict = evaluate(opted_out, rules, at("2026-01-05"))
    assert not verdict.eligible and verdict.code == NO_OPT_IN
    assert verdict.reason == (
        "the recipient opted out of marketing email from the dealer on 2025-12-24 (web form)"
    )
    # An opt-out of one topic leaves the others alone.
    assert evaluate(opted_out, rules, at("2026-01-05"), topic=Topic.SERVICE_FOLLOW_UP).eligible


def test_can_spam_requires_a_postal_address_in_the_dealer_file(rules_for: RulesFor) -> None:
    with pytest.raises(PolicyError, match="postal_address"):
        rules_for("can-spam")


def test_gdpr_needs_an_opt_in_for_the_topic(rules_for: RulesFor) -> None:
    rules = rules_for("gdpr")
    now = at("2026-01-05")
    # A purchase is no opt-in under GDPR.
    verdict = evaluate(record(ev(Interaction.SALE_CASH, "2025-12-01")), rules, now)
    assert not verdict.eligible and verdict.code == NO_OPT_IN
    assert "no opt-in to marketing email from the dealer" in verdict.reason
    rec = record(pref(Topic.DEALER_MARKETING, True, "2025-05-01"))
    assert evaluate(rec, rules, now).eligible
    assert not evaluate(rec, rules, now, topic=Topic.THIRD_PARTY).eligible
    assert not evaluate(rec, rules, now, topic=Topic.SERVICE_FOLLOW_UP).eligible
    # Express consent covers the dealer's own topics, never third parties' offers.
    rec = record(ev(Interaction.EXPRESS_CONSENT, "2025-05-01", proof="signed form"))
    assert evaluate(rec, rules, now, topic=Topic.SERVICE_FOLLOW_UP).eligible
    assert not evaluate(rec, rules, now, topic=Topic.THIRD_PARTY).eligible
    # A later opt-out wins over the earlier opt-in.
    rec = record(
        pref(Topic.DEALER_MARKETING, True, "2025-05-01"),
        pref(Topic.DEALER_MARKETING, False, "2025-09-01"),
    )
    assert evaluate(rec, rules, now).code == NO_OPT_IN


@pytest.mark.parametrize("category", ["transactional", "relationship", "Transactional"])
@pytest.mark.parametrize("preset", ["casl", "crm-windows", "gdpr"])
def test_transactional_and_relationship_mail_is_exempt(
    rules_for: RulesFor, preset: str, category: str
) -> None:
    withdrawn = record(ev(Interaction.WITHDRAWN, "2025-01-01"))
    verdict = evaluate(withdrawn, rules_for(preset), at("2026-01-05"), category.lower())
    assert verdict.eligible and verdict.code is None


def test_without_rules_nothing_is_checked() -> None:
    verdict = evaluate(
        record(ev(Interaction.WITHDRAWN, "2025-01-01")), ConsentRules(), at("2026-01-05")
    )
    assert verdict.eligible


# -- overrides -----------------------------------------------------------------------------


def test_a_dealer_overrides_one_window_and_keeps_the_others(rules_for: RulesFor) -> None:
    rules = rules_for("casl", '[consent.windows]\ninquiry = "9 months"\nshowroom-visit = "off"\n')
    assert rules.windows[Interaction.INQUIRY] == Window(months=9)
    assert rules.windows[Interaction.SERVICE] == Window(months=24)
    assert Interaction.SHOWROOM not in rules.windows
    now = at("2025-12-01")
    assert evaluate(record(ev(Interaction.INQUIRY, "2025-03-01")), rules, now).eligible
    showroom = evaluate(record(ev(Interaction.SHOWROOM, "2025-11-01")), rules, now)
    assert not showroom.eligible


def test_a_dealer_overrides_the_name_and_express_consent(rules_for: RulesFor) -> None:
    rules = rules_for("crm-windows", '[consent]\nname = "Acme"\nexpress_consent = false\n')
    rec = record(ev(Interaction.EXPRESS_CONSENT, "2020-01-01"))
    verdict = evaluate(rec, rules, at("2026-01-05"))
    assert not verdict.eligible and verdict.reason.startswith(
        "no interaction on record opens a window under the Acme rules"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[consent.windows]\ninquiry = "six months"\n', "not a window"),
        ('[consent.windows]\ninquiri = "6 months"\n', "did you mean 'inquiry'"),
        ('[consent.windows]\nexpress-consent = "6 months"\n', "opens no window"),
        ("[consent]\nenforce = 1\n", "consent.enforce"),
        ("[consent]\nrequire_optin = true\n", "did you mean 'require_opt_in'"),
    ],
)
def test_bad_consent_keys_are_policy_errors(rules_for: RulesFor, extra: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        rules_for("casl", extra)
    assert message in str(caught.value)


# -- building blocks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("6 months", "2025-08-31", "2026-02-28"),
        ("2 years", "2024-02-29", "2026-02-28"),
        ("2y", "2024-03-01", "2026-03-01"),
        ("13mo", "2025-01-31", "2026-02-28"),
        ("90 days", "2025-10-01", "2025-12-30"),
        ("1 day", "2025-12-31", "2026-01-01"),
    ],
)
def test_windows_are_calendar_periods(text: str, start: str, end: str) -> None:
    assert Window.parse(text).end(date.fromisoformat(start)) == date.fromisoformat(end)


def test_window_words() -> None:
    assert [str(Window.parse(t)) for t in ("6 months", "2 years", "1 month", "90 days")] == [
        "6 months",
        "2 years",
        "1 month",
        "90 days",
    ]


def test_collapse_keeps_one_event_per_natural_key() -> None:
    first = ev(Interaction.SALE_FINANCE, "2022-01-01", "2024-01-01", ref="D-1")
    later = ev(Interaction.SALE_FINANCE, "2022-01-01", "2025-01-01", ref="D-1", proof="x")
    other = ev(Interaction.SALE_FINANCE, "2022-01-01", ref="D-2")
    kept = collapse([first, later, other, first])
    assert [(e.ref, e.last_payment, e.proof) for e in kept] == [
        ("D-1", date(2025, 1, 1), "x"),
        ("D-2", None, ""),
    ]


def test_topic_header() -> None:
    assert message_topic(None) is Topic.DEALER_MARKETING
    assert message_topic(" Third-Party ") is Topic.THIRD_PARTY
    assert message_topic("nonsense") is Topic.DEALER_MARKETING


@pytest.mark.parametrize(
    ("texts", "htmls", "found"),
    [
        (["Visit us at 12 Main St., Springfield, IL 62701"], [], True),
        ([], ["<p>12 MAIN ST<br>Springfield,&nbsp;IL 62701</p>"], True),
        (["112 Main St Springfield IL 62701"], [], False),
        (["12 Main St"], [], False),
    ],
)
def test_postal_address_is_compared_word_by_word(
    texts: list[str], htmls: list[str], found: bool
) -> None:
    assert postal_address_present("12 Main St, Springfield, IL 62701", texts, htmls) is found


def test_explain_lists_each_window_and_what_renews(rules_for: RulesFor) -> None:
    rules = rules_for("casl")
    rec = record(ev(Interaction.SERVICE, "2024-03-01"), ev(Interaction.INQUIRY, "2025-01-10"))
    shown = explain(ADDRESS, rec, rules, at("2026-03-02"))
    assert [(line.event.kind, line.ends) for line in shown.events] == [
        (Interaction.SERVICE, date(2026, 3, 1)),
        (Interaction.INQUIRY, date(2025, 7, 10)),
    ]
    assert not shown.eligibility[Topic.DEALER_MARKETING].eligible
    assert "a service repair order opens 2 years" in shown.renewal
    assert "express consent opens it until withdrawn" in shown.renewal


def test_only_email_preferences_count(rules_for: RulesFor) -> None:
    sms_out = Preference(DEALER, ADDRESS, Topic.DEALER_MARKETING, False, at("2025-12-01"),
                         channel="sms")  # fmt: skip
    rules = rules_for("gdpr")
    email_in = pref(Topic.DEALER_MARKETING, True, "2025-05-01")
    assert evaluate(record(email_in, sms_out), rules, at("2026-01-05")).eligible
