from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import time
import zipfile

import pytest

from gateway.mail.message import Attachment
from gateway.pipeline.archives import ArchiveLimits, inspect_archive
from gateway.pipeline.attachments import (
    REPAIR_DROP_TNEF,
    REPAIR_HTML_BODY,
    _name_kind,
    active_content,
    html_risk,
    inspect,
    looks_like_html,
)
from gateway.pipeline.base import CheckContext
from gateway.policy.model import DealerPolicy
from tests.unit.pipeline.samples import Row, check_row, ids

STRAY, DANGER = "stray-attachment", "dangerous-attachment"
UNCHECKED = "uninspectable-attachment"
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
    # formats and carriers beyond zip (issue 15, item 6)
    ("rar-archive.eml", {UNCHECKED}, {DANGER}),
    ("sevenzip-archive.eml", {UNCHECKED}, {DANGER}),
    ("gzip-exe.eml", {DANGER}, {UNCHECKED}),
    ("gzip-fname-exe.eml", {DANGER}, {UNCHECKED}),
    ("tgz-with-exe.eml", {DANGER}, {UNCHECKED}),
    ("tar-with-iso.eml", {DANGER}, {UNCHECKED}),
    ("zip-with-iso.eml", {DANGER}, {UNCHECKED}),
    ("zip-with-rar.eml", {UNCHECKED}, {DANGER}),
    ("tgz-harmless.eml", set(), {DANGER, UNCHECKED, STRAY}),
    ("onenote.eml", {DANGER}, set()),
    ("onenote-renamed.eml", {DANGER}, set()),
    ("svg-script.eml", {DANGER}, set()),
    ("svg-onload.eml", {DANGER}, set()),
    ("svg-javascript-href.eml", {DANGER}, set()),
    ("svg-harmless.eml", set(), {DANGER, UNCHECKED, STRAY}),
    ("html-form-elsewhere.eml", {DANGER}, set()),
    ("html-password.eml", {DANGER}, set()),
    ("html-own-form.eml", set(), {DANGER, UNCHECKED}),
    # a deliberate HTML attachment beside a real text body (issue 15, item 7)
    ("invoice-html-octet.eml", {DANGER}, {STRAY}),
    ("invoice-html-harmless.eml", set(), {STRAY, DANGER, UNCHECKED}),
    ("unknown1-html-placeholder.eml", {STRAY}, {DANGER}),
    ("att00001-empty-body.eml", {STRAY}, {DANGER}),
    ("unknown1-script.eml", {STRAY, DANGER}, set()),
    ("unknown1-form.eml", {STRAY}, {DANGER}),
    ("unknown1-own-text.eml", {STRAY}, {DANGER}),
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
        ("unknown1-html-placeholder.eml", REPAIR_HTML_BODY),
        ("att00001-empty-body.eml", REPAIR_HTML_BODY),
        ("unknown1-script.eml", None),  # active content is never promoted
        ("unknown1-form.eml", None),
        ("unknown1-own-text.eml", None),  # the text body is a message of its own
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


def _zip_problem(data: bytes, label: str, limits: ArchiveLimits) -> str | None:
    report = inspect_archive(data, "zip", label, label, limits, _name_kind)
    return report.dangerous or report.uninspectable


