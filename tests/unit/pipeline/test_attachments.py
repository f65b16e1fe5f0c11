from __future__ import annotations

import io
import zipfile

import pytest

from gateway.mail.message import Attachment
from gateway.pipeline.attachments import (
    REPAIR_DROP_TNEF,
    REPAIR_HTML_BODY,
    _zip_problem,
    looks_like_html,
)
from gateway.pipeline.base import CheckContext
from gateway.policy.model import DealerPolicy
from gateway.policy.options import DangerousAttachmentOptions as Limits
from tests.unit.pipeline.samples import Row, check_row, ids

STRAY, DANGER = "stray-attachment", "dangerous-attachment"
ROWS: list[Row] = [
    ("unknown1-html.eml", {STRAY}, {DANGER}),
    ("unknown1-toplevel.eml", {STRAY}, {DANGER}),
    ("unknown1-with-pdf.eml", {STRAY}, {DANGER}),
    ("att00001-htm.eml", {STRAY}, {DANGER}),
    ("winmail.eml", {STRAY}, {DANGER}),
    ("winmail-only.eml", {STRAY}, set()),
    ("zero-byte.eml", {STRAY}, {DANGER}),
    ("repeats-body.eml", {STRAY}, {DANGER}),
    ("real-attachment.eml", set(), {STRAY, DANGER}),
    ("zip-harmless.eml", set(), {STRAY, DANGER}),
    ("double-extension.eml", {DANGER}, set()),
    ("macro-office.eml", {DANGER}, set()),
    ("zip-with-exe.eml", {DANGER}, set()),
    ("nested-zip-script.eml", {DANGER}, set()),
    ("disguised-program.eml", {DANGER}, set()),
    ("zip-bomb.eml", {DANGER}, set()),
    ("good-html.eml", set(), {STRAY, DANGER}),
]


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_attachment_samples(row: Row, dealer: DealerPolicy, ctx: CheckContext) -> None:
    check_row(row, dealer, ctx)


@pytest.mark.parametrize(
    ("name", "repair"),
    [
        ("unknown1-html.eml", REPAIR_HTML_BODY),
        ("unknown1-toplevel.eml", REPAIR_HTML_BODY),
        ("unknown1-with-pdf.eml", REPAIR_HTML_BODY),
        ("winmail.eml", REPAIR_DROP_TNEF),
        ("winmail-only.eml", None),  # no readable body: nothing safe to do
        ("att00001-htm.eml", None),  # there is an HTML body already
        ("zero-byte.eml", None),
    ],
)
def test_stray_names_the_safe_repair(
    name: str, repair: str | None, dealer: DealerPolicy, ctx: CheckContext
) -> None:
    (finding,) = [f for f in check_row((name, {STRAY}, set()), dealer, ctx) if f.code == STRAY]
    assert finding.repair == repair


def test_double_extension_is_named(dealer: DealerPolicy, ctx: CheckContext) -> None:
    found = check_row(("double-extension.eml", {DANGER}, set()), dealer, ctx)
    assert "disguised as a .pdf" in next(f.detail for f in found if f.code == DANGER)


def zipped(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buf.getvalue()


def test_zip_limits_give_a_defined_outcome() -> None:
    many = zipped([(f"f{i}.txt", b"x") for i in range(20)])
    assert "more than 10 files" in (_zip_problem(many, "a.zip", Limits(max_entries=10)) or "")
    deep = zipped([("x.txt", b"x")])
    for level in range(5):
        deep = zipped([(f"level{level}.zip", deep)])
    assert "nests archives" in (_zip_problem(deep, "a.zip", Limits(max_depth=3)) or "")
    assert _zip_problem(deep, "a.zip", Limits(max_depth=10)) is None
    big = zipped([("a.bin", b"\0" * 3_000_000)])
    assert "unpacks to more than" in (
        _zip_problem(big, "a.zip", Limits(max_bytes=1_000_000, max_ratio=10**9)) or ""
    )
    assert "damaged" in (_zip_problem(b"PK\x03\x04junk", "a.zip", Limits()) or "")


def test_html_sniffing() -> None:
    assert looks_like_html(b"\xef\xbb\xbf  <!DOCTYPE html><html>")
    assert looks_like_html(b"<table><tr><td>x</td></tr></table>")
    assert not looks_like_html(b"Hello, see you at 5 <3")


def test_a_named_html_document_is_not_stray(dealer: DealerPolicy) -> None:
    from gateway.pipeline.attachments import is_html_stray

    brochure = Attachment("brochure.html", "text/html", 20, "attachment", b"<html><p>x</p>")
    assert not is_html_stray(brochure)
    att = Attachment("ATT00002.htm", "text/html", 20, "attachment", b"<html><p>x</p>")
    assert is_html_stray(att)
