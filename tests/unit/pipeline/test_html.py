from __future__ import annotations

import time
from pathlib import Path
from types import MappingProxyType

import pytest

from gateway.pipeline.base import CheckContext
from gateway.pipeline.html import MAX_DEPTH, analyse, has_visible_content, to_text
from gateway.policy.model import CheckRule, DealerPolicy
from gateway.policy.options import BrokenHtmlOptions
from gateway.types import Action
from tests.unit.pipeline.samples import Row, check_row, ids

BROKEN, NO_TEXT, CLIP = "broken-html", "html-without-text", "gmail-clipping"
ROWS: list[Row] = [
    ("good-html.eml", set(), {BROKEN, NO_TEXT, CLIP}),
    ("html-misnested.eml", {BROKEN}, {NO_TEXT, CLIP}),
    ("html-cut-off.eml", {BROKEN}, set()),
    ("html-empty-body.eml", {BROKEN}, set()),
    ("html-mso-messy.eml", set(), {BROKEN}),  # no doctype, unquoted attributes, mso blocks
    ("html-only.eml", {NO_TEXT}, {BROKEN}),
    ("html-over-102kb.eml", {CLIP}, {BROKEN}),
    ("unknown1-toplevel.eml", set(), {NO_TEXT}),  # no HTML body: the stray check's job
]


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_html_samples(row: Row, dealer: DealerPolicy, ctx: CheckContext) -> None:
    check_row(row, dealer, ctx)


@pytest.mark.parametrize(
    ("doc", "severity", "words"),
    [
        ("<p>Hello <b>Sam</p></b>", "major", "misnested"),
        ("<div><p>Hi</p></span></div>", "major", "misnested"),
        ("<p>Hi</p></p>", "major", "end tag"),
        ('<p>Hi</p><a href="https://x.test/a>Book</a><p class="y">more</p>', "major", "quote"),
        ('<p>Hi</p><a href="https://x.test', "critical", "cut off"),
        ("<p>Hi</p><!-- footer", "critical", "comment"),
        ("<html><body>   </body></html>", "critical", "no visible content"),
        ("<table><tr><td>Hi</td></tr></table>", "minor", "doctype"),
        ("<!DOCTYPE html><html><body><p>Hi</p></body></html>", None, ""),
    ],
)
def test_grading(doc: str, severity: str | None, words: str) -> None:
    result = analyse(doc)
    assert result.severity == severity, result
    assert words in "; ".join(text for _, text in result.problems)


def test_min_severity_option(dealer: DealerPolicy, ctx: CheckContext) -> None:
    minor = CheckRule(Action.TAG, BrokenHtmlOptions(min_severity="minor"))
    strict = DealerPolicy(
        **{
            **{f: getattr(dealer, f) for f in dealer.__dataclass_fields__},
            "checks": MappingProxyType({**dealer.checks, "broken-html": minor}),
        }
    )
    check_row(("html-mso-messy.eml", {BROKEN}, set()), strict, ctx)


def test_deep_nesting_is_bounded() -> None:
    doc = "<div>" * 200_000 + "x"
    started = time.perf_counter()
    result = analyse(doc)
    assert time.perf_counter() - started < 2
    assert result.severity == "critical"
    assert "nested" in result.problems[0][1]
    shallow = "<div>" * (MAX_DEPTH // 2) + "x" + "</div>" * (MAX_DEPTH // 2)
    assert analyse(shallow).severity in (None, "minor")


def test_visible_content_and_text_rendering() -> None:
    assert has_visible_content('<table><tr><td><img src="cid:logo"></td></tr></table>')
    assert not has_visible_content("<style>p {}</style><!--[if mso]>x<![endif]-->&nbsp;")
    text = to_text('<p>Hello</p><p><a href="https://x.test/b">Book</a><br>Bye</p>')
    assert text == "Hello\nBook (https://x.test/b)\nBye\n"


CORPUS = Path(__file__).resolve().parents[4] / "shared" / "corpus"
TREE = CORPUS / "html5lib-tests" / "tree-construction"


def html5lib_snippets() -> list[str]:
    snippets: list[str] = []
    for path in sorted(TREE.glob("*.dat")):
        for block in path.read_text(encoding="utf-8").split("\n#data\n"):
            snippets.append(block.removeprefix("#data\n").split("\n#errors")[0])
    return snippets


@pytest.mark.skipif(not TREE.is_dir(), reason="shared corpus not present")
def test_html5lib_malformed_snippets_are_graded_without_error() -> None:
    snippets = html5lib_snippets()
    assert len(snippets) > 1500
    started = time.perf_counter()
    for snippet in snippets:
        result = analyse(snippet)
        assert result.severity in (None, "minor", "major", "critical")
    assert time.perf_counter() - started < 20
