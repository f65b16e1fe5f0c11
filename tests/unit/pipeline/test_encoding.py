from __future__ import annotations

import pytest

from gateway.pipeline.base import CheckContext
from gateway.policy.model import DealerPolicy
from tests.unit.pipeline.samples import Row, check_row, ids

ENC = "encoding"
ROWS: list[Row] = [
    ("undeclared-8bit.eml", {ENC}, set()),
    ("unknown-charset.eml", {ENC}, set()),
    ("broken-base64.eml", {ENC}, set()),
    ("broken-qp.eml", {ENC}, set()),
    ("utf8-qp.eml", set(), {ENC}),
    ("good-html.eml", set(), {ENC}),
]


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_encoding_samples(row: Row, dealer: DealerPolicy, ctx: CheckContext) -> None:
    check_row(row, dealer, ctx)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("undeclared-8bit.eml", "8bit"),
        ("unknown-charset.eml", "charset"),
        ("broken-base64.eml", "base64"),
        ("broken-qp.eml", "quoted-printable"),
    ],
)
def test_kind_is_named(name: str, kind: str, dealer: DealerPolicy, ctx: CheckContext) -> None:
    found = check_row((name, {ENC}, set()), dealer, ctx)
    assert kind in {f.data["kind"] for f in found if f.code == ENC}
