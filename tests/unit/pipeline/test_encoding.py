from __future__ import annotations

import email.policy
import re
from email import message_from_bytes

import pytest

from gateway.mail.rewrite import transport_safe
from gateway.pipeline.base import CheckContext
from gateway.policy.model import DealerPolicy
from tests.unit.pipeline.samples import SAMPLES, Row, check_row, ids

ENC = "encoding"
ROWS: list[Row] = [
    # Fixed by intake before signing (below), so not a finding (issue: no defect the
    # gateway repairs is reported).
    ("undeclared-8bit.eml", set(), {ENC}),
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
        ("unknown-charset.eml", "charset"),
        ("broken-base64.eml", "base64"),
        ("broken-qp.eml", "quoted-printable"),
    ],
)
def test_kind_is_named(name: str, kind: str, dealer: DealerPolicy, ctx: CheckContext) -> None:
    found = check_row((name, {ENC}, set()), dealer, ctx)
    assert kind in {f.data["kind"] for f in found if f.code == ENC}


def test_an_undeclared_8bit_body_is_made_7bit_and_declared_by_intake() -> None:
    raw = (SAMPLES / "undeclared-8bit.eml").read_bytes().replace(b"\r\n", b"\n")
    raw = raw.replace(b"\n", b"\r\n")
    out, changed = transport_safe(raw)
    assert changed
    assert not re.search(rb"[\x80-\xff]", out)
    parsed = message_from_bytes(out, policy=email.policy.default)
    assert parsed["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert parsed.get_content_charset() == "windows-1252"  # not UTF-8: the Excel/Outlook case
    assert parsed.get_content().startswith("Bonjour Zoë, votre essai est prêt.")
