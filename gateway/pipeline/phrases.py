"""Weighted phrase lists, and where each name's phrases first match in a text (pure).

A ``PhraseTable`` is built from ``(name, weight, patterns)`` rows (case-insensitive
regular expressions); ``table.scan(text)`` gives, for each name, the first place any of
its patterns matches. A name counts once however many of its phrases match.

Why not one alternation of every pattern: Python's ``re`` tries every branch at every word
start, which cost 2 ms per table on an 8,000-character body, the largest single cost of a
message's checks. A pattern is tried only when every literal it holds outside its
alternatives occurs in the lower-cased text (``in``, C speed). Most phrases begin with a
literal word (``coupons?``) or one of a few (``as low as|starting at``): for those,
``str.find`` gives the only places a match can start, and the pattern is tried there
alone; the rest are searched. In ASCII text, a pattern that holds a whole word ("free"
between word boundaries) is first looked up in the set of the text's words. Each pattern
is judged on its own, so a phrase is found even where another name's phrase overlaps it.
``reference_scan`` is the same definition written plainly (every pattern searched); the
tests hold the two equal on arbitrary text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from re import _casefix  # type: ignore[attr-defined]
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parser  # type: ignore[attr-defined]
from typing import Any

from gateway.mail.words import words_of

__all__ = ["Hit", "PhraseTable", "Text", "reference_scan"]

# A prefix shorter than this has too many occurrences to be worth trying one by one.
MIN_PREFIX = 2

# re's IGNORECASE matches some characters that str.lower() does not map to the same
# letter (the long s, dotless i, the Kelvin sign, final sigma...): fold each class of
# them to one character, in the text and in the literals alike.
_FOLD = str.maketrans(
    {
        chr(extra): chr(min(key, *extras))
        for key, extras in _casefix._EXTRA_CASES.items()
        for extra in (key, *extras)
        if extra != min(key, *extras)
    }
)


_WORD = re.compile(r"\w+")


def _fold(text: str) -> str:
    return text.lower().translate(_FOLD)


@dataclass(frozen=True, slots=True)
class Hit:
    """Where a name first matched: its weight, the start, and the words matched."""

    weight: float
    start: int
    words: str


@dataclass(frozen=True, slots=True)
class _Pattern:
    name: str
    weight: float
    regex: re.Pattern[str]
    prefixes: tuple[str, ...]  # every match starts with one of these (folded); or ()
    needs: tuple[str, ...]  # every match contains each of these (folded)
    words: tuple[str, ...]  # ... and each of these as a whole word (folded)


def _leading(items: Any) -> tuple[str, ...]:  # re's parse tree is untyped
    """The literal strings one of which starts every match of ``items``, or ()."""
    seq = list(items)
    while seq and seq[0][0] is sre_constants.AT:
        seq.pop(0)  # \b and friends consume nothing
    run = []
    for op, arg in seq:
        if op is not sre_constants.LITERAL:
            break
        run.append(chr(arg))
    if run:
        return (_fold("".join(run)),)
    if seq and seq[0][0] is sre_constants.BRANCH:
        alternatives = [_leading(alt) for alt in seq[0][1][1]]
        if all(alternatives):
            return tuple(dict.fromkeys(p for alt in alternatives for p in alt))
    return ()


def _literal_runs(items: Any) -> tuple[str, ...]:  # re's parse tree is untyped
    """The runs of literal characters at the top level of ``items``: every match has each."""
    runs, run = [], []
    for op, arg in [*items, (None, None)]:
        if op is sre_constants.LITERAL:
            run.append(chr(arg))
            continue
        if run:
            runs.append(_fold("".join(run)))
        run = []
    return tuple(dict.fromkeys(runs))


def _whole_words(items: Any) -> tuple[str, ...]:  # re's parse tree is untyped
    """Words every match holds whole.

    A word of a top-level literal run with a non-word character or a word boundary on
    each side of it.
    """
    words: list[str] = []
    run: list[str] = []
    after_boundary = starts_bounded = False
    for op, arg in [*items, (None, None)]:
        if op is sre_constants.LITERAL:
            if not run:
                starts_bounded = after_boundary
            run.append(chr(arg))
            after_boundary = False
            continue
        boundary = op is sre_constants.AT and arg is sre_constants.AT_BOUNDARY
        if run:
            text = "".join(run)
            for word in _WORD.finditer(text):
                whole_left = word.start() > 0 or starts_bounded
                whole_right = word.end() < len(text) or boundary
                if whole_left and whole_right:
                    words.append(_fold(word.group()))
            run = []
        after_boundary = boundary
    return tuple(dict.fromkeys(words))


def _plan(name: str, weight: float, pattern: str) -> _Pattern:
    tree = sre_parser.parse(pattern, re.IGNORECASE)
    prefixes = _leading(tree)
    if prefixes and min(map(len, prefixes)) < MIN_PREFIX:
        prefixes = ()
    regex = re.compile(pattern, re.IGNORECASE)
    return _Pattern(name, weight, regex, prefixes, _literal_runs(tree), _whole_words(tree))


def _first(
    p: _Pattern, text: str, folded: str, words: frozenset[str] | None
) -> re.Match[str] | None:
    """The first match of ``p`` in ``text``.

    ``folded`` is ``text`` folded (the same length); ``words`` its words, when known.
    """
    if words is not None:
        for word in p.words:
            if word not in words:
                return None
    for literal in p.needs:
        if literal not in folded:
            return None
    if p.prefixes:
        found: re.Match[str] | None = None
        for prefix in p.prefixes:
            at = folded.find(prefix)
            # Only places before the best match so far can give an earlier one.
            while at >= 0 and (found is None or at < found.start()):
                match = p.regex.match(text, at)
                if match is not None:
                    found = match
                    break
                at = folded.find(prefix, at + 1)
        return found
    return p.regex.search(text)


def _hits(matches: list[tuple[_Pattern, re.Match[str]]]) -> dict[str, Hit]:
    """Each name's earliest match (the earlier-listed pattern on a tie), in text order."""
    first: dict[str, Hit] = {}
    for p, match in matches:
        hit = first.get(p.name)
        if hit is None or match.start() < hit.start:
            first[p.name] = Hit(p.weight, match.start(), match.group(0).strip())
    return dict(sorted(first.items(), key=lambda item: item[1].start))