def test_zip_limits_give_a_defined_outcome() -> None:
    many = zipped([(f"f{i}.txt", b"x") for i in range(20)])
    assert "more than 10 files" in (
        _zip_problem(many, "a.zip", ArchiveLimits(max_entries=10)) or ""
    )
    deep = zipped([("x.txt", b"x")])
    for level in range(5):
        deep = zipped([(f"level{level}.zip", deep)])
    assert "nests archives" in (_zip_problem(deep, "a.zip", ArchiveLimits(max_depth=3)) or "")
    assert _zip_problem(deep, "a.zip", ArchiveLimits(max_depth=10)) is None
    big = zipped([("a.bin", b"\0" * 3_000_000)])
    assert "unpacks to more than" in (
        _zip_problem(big, "a.zip", ArchiveLimits(max_bytes=1_000_000, max_ratio=10**9)) or ""
    )
    assert "damaged" in (_zip_problem(b"PK\x03\x04junk", "a.zip", ArchiveLimits()) or "")


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
    # Named on purpose, whatever type the CRM declared.
    for content_type in ("application/octet-stream", "text/plain"):
        invoice = Attachment("invoice.html", content_type, 20, "attachment", b"<html><p>x</p>")
        assert not is_html_stray(invoice)
    unknown = Attachment("unknown1.html", "text/html", 20, "attachment", b"<html><p>x</p>")
    assert is_html_stray(unknown)


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        ("rar-archive.eml", "documents.rar is a RAR archive, which cannot be opened to check"),
        ("sevenzip-archive.eml", "photos.7z is a 7-Zip archive, which cannot be opened to check"),
        ("gzip-exe.eml", "setup.exe.gz is a compressed setup.exe, a program or script (.exe)"),
        ("gzip-fname-exe.eml", "invoice.gz is a compressed invoice.exe, a program or script"),
        ("tgz-with-exe.eml", "documents.tgz contains setup.exe, a program or script (.exe)"),
        ("tar-with-iso.eml", "documents.tar contains statement.iso, a disk image (.iso)"),
        ("zip-with-rar.eml", "inner.rar inside bundle.zip is a RAR archive"),
        ("onenote.eml", "invoice.one is a OneNote notebook (.one)"),
        ("onenote-renamed.eml", "invoice.dat is a OneNote notebook"),
        ("svg-script.eml", "logo.svg is an SVG image that runs a script"),
        ("svg-onload.eml", "logo.svg is an SVG image that runs a script when it is opened"),
        ("svg-javascript-href.eml", "badge.svg is an SVG image that has a javascript: link"),
        (
            "html-form-elsewhere.eml",
            "statement.html is a web page that has a form that sends what is typed to "
            "login-example-motors.example",
        ),
        ("html-password.eml", "secure-message.htm is a web page that asks for a password"),
    ],
)
def test_the_finding_names_the_file_and_the_problem(
    name: str, detail: str, dealer: DealerPolicy, ctx: CheckContext
) -> None:
    found = check_row((name, set(), set()), dealer, ctx)
    details = [f.detail for f in found if f.code in (DANGER, UNCHECKED)]
    assert len(details) == 1 and details[0].startswith(detail), details


