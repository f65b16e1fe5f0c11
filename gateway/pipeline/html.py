"""Checks on the HTML body: broken structure, no text alternative, Gmail clipping (pure).

The parser
    Structure is judged by html5ever (the WHATWG HTML parser of the Servo project, in Rust)
    through ``markupever``. It implements the same tree-construction algorithm the
    mailbox providers' webmail and browsers use, so what it calls an error is what a
    reader's client has to guess at, and it reports those errors while parsing. A 30 KB
    template parses in about half a millisecond; html5lib reports the same errors but is
    pure Python and some hundred times slower, ``html.parser`` reports no errors at all
    (and CPython 3.11.7's has known CPU-exhaustion bugs), and selectolax/lexbor is as
    fast but does not expose the errors. The cheap default mode is used; its coarse
    messages are enough to grade most documents, and only a document with an ambiguous
    "Unexpected token" is parsed again with exact errors to tell a stray end tag from a
    missing doctype.

Bounds
    Both html5ever and lexbor spend time quadratic in the nesting depth (200,000 nested
    ``<div>`` take minutes). So when a document has many tags, a linear scan first
    estimates the depth, and a document nested deeper than ``MAX_DEPTH`` is reported as
    broken without being parsed; a document over ``MAX_HTML_CHARS`` is not parsed either.
    Both outcomes are deterministic (never "it took too long this time").

Severity
    Real email templates are messy: no doctype, duplicate attributes, text inside tables,
    ``<!--[if mso]>`` blocks. Those are *minor* and reported only when a dealer asks for
    it (``min_severity``). *Major* is structure that renders differently from what was
    written: misnested or unclosed elements, stray end tags, quote characters inside tag
    names (an unbalanced attribute quote). *Critical* is a document cut off inside a tag,
    attribute or comment, one with no visible content, or one too deep to read.
"""

from __future__ import annotations

import html as html_entities
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from markupever import HtmlOptions, Parser

from gateway.mail.message import ParsedMessage
from gateway.pipeline.base import CheckContext, Finding
from gateway.policy.model import DealerPolicy
from gateway.policy.options import BrokenHtmlOptions, GmailClippingOptions, Severity

MAX_DEPTH = 1000  # deeper than any real template (they nest tables a few dozen levels)
MAX_HTML_CHARS = 4 * 1024 * 1024
_DEPTH_SCAN_ABOVE = 2500  # fewer tags than this cannot cost more than a few milliseconds
SEVERITIES: tuple[Severity, ...] = typing.get_args(Severity)  # least severe first

