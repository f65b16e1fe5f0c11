from __future__ import annotations

import pytest

from gateway.pipeline.base import CheckContext
from gateway.policy.model import DealerPolicy
from tests.unit.pipeline.samples import Row, check_row, ids

LINK = "link-defect"
ROWS: list[Row] = [
    ("link-javascript.eml", {LINK}, set()),
    ("link-mismatch.eml", {LINK}, set()),
    ("link-empty.eml", {LINK}, set()),
    ("good-html.eml", set(), {LINK}),  # text www.example-motors.test/booking, same host
]


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_link_samples(row: Row, dealer: DealerPolicy, ctx: CheckContext) -> None:
    check_row(row, dealer, ctx)


def test_mismatch_names_both_hosts(dealer: DealerPolicy, ctx: CheckContext) -> None:
    found = check_row(("link-mismatch.eml", {LINK}, set()), dealer, ctx)
    (finding,) = [f for f in found if f.code == LINK]
    assert finding.data["shown"] == "example-motors.test"
    assert "login.other-bank.test" in finding.detail
