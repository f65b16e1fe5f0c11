from __future__ import annotations

import pytest

from gateway.pipeline.base import CheckContext
from gateway.policy.model import DealerPolicy
from tests.unit.pipeline.samples import Row, check_row, ids

DEFECT = "header-defect"
ROWS: list[Row] = [
    # The gateway adds a missing Date: and folds long header lines itself: what it fixes
    # is no defect of the message that leaves, so it is not reported.
    ("no-date.eml", set(), {DEFECT, "missing-from"}),
    ("long-header.eml", set(), {DEFECT}),
    ("two-subjects.eml", {DEFECT}, set()),
    ("good-html.eml", set(), {DEFECT}),
]


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_header_samples(row: Row, dealer: DealerPolicy, ctx: CheckContext) -> None:
    check_row(row, dealer, ctx)


def test_details_name_the_header(dealer: DealerPolicy, ctx: CheckContext) -> None:
    (two,) = [f for f in check_row(("two-subjects.eml", {DEFECT}, set()), dealer, ctx)]
    assert two.detail == "the message has 2 Subject: headers"
