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
    Block,
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
    renewal_summary,
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
    # Nine months is looser than CASL: rules of the dealer's own, under their own name.
    own = '[consent]\nlaw = ""\nname = "Acme rules"\n'
    rules = rules_for(
        "casl", own + '[consent.windows]\ninquiry = "9 months"\nshowroom-visit = "off"\n'
    )
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


# -- B3: statements in time order ------------------------------------------------------------


def timed(granted: bool, when: str, topic: Topic = Topic.DEALER_MARKETING) -> Preference:
    return Preference(DEALER, ADDRESS, topic, granted, datetime.fromisoformat(when), "crm")


def test_b3_an_opt_in_in_the_afternoon_overrides_the_opt_out_of_the_morning(
    rules_for: RulesFor,
) -> None:
    rules = rules_for("can-spam", 'consent.postal_address = "1 Main St, Springfield"\n')
    rec = record(
        timed(False, "2026-01-02T09:00:00+00:00"), timed(True, "2026-01-02T15:00:00+00:00")
    )
    verdict = evaluate(rec, rules, at("2026-01-05"))
    assert verdict.eligible and "opted in" in verdict.reason
    rec = record(
        timed(True, "2026-01-02T09:00:00+00:00"), timed(False, "2026-01-02T15:00:00+00:00")
    )
    assert not evaluate(rec, rules, at("2026-01-05")).eligible


def test_b3_a_statement_known_only_by_its_day_ties_and_the_refusal_wins(
    rules_for: RulesFor,
) -> None:
    rules = rules_for("casl")
    # A withdrawal dated 2026-01-02 and an opt-in at 15:00 that day: which came first is
    # unknown, so the refusal stands; an opt-in the next day ends it.
    rec = record(ev(Interaction.WITHDRAWN, "2026-01-02"), timed(True, "2026-01-02T15:00:00+00:00"))
    assert not evaluate(rec, rules, at("2026-01-05")).eligible
    rec = record(*rec.events, *rec.preferences, timed(True, "2026-01-03T08:00:00+00:00"))
    assert evaluate(rec, rules, at("2026-01-05")).eligible


# -- B6: explanations follow the rules applied ---------------------------------------------


def test_b6_after_a_withdrawal_a_sale_opens_no_window_and_renewal_says_so(
    rules_for: RulesFor,
) -> None:
    rules = rules_for("casl")
    rec = record(ev(Interaction.WITHDRAWN, "2025-06-01"), ev(Interaction.SALE_CASH, "2025-12-01"))
    shown = explain(ADDRESS, rec, rules, at("2026-01-05"))
    sale = next(line for line in shown.events if line.event.kind is Interaction.SALE_CASH)
    assert sale.window is None and sale.ends is None
    assert sale.void == "opens no window: the recipient withdrew consent on 2025-06-01"
    assert "opens 2 years" not in shown.renewal
    assert shown.renewal.startswith("only express consent or an opt-in recorded after")
    assert "new interactions do not renew consent" in shown.renewal


def test_b6_under_gdpr_interactions_open_no_window(rules_for: RulesFor) -> None:
    shown = explain(ADDRESS, record(ev(Interaction.SALE_CASH, "2025-12-01")), rules_for("gdpr"),
                    at("2026-01-05"))  # fmt: skip
    (line,) = shown.events
    assert line.window is None and "the GDPR rules need an opt-in" in line.void
    assert shown.renewal.startswith("an opt-in recorded for the topic")


@pytest.mark.parametrize(
    ("preset", "extra", "words"),
    [
        ("gdpr", "", "only when the CRM records an opt-in"),
        ("casl", "", "next recorded interaction or express consent, except one who withdrew"),
        (
            "can-spam",
            'consent.postal_address = "1 Main St, Springfield"\n',
            "opted out or withdrew",
        ),
    ],
)
def test_b6_the_status_page_sentence_follows_the_rules(
    rules_for: RulesFor, preset: str, extra: str, words: str
) -> None:
    assert words in renewal_summary(rules_for(preset, extra))


