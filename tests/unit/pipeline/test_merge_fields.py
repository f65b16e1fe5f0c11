from __future__ import annotations

import pytest

from gateway.pipeline.base import CheckContext
from gateway.pipeline.merge_fields import html_placeholders, placeholders
from gateway.policy.model import DealerPolicy
from tests.unit.pipeline import merge_labelled
from tests.unit.pipeline.samples import Row, check_row, ids

MERGE = "unfilled-merge-field"
ROWS: list[Row] = [
    ("merge-subject.eml", {MERGE}, set()),
    ("merge-text.eml", {MERGE}, set()),
    ("merge-html.eml", {MERGE}, set()),
    ("merge-none.eml", set(), {MERGE}),  # braces in CSS and in an mso block, prices, « »
    ("good-html.eml", set(), {MERGE}),
]


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_merge_field_samples(row: Row, dealer: DealerPolicy, ctx: CheckContext) -> None:
    check_row(row, dealer, ctx)


def test_every_syntax_is_named(dealer: DealerPolicy, ctx: CheckContext) -> None:
    (finding,) = check_row(("merge-text.eml", {MERGE}, set()), dealer, ctx)[-1:]
    for field in ("%%FirstName%%", "[VEHICLE MODEL]", "«DealerName»", "$SalesPhone$"):
        assert field in finding.data["fields"]


@pytest.mark.parametrize(
    "text",
    ["{{first_name}}", "{{ first_name }}", "{FirstName}", "${first_name}", "%%FirstName%%",
     "[FIRST NAME]", "[FIRST_NAME]", "[FirstName]", "«FirstName»", "«First_Name»", "$FirstName$",
     "{{#each items}}",
     # CRM and mail-tool syntaxes
     "[[first_name]]", "[[FIRSTNAME]]", '[[FIRSTNAME OR "there"]]', "[[var:firstname]]",
     "*|FNAME|*", "*|MC:SUBJECT|*", "*|IF:FNAME|*", "<<First Name>>", "<<first_name>>",
     "{!Contact.FirstName}", "{!Account.Renewal_Date__c}", "{!firstname_fix}",
     "{!Contact:First Name;}", "{{ contact.firstname }}", "{{lead.First Name}}",
     "{{lead.First Name:default=Friend}}", "{{my.EventDate}}", "${Contacts.First Name}",
     "${!Opportunity.Amount}", "$!{contact.firstName}", "#FirstName#", "##firstname##",
     "#recipient:FirstName#", "%FirstName%", "%FIRSTNAME%", "%UNSUBSCRIBELINK%",
     "-first_name-", "-name-", '{{ first_name | default: "there" }}',
     "{{ personalization_token('contact.firstname', 'there') }}", "{% if customer %}",
     "{% unsubscribe %}", "{{{unsubscribe}}}", "{{${first_name} | default: 'Hi'}}",
     "[firstname,fallback=there]", "{contactfield=firstname}", "{$name}",
     "~Contact.FirstName~", "$contacts-firstname$", "$(FIRST_NAME)$", "$[LI:FIRSTNAME]$",
     "%%=v(@firstname)=%%", "<%= user.first_name %>", "[% member:first_name %]",
     "((first_name))", "%(first_name)s", "[Customer First Name]", "[VehicleModel]",
     "[FIRSTNAME]", "[email]", "{First Name}", "«Title»"],
)  # fmt: skip
def test_placeholders_found(text: str) -> None:
    assert placeholders(f"Dear {text}, hello") == [text]


