"""Check for template placeholders that reached the message unrendered (pure).

A CRM merge that failed leaves the placeholder in the mail: "Dear {{first_name}}". The
syntaxes recognised are those of the template engines and mail-merge tools dealers' CRMs
use: Mustache/Handlebars/Jinja ``{{first_name}}``, single-brace and ``${...}`` fields
``{FirstName}``, Salesforce/ExactTarget ``%%FirstName%%``, bracketed fields
``[FIRST NAME]``, Word mail-merge ``«FirstName»`` and ``$FirstName$``.

The patterns are deliberately narrow: a field is an identifier, not a phrase, so ordinary
text in brackets or guillemets ("[Click here]", « Bonjour ») is not taken for one. CSS
blocks and comments (which hold ``<!--[if mso]>`` blocks) are removed from HTML before
the search: CSS is full of braces, and nobody reads a comment.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from gateway.mail.message import ParsedMessage
from gateway.pipeline.base import CheckContext, Finding
from gateway.pipeline.html import strip_invisible
from gateway.policy.model import DealerPolicy

# Bracketed single words that are field names, not editorial text like "[PDF]".
_FIELD_WORDS = (
    "NAME|FIRSTNAME|LASTNAME|FULLNAME|EMAIL|PHONE|MOBILE|ADDRESS|CITY|STATE|ZIP|DEALER|"
    "DEALERSHIP|CUSTOMER|VEHICLE|MAKE|MODEL|YEAR|VIN|PRICE|SALESPERSON|COMPANY|DATE|TITLE"
)
# (characters that must be present, pattern). Separate patterns, each starting with a
# literal, let the regex engine skip ahead to candidates instead of trying every
# alternative at every position (a 30 KB template is searched in tens of microseconds).
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("{{", re.compile(r"\{\{\{?\s*[#/^>&!]?\s*[A-Za-z_][\w.\- ]{0,60}?\s*\}\}\}?")),  # {{name}}
    ("${", re.compile(r"\$\{\s*[A-Za-z_][\w.]{0,60}\s*\}")),  # ${first_name}
    ("{", re.compile(r"(?<![{\w$])\{[A-Za-z_][\w.]{0,60}\}(?!\})")),  # {FirstName}
    ("%%", re.compile(r"%%[A-Za-z_][\w.\-]{0,60}%%")),  # %%FirstName%%
    (
        "[",
        re.compile(
            r"\[(?:[A-Z][A-Z0-9]*(?:[ _][A-Z0-9]+){1,3}"  # [FIRST NAME], [FIRST_NAME]
            r"|[A-Z][a-z]+(?:[A-Z][a-z0-9]*)+"  # [FirstName]
            rf"|(?:{_FIELD_WORDS}))\]"  # [NAME]
        ),
    ),
    (
        "«",
        re.compile(
            r"«[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+|[a-z0-9][A-Z][A-Za-z0-9]*)»"  # «First_Name»
            r"|«[A-Z][A-Z0-9_]+»"  # «NAME»
        ),
    ),
    ("$", re.compile(r"(?<![\w$])\$[A-Za-z_][A-Za-z0-9_]{1,60}\$(?![\w$])")),  # $FirstName$
)


def placeholders(text: str) -> list[str]:
    """Every placeholder in ``text``, in the order of the patterns."""
    return [m.group(0) for needle, p in _PATTERNS if needle in text for m in p.finditer(text)]


_MAX_REPORTED = 5


def _search(where: str, text: str, seen: dict[str, str]) -> None:
    for field in placeholders(text):
        if field not in seen:
            seen[field] = where
        if len(seen) >= _MAX_REPORTED:
            return


def unfilled_merge_field(
    msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext
) -> Iterator[Finding]:
    """Find placeholders in the subject, the text parts and the HTML parts."""
    seen: dict[str, str] = {}
    if msg.subject:
        _search("subject", msg.subject, seen)
    for text in msg.text_parts:
        _search("text", text, seen)
    for doc in msg.html_parts:
        _search("HTML", strip_invisible(doc), seen)
    if not seen:
        return
    by_place: dict[str, list[str]] = {}
    for field, where in seen.items():
        by_place.setdefault(where, []).append(field)
    places = "; ".join(f"{', '.join(fields)} in the {where}" for where, fields in by_place.items())
    yield Finding(
        "unfilled-merge-field",
        f"unfilled placeholder {places}",
        data={"fields": " ".join(seen), "where": ",".join(by_place)},
    )