# -- B7: a loosened legal preset ----------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "extra", "key"),
    [
        ("casl", '[consent.windows]\ninquiry = "18 months"\n', "consent.windows.inquiry"),
        ("casl", '[consent.windows]\nemail-reply = "7 months"\n', "consent.windows.email-reply"),
        ("casl", "[consent]\nrequire_unsubscribe = false\n", "consent.require_unsubscribe"),
        ("gdpr", "[consent]\nrequire_opt_in = false\n", "consent.require_opt_in"),
        ("gdpr", '[consent.windows]\nsale-cash = "2 years"\n', "consent.windows.sale-cash"),
    ],
)
def test_b7_a_loosened_legal_preset_is_a_policy_error(
    rules_for: RulesFor, preset: str, extra: str, key: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        rules_for(preset, extra)
    problems = [p for p in caught.value.problems if p.key == key]
    assert problems and "a legal preset may only be tightened" in problems[0].message


def test_b7_tightening_is_allowed_and_keeps_the_name(rules_for: RulesFor) -> None:
    rules = rules_for("casl", '[consent.windows]\ninquiry = "3 months"\nsale-cash = "off"\n')
    assert rules.name == "CASL implied-consent" and rules.law == "CASL"


def test_b7_own_rules_need_their_own_name(rules_for: RulesFor) -> None:
    loose = '[consent.windows]\ninquiry = "18 months"\n'
    with pytest.raises(PolicyError, match="cannot be called 'CASL implied-consent'"):
        rules_for("casl", '[consent]\nlaw = ""\n' + loose)
    rules = rules_for("casl", '[consent]\nlaw = ""\nname = "Acme 18-month leads"\n' + loose)
    verdict = evaluate(record(ev(Interaction.INQUIRY, "2025-01-10")), rules, at("2026-01-05"))
    assert verdict.eligible and "CASL" not in verdict.reason
    assert "within the Acme 18-month leads window" in verdict.reason


# -- B13: the dealer's days --------------------------------------------------------------


def test_b13_a_window_ends_at_the_dealers_midnight(rules_for: RulesFor) -> None:
    rules = rules_for("casl", '[consent]\ntime_zone = "America/Vancouver"\n')
    rec = record(ev(Interaction.INQUIRY, "2025-03-01"))  # last day 2025-09-01
    # 2025-09-02 03:00 UTC is still 2025-09-01 20:00 in Vancouver: the last day.
    late = datetime(2025, 9, 2, 3, 0, tzinfo=UTC)
    assert evaluate(rec, rules, late).eligible
    assert not evaluate(rec, rules_for("casl"), late).eligible  # UTC: already the day after
    assert not evaluate(rec, rules, datetime(2025, 9, 2, 7, 1, tzinfo=UTC)).eligible


def test_b13_an_opt_in_is_dated_on_the_dealers_calendar(rules_for: RulesFor) -> None:
    rules = rules_for("gdpr", '[consent]\ntime_zone = "America/Toronto"\n')
    late_evening = Preference(DEALER, ADDRESS, Topic.DEALER_MARKETING, True,
                              datetime(2026, 1, 3, 3, 30, tzinfo=UTC), "web")  # fmt: skip
    verdict = evaluate(record(late_evening), rules, at("2026-01-05"))
    assert "opted in to marketing email from the dealer on 2026-01-02" in verdict.reason


def test_b13_an_unknown_time_zone_is_a_policy_error(rules_for: RulesFor) -> None:
    with pytest.raises(PolicyError, match="not an IANA time zone"):
        rules_for("casl", '[consent]\ntime_zone = "Canada/Toronto-ish"\n')


# -- B8: suppressions decide first ------------------------------------------------------


def test_b8_a_suppression_locks_every_topic_and_transactional_mail(rules_for: RulesFor) -> None:
    rules = rules_for("casl")
    rec = record(ev(Interaction.EXPRESS_CONSENT, "2025-01-01"))
    complaint = Block("spam complaint", datetime(2025, 12, 1, tzinfo=UTC), "report 77")
    shown = explain(ADDRESS, rec, rules, at("2026-01-05"), block=complaint)
    assert all(not e.eligible and e.code == "suppressed" for e in shown.eligibility.values())
    assert not shown.transactional.eligible
    assert "suppressed since 2025-12-01 (spam complaint)" in shown.transactional.reason
    unsubscribed = Block("unsubscribe request", datetime(2025, 12, 1, tzinfo=UTC), "",
                         commercial_only=True)  # fmt: skip
    shown = explain(ADDRESS, rec, rules, at("2026-01-05"), block=unsubscribed)
    assert not shown.eligibility[Topic.DEALER_MARKETING].eligible
    assert shown.transactional.eligible


# -- GDPR: consent due for review -----------------------------------------------------------


def test_an_opt_in_older_than_six_months_is_flagged_for_review(rules_for: RulesFor) -> None:
    rules = rules_for("gdpr")
    rec = record(pref(Topic.DEALER_MARKETING, True, "2025-05-01"))
    fresh = evaluate(rec, rules, at("2025-10-31"))
    assert fresh.eligible and fresh.review_since is None
    due = evaluate(rec, rules, at("2025-11-02"))
    assert due.eligible and due.review_since == date(2025, 11, 1)
    assert "due for review since 2025-11-01" in due.reason
    # Rules without review_after never flag it.
    assert evaluate(rec, rules_for("casl"), at("2027-01-01")).review_since is None
    off = rules_for("gdpr", '[consent]\nreview_after = "off"\n')
    assert evaluate(rec, off, at("2027-01-01")).review_since is None


def test_crm_windows_count_email_opens_and_clicks_and_casl_does_not(rules_for: RulesFor) -> None:
    for kind in (Interaction.EMAIL_OPEN, Interaction.EMAIL_CLICK):
        rec = record(ev(kind, "2025-10-01"))
        verdict = evaluate(rec, rules_for("crm-windows"), at("2025-12-30"))
        assert verdict.eligible and verdict.until == date(2025, 12, 30)
        assert not evaluate(rec, rules_for("casl"), at("2025-10-02")).eligible
    for kind in (Interaction.SALE_PARTS, Interaction.OTHER_TRANSACTION):
        verdict = evaluate(record(ev(kind, "2024-03-01")), rules_for("casl"), at("2026-03-01"))
        assert verdict.eligible and verdict.until == date(2026, 3, 1)