@pytest.mark.parametrize(
    "text",
    ["[Click here]", "[PDF]", "« Bonjour »", "«Bonjour»", "$20,000 and $5", "100% off",
     "a { color: red }", "[1]", "{ }", "US$5$",
     # what real CRM mail holds that looks like a field and is not
     "[Sale ends Friday]", "[$24,999]", "[SALE ENDS FRIDAY]", "[FREE SHIPPING]",
     "[Save the Date]", "[LinkedIn] [YouTube] [PayPal]", "[Email] [Phone]", "[EXTERNAL]",
     "[Reminder]", "[Certified Pre-Owned]", "[Ticket #4521]", "#NewCarDay #Sale",
     "#MyNewCivic#HondaLove", "Press #1 for sales, #2 for service", "color:#FFFFFF",
     "20% off", "0%APR 60 mo", "1.9%APR on CPO", "Save 20% and 10%", "width:50%;padding:0 5%",
     "2024%20Civic%20EX", "caf%E9s%20%C3%A9t%C3%A9", "%E2%80%99", "make%5B%5D=Honda",
     "&lt;&lt; Back", "&#8212; &laquo; details &raquo;", "<<invoice.pdf>>",
     "<< Previous | Next >>", "<<Back to top>>", "one-owner, low-mileage", "-- priced --",
     "-webkit-text-size-adjust", "$5 off $50+; $20-$40", "{display:none!important}",
     ".col{width:100%}", "@media (max-width:600px){.x{display:block}}", "«Merci»",
     "((see below))", "-(2)-", "~approx.~"],
)  # fmt: skip
def test_ordinary_text_is_not_a_placeholder(text: str) -> None:
    assert placeholders(text) == []


def test_overlapping_syntaxes_are_one_field() -> None:
    assert placeholders("Hi [[FIRSTNAME]] ${!Contact.Name} {{{x}}}") == [
        "[[FIRSTNAME]]",
        "${!Contact.Name}",
        "{{{x}}}",
    ]


@pytest.mark.parametrize(
    ("doc", "fields"),
    [
        ("<p>Dear &lt;&lt;First Name&gt;&gt;,</p>", ["<<First Name>>"]),
        ("<p>Dear &laquo;FirstName&raquo;,</p>", ["«FirstName»"]),
        ("<p>Dear <<First Name>>,</p>", ["<<First Name>>"]),
        ('<a href="*|UNSUB|*">Unsubscribe</a>', ["*|UNSUB|*"]),
        ("<style>.a{b:c}{{x}}</style><!--[if mso]>{FirstName}<![endif]--><p>Hi</p>", []),
        ("<script>var t = '{{x}}';</script><p>&lt;&lt; Back</p>", []),
    ],
)
def test_html_placeholders(doc: str, fields: list[str]) -> None:
    assert html_placeholders(doc) == fields


# -- the labelled set (tests/unit/pipeline/merge_labelled.py) ---------------------------------
# Tuned on: precision and recall 1.0 on every source. Held out (never tuned on), first
# measured: labelled 1.0/1.0, templates 1.0/1.0, corpus 9 false alarms in 920 messages (the
# "[RCPT_TO]" phase name in Yahoo bounces), 0.931 precision overall. The floors below keep
# those numbers from getting worse.


def test_labelled_cases_tuned_on() -> None:
    report = merge_labelled.score(("labelled",))
    tune = report.scores[("labelled", "tune")]
    assert (tune.precision, tune.recall) == (1.0, 1.0), (report.misses, report.false_alarms)
    assert tune.fields_found == tune.fields, report.missed_fields


def test_labelled_cases_held_out() -> None:
    report = merge_labelled.score(("labelled",))
    held = report.scores[("labelled", "holdout")]
    assert held.precision >= 0.95 and held.recall >= 0.95, (report.misses, report.false_alarms)


@pytest.mark.skipif(not merge_labelled.CORPUS.is_dir(), reason="shared corpus not present")
def test_real_templates_and_messages() -> None:
    report = merge_labelled.score(("templates", "corpus"))
    scores = report.scores
    for split in ("tune", "holdout"):
        templates = scores[("templates", split)]
        assert templates.recall == 1.0, report.misses
        assert templates.precision == 1.0, report.false_alarms
    assert scores[("corpus", "tune")].fp == 0, report.false_alarms
    assert scores[("corpus", "holdout")].fp <= 9, report.false_alarms
