from __future__ import annotations

import pytest

from gateway.pipeline.base import CheckContext
from gateway.pipeline.merge_fields import placeholders
from gateway.policy.model import DealerPolicy
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
     "{{#each items}}"],
)  # fmt: skip
def test_placeholders_found(text: str) -> None:
    assert placeholders(f"Dear {text}, hello") == [text]


@pytest.mark.parametrize(
    "text",
    ["[Click here]", "[PDF]", "« Bonjour »", "«Bonjour»", "$20,000 and $5", "100% off",
     "a { color: red }", "[1]", "{ }", "US$5$"],
)  # fmt: skip
def test_ordinary_text_is_not_a_placeholder(text: str) -> None:
    assert placeholders(text) == []