# Elements that never have content, and those whose end tag may be left out: neither
# deepens the tree the way an unclosed <div> does (WHATWG HTML §13.1.2, §13.1.2.4).
_VOID = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
        "p",
        "li",
        "td",
        "th",
        "tr",
        "dt",
        "dd",
        "option",
        "optgroup",
        "thead",
        "tbody",
        "tfoot",
        "colgroup",
        "rb",
        "rt",
        "rp",
    ]
)
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9:-]*)[^<>]*?(/?)>")
_INVISIBLE = re.compile(
    r"<!--.*?(?:-->|$)|<(style|script|title|template)\b[^<>]*>.*?(?:</\1\s*>|$)",
    re.IGNORECASE | re.DOTALL,
)
_ANY_TAG = re.compile(r"<[^>]*>?")
_IMAGE = re.compile(r"<img\b[^<>]{0,2000}?\bsrc\s*=", re.IGNORECASE)
_BLOCK_END = re.compile(r"<br\b[^>]*>|</(?:p|div|tr|h[1-6]|li|table|blockquote)\s*>", re.I)
# Bounded so that junk with thousands of unclosed <a> stays linear.
_LINK = re.compile(r"<a\b([^<>]{0,4000})>(.{0,4000}?)</a\s*>", re.IGNORECASE | re.DOTALL)
_HREF = re.compile(r"""\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)
_SPACE = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*(?:\n\s*)+")

# html5ever's messages (default mode) and the grade each gets. Anything not listed is minor.
_MAJOR_MESSAGES = {
    "Unexpected open tag at end of body": "elements left open at the end of the document",
    "Found special tag while closing generic tag": "misnested elements",
    "Formatting element not current node": "misnested formatting elements",
    "Formatting element not in scope": "misnested formatting elements",
    "Formatting element not open": "end tag without a start tag",
    "Unexpected open element": "misnested elements",
    "No <p> tag to close": "end tag without a start tag",
    "No matching tag to close": "end tag without a start tag",
    "No heading tag to close": "end tag without a start tag",
    "Bad character": "a quote or < inside a tag (unbalanced attribute quotes?)",
}
_EXACT_STRAY_END = re.compile(r"Unexpected token Tag\(Tag \{ kind: EndTag, name: Atom\('(\w+)'")


@dataclass(frozen=True, slots=True)
class HtmlProblems:
    """What the structural analysis of one HTML document found."""

    severity: str | None  # the worst grade seen, None for a clean document
    problems: tuple[tuple[str, str], ...]  # (grade, description), worst first, deduplicated


def _grade_rank(grade: str) -> int:
    return SEVERITIES.index(grade)


def _estimated_depth(doc: str) -> int:
    """Upper estimate of the element nesting depth, in one linear pass."""
    depth = deepest = 0
    for match in _TAG.finditer(doc):
        name = match.group(2).lower()
        if name in _VOID or match.group(3):
            continue
        if match.group(1):
            depth = max(0, depth - 1)
        else:
            depth += 1
            deepest = max(deepest, depth)
    return deepest


def _parse_errors(doc: str, exact: bool) -> list[str]:
    parser = Parser(HtmlOptions(exact_errors=exact))
    parser.process(doc)
    parser.finish()
    return parser.errors()


@lru_cache(maxsize=4)  # one message at a time per worker thread; documents can be MBs
def analyse(doc: str) -> HtmlProblems:
    """Grade the structural problems of one HTML document (memoised: pure in ``doc``)."""
    found: dict[str, str] = {}  # description -> grade

    def add(grade: str, description: str) -> None:
        if description not in found or _grade_rank(grade) > _grade_rank(found[description]):
            found[description] = grade

    if len(doc) > MAX_HTML_CHARS:
        add("critical", f"the HTML is too large to check ({len(doc) // 1024} KB)")
        return _result(found)
    if doc.count("<") > _DEPTH_SCAN_ABOVE:
        depth = _estimated_depth(doc)
        if depth > MAX_DEPTH:
            add("critical", f"elements are nested about {depth} levels deep")
            return _result(found)
    errors = _parse_errors(doc, exact=False)
    for error in errors:
        if error.startswith("Saw EOF in state"):
            state = error.removeprefix("Saw EOF in state ").split("(")[0]
            add("critical", f"the HTML is cut off inside a {_eof_place(state)}")
        elif error in _MAJOR_MESSAGES:
            add("major", _MAJOR_MESSAGES[error])
        elif error != "Unexpected token":
            add("minor", error[:80].lower())
    if "Unexpected token" in errors:
        # Default mode says only "Unexpected token"; exact mode says which one.
        for error in _parse_errors(doc, exact=True):
            if not error.startswith("Unexpected token"):
                continue
            stray = _EXACT_STRAY_END.match(error)
            if stray is not None and "insertion mode Initial" not in error:
                add("major", f"stray end tag </{stray.group(1)}>")
            elif "Eof in insertion mode Text" in error:
                add("critical", "the HTML is cut off inside a script, style or title")
            elif "insertion mode Initial" in error:
                add("minor", "no doctype")
            else:
                add("minor", "unexpected markup")
    if not has_visible_content(doc):
        add("critical", "the HTML has no visible content")
    return _result(found)


def _eof_place(state: str) -> str:
    if state.startswith("AttributeValue"):
        return "quoted attribute value (an unbalanced quote?)"
    if "Comment" in state:
        return "comment that is never closed"
    if "Doctype" in state or "DOCTYPE" in state:
        return "doctype"
    return "tag"


def _result(found: dict[str, str]) -> HtmlProblems:
    ordered = sorted(found.items(), key=lambda item: -_grade_rank(item[1]))
    problems = tuple((grade, description) for description, grade in ordered)
    return HtmlProblems(problems[0][0] if problems else None, problems)


@lru_cache(maxsize=4)  # one message at a time per worker thread; documents can be MBs
def strip_invisible(doc: str) -> str:
    """Remove comments (``<!--[if mso]>`` blocks included), style, script and title."""
    return _INVISIBLE.sub(" ", doc)


def has_visible_content(doc: str) -> bool:
    """Tell whether the document shows any text or image to a reader."""
    body = strip_invisible(doc)
    if _IMAGE.search(body):
        return True
    text = html_entities.unescape(_ANY_TAG.sub(" ", body))
    return bool(text.strip(" \t\r\n\f\v\u00a0\u200b\u200c\u200d\ufeff"))


def links(doc: str) -> Iterator[tuple[str | None, str]]:
    """Yield (href, visible text) of every ``<a>`` outside comments, style and script.

    ``href`` is ``None`` for an anchor without one; entities are decoded in both.
    """
    for match in _LINK.finditer(strip_invisible(doc)):
        href_match = _HREF.search(match.group(1))
        href: str | None = None
        if href_match is not None:
            raw = next(g for g in href_match.groups() if g is not None)
            href = html_entities.unescape(raw).strip()
        text = html_entities.unescape(_ANY_TAG.sub("", match.group(2)))
        yield href, _SPACE.sub(" ", text).strip()


def to_text(doc: str) -> str:
    """Render HTML as readable plain text: block breaks kept, links as "text (url)"."""
    body = strip_invisible(doc)

    def link(match: re.Match[str]) -> str:
        href_match = _HREF.search(match.group(1))
        text = match.group(2)
        if href_match is None:
            return text
        href = next(g for g in href_match.groups() if g is not None)
        if href.startswith(("http:", "https:", "mailto:")) and href not in text:
            return f"{text} ({href})"
        return text

    body = _LINK.sub(link, body)
    body = _BLOCK_END.sub("\n", re.sub(r"\s*\n\s*", " ", body))
    text = html_entities.unescape(_ANY_TAG.sub("", body))
    lines = [_SPACE.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip() + "\n"


def broken_html(msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext) -> Iterator[Finding]:
    """Find HTML parts with problems at or above the dealer's ``min_severity``."""
    floor = _grade_rank(dealer.options(BrokenHtmlOptions).min_severity)
    for number, doc in enumerate(msg.html_parts, start=1):
        result = analyse(doc)
        if result.severity is None or _grade_rank(result.severity) < floor:
            continue
        shown = [text for grade, text in result.problems if _grade_rank(grade) >= floor]
        where = "the HTML" if len(msg.html_parts) == 1 else f"HTML part {number}"
        yield Finding(
            "broken-html",
            f"{where} has {result.severity} problems: {'; '.join(shown[:3])}",
            data={"severity": result.severity, "part": str(number), "problems": "; ".join(shown)},
        )


def html_without_text(
    msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext
) -> Iterator[Finding]:
    """Find a message with HTML but no non-empty text/plain alternative."""
    if not any(part.strip() for part in msg.html_parts):
        return
    if any(part.strip() for part in msg.text_parts):
        return
    yield Finding("html-without-text", "the message has an HTML part but no plain-text part")


def gmail_clipping(
    msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext
) -> Iterator[Finding]:
    """Find HTML bigger than Gmail shows before "[Message clipped]"."""
    limit = dealer.options(GmailClippingOptions).max_bytes
    # Cheap bound first: a str never encodes to fewer UTF-8 bytes than it has characters,
    # nor to more than four times as many.
    if sum(len(part) for part in msg.html_parts) * 4 <= limit:
        return
    size = sum(len(part.encode("utf-8", "replace")) for part in msg.html_parts)
    if size > limit:
        yield Finding(
            "gmail-clipping",
            f"the HTML is {size // 1024} KB; Gmail clips it after {limit // 1024} KB",
            data={"bytes": str(size), "limit": str(limit)},
        )