@dataclass(frozen=True, slots=True)
class PhraseTable:
    """``(name, weight, patterns)`` rows, scanned as the module docstring says."""

    names: tuple[tuple[str, float], ...]
    patterns: tuple[_Pattern, ...]

    @classmethod
    def build(cls, rows: tuple[tuple[str, float, tuple[str, ...]], ...]) -> PhraseTable:
        """Compile the rows (each pattern case-insensitive)."""
        return cls(
            tuple((name, weight) for name, weight, _ in rows),
            tuple(_plan(name, weight, p) for name, weight, group in rows for p in group),
        )

    def scan(self, text: str | Text) -> dict[str, Hit]:
        """Each name's first hit in ``text``, in the order found."""
        read = text if isinstance(text, Text) else Text.of(text)
        if len(read.folded) != len(read.text):
            # A character lower-cases to two (U+0130): positions would not line up.
            return reference_scan(self, read.text)
        matches = []
        for p in self.patterns:
            match = _first(p, read.text, read.folded, read.words)
            if match is not None:
                matches.append((p, match))
        return _hits(matches)


@dataclass(frozen=True, slots=True)
class Text:
    """A text and what every table's scan reads from it, worked out once."""

    text: str
    folded: str
    # For ASCII text, the set of its words (one translate and one split, in C) answers
    # most "is this phrase possible at all" questions by a lookup instead of a scan.
    words: frozenset[str] | None

    @classmethod
    def of(cls, text: str) -> Text:
        """Fold ``text`` and, when it is ASCII, collect its words."""
        folded = _fold(text)
        return cls(text, folded, frozenset(words_of(folded)) if text.isascii() else None)


def reference_scan(table: PhraseTable, text: str) -> dict[str, Hit]:
    """``table.scan`` by definition: every pattern searched over the whole text."""
    matches = []
    for p in table.patterns:
        match = p.regex.search(text)
        if match is not None:
            matches.append((p, match))
    return _hits(matches)