def tarred(entries: list[tuple[str, bytes]], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as archive:  # type: ignore[call-overload]
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def attachment(
    name: str, data: bytes, content_type: str = "application/octet-stream"
) -> Attachment:
    return Attachment(name, content_type, len(data), "attachment", data)


LIMITS = ArchiveLimits()
OWN = frozenset({"example-motors.test"})
EXE = b"MZ\x90\x00" + b"\x00" * 200


def encrypted(data: bytes) -> bytes:
    """Set the "encrypted" flag (APPNOTE 4.4.4 bit 0) in every header of a zip."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = out.find(signature)
        while start >= 0:
            out[start + offset] |= 0x01
            start = out.find(signature, start + 4)
    return bytes(out)


@pytest.mark.parametrize(
    ("name", "data", "dangerous", "uninspectable"),
    [
        ("a.zip", encrypted(zipped([("a.pdf", b"%PDF-1.4")])), None, "password-protected"),
        ("a.tar.gz", gzip.compress(tarred([("a/b/run.ps1", b"x")])), "contains run.ps1", None),
        ("a.tbz2", bz2.compress(tarred([("setup.msi", b"x")])), "contains setup.msi", None),
        ("a.txz", lzma.compress(tarred([("disk.vhdx", b"x")])), "contains disk.vhdx", None),
        ("a.tar", tarred([("x.7z", b"7z\xbc\xaf\x27\x1c")]), None, "x.7z inside a.tar is a 7-Zip"),
        ("a.tgz", gzip.compress(tarred([("in.zip", zipped([("go.exe", b"x")]))])), "go.exe", None),
        ("a.zip", zipped([("in.tgz", gzip.compress(tarred([("go.bat", b"x")])))]), "go.bat", None),
        ("a.gz", gzip.compress(EXE), "holds a program", None),
        ("report.csv.gz", gzip.compress(b"vin,price\n" * 1000), None, None),
        ("a.tgz", b"\x1f\x8bjunk", None, "damaged"),
        ("a.tar", b"not a tar at all" * 40, None, "damaged"),
        ("a.cab", b"MSCF\x00\x00\x00\x00" + b"\x00" * 40, None, "Windows cabinet (CAB)"),
        ("logo.svgz", gzip.compress(b"<svg><script>x()</script></svg>"), "runs a script", None),
        ("page.html", b"<html><body onload='go()'>", "runs a script when", None),
        ("page.html", b"<html><a href=' javascript:go()'>x</a>", "javascript: link", None),
        ("page.html", b"<html><form action='//evil.example/x'>", "sends what is typed", None),
        ("page.html", b"<html><form action='/relative'><input name=q>", None, None),
    ],
)
def test_inspection_table(
    name: str, data: bytes, dangerous: str | None, uninspectable: str | None
) -> None:
    report = inspect(attachment(name, data), LIMITS, OWN)
    for expected, got in ((dangerous, report.dangerous), (uninspectable, report.uninspectable)):
        if expected is None:
            assert got is None, report
        else:
            assert got is not None and expected in got, report


def test_decompression_is_bounded() -> None:
    # 64 MB of zeros in a tar.gz: a bomb by ratio, found without unpacking it.
    bomb = gzip.compress(tarred([("zeros.bin", b"\0" * (64 * 1024 * 1024))]))
    started = time.perf_counter()
    report = inspect(attachment("backup.tgz", bomb), LIMITS, OWN)
    assert report.dangerous is not None and "decompression bomb" in report.dangerous
    assert time.perf_counter() - started < 1.0
    # A tar.gz bigger than the scan budget: what fits is listed, the rest is not unpacked.
    rows = [(f"statement-{i}.pdf", bytes(range(256)) * 400) for i in range(40)]
    rows.append(("zz-setup.exe", b"x"))
    big = gzip.compress(tarred(rows))
    small = ArchiveLimits(max_scan_bytes=1024 * 1024, max_ratio=10**6)
    report = inspect(attachment("statements.tgz", big), small, OWN)
    assert report.dangerous is None
    assert report.uninspectable is not None and "too large to check" in report.uninspectable
    assert inspect(attachment("statements.tgz", big), LIMITS, OWN).dangerous is not None
    # A nested archive bigger than the budget left is not read.
    nested = zipped([("inner.zip", zipped([("a.bin", bytes(range(256)) * 8000)]))])
    report = inspect(attachment("outer.zip", nested), ArchiveLimits(max_scan_bytes=1000), OWN)
    assert report.uninspectable == "inner.zip inside outer.zip is too large to check"


def test_tar_members_listed_are_capped() -> None:
    many = tarred([(f"f{i}.txt", b"x") for i in range(30)])
    report = inspect(attachment("a.tar", many), ArchiveLimits(max_entries=10), OWN)
    assert report.uninspectable == "a.tar has more than 10 files to check"


def test_a_truncated_archive_is_not_shown_safe() -> None:
    data = zipped([("a.pdf", b"%PDF")])
    cut = Attachment("big.zip", "application/zip", 50 * 1024 * 1024, "attachment", data)
    assert inspect(cut, LIMITS, OWN).uninspectable == "big.zip is too large to check"


@pytest.mark.parametrize(
    ("html", "risk", "active"),
    [
        ("<p>Invoice 1042</p>", None, None),
        ("<script>print()</script>", "runs a script", "runs a script"),
        ('<img src=x ONERROR="go()">', "runs a script when", "runs a script when"),
        ('<form action="https://www.example-motors.test/a">', None, "has a form"),
        ('<form action="https://pay.other.example/a">', "sends what is typed", "has a form"),
        ('<input type="password">', "asks for a password", "has a form"),
        ('<iframe src="https://x.example">', None, "embeds"),
        ('<meta http-equiv="refresh" content="0;url=https://x.example">', None, "embeds"),
        ("<p>Book online = save 10%</p>", None, None),
        ("<p>Read about the onion=layers</p>", None, None),
    ],
)
def test_html_risk_and_active_content(html: str, risk: str | None, active: str | None) -> None:
    for expected, got in ((risk, html_risk(html, OWN)), (active, active_content(html))):
        assert (got is None) if expected is None else (got is not None and expected in got)
