"""Check for template placeholders that reached the message unrendered (pure).

A CRM merge that failed leaves the placeholder in the mail: "Dear {{first_name}}". The
syntaxes recognised are those the template engines, CRMs and mail tools dealers use
document for their merge fields:

==========================================  ===============================================
``{{first_name}}`` ``{{ contact.firstname }}``  Mustache, Handlebars, Jinja, Liquid (with
``{{ name | default: "there" }}``               filters), HubSpot, Marketo ``{{lead.First
``{% if x %}`` ``{{{unsubscribe}}}``            Name:default=Friend}}``, SendGrid, Klaviyo
``*|FNAME|*`` ``*|IF:FNAME|*``                  Mailchimp / Mandrill
``{!Contact.FirstName}`` ``{!firstname_fix}``   Salesforce Classic, AWeber, Dynamics classic
``${Contacts.First Name}`` ``$!{x}``            Zoho CRM, FreeMarker, Velocity
``%%FirstName%%`` ``%%=v(@x)=%%``               Salesforce Marketing Cloud, Pardot
``%FIRSTNAME%``                                 ActiveCampaign and ``%field%`` templates
``[[FIRSTNAME OR "x"]]`` ``[[var:x]]``          Constant Contact, GetResponse, Mailjet
``[firstname,fallback=]`` ``[FIRST NAME]``      Campaign Monitor/Sendy, phpList, bracketed
                                                fields written by hand
``<<First Name>>`` ``«FirstName»``              mail merge (ACT!, Word, Google Docs)
``#FirstName#`` ``$FirstName$``                 ColdFusion-style, vtiger ``$contacts-x$``
``-first_name-``                                SendGrid legacy substitution tags
``~Contact.FirstName~``                         Keap (Infusionsoft)
``{contactfield=x}`` ``{$name}`` ``{First}``    Mautic, MailerLite, single braces
``<%= x %>`` ``[% x %]`` ``((x))``              ERB/EJS/Adobe Campaign, Emma, Notify-style
``$(FIRST_NAME)$`` ``%(first_name)s``           Responsys, Python formatting
==========================================  ===============================================

Ordinary text must not be taken for a field, so the loose syntaxes (brackets, angle
brackets, ``#…#``, ``%…%``, hyphens, guillemets) need an identifier (``first_name``,
``FirstName``) or a field word (``[Customer Name]``, ``<<Appointment Date>>``); editorial
brackets ("[Sale ends Friday]", "[$24,999]", "[LinkedIn]"), hashtags, percentages
("20% off", "0%APR"), URL escapes (``%E9s``, ``%20``), quoted attachments
(``<<invoice.pdf>>``) and pagers (``<< Previous``) are not. CSS blocks and comments (which
hold ``<!--[if mso]>`` blocks) are removed from HTML before the search: CSS is full of
braces, and nobody reads a comment. Entity-escaped ``&lt;&lt;Name&gt;&gt;`` and
``&laquo;Name&raquo;`` are unescaped for the angle and guillemet syntaxes.

Every pattern starts with a literal and is tried only when its literal occurs: the regex
engine then jumps from candidate to candidate, and the context checks (what precedes a
match, which words it holds) run in Python on the few candidates, so a 30 KB template is
searched in well under a millisecond.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from gateway.mail.message import ParsedMessage
from gateway.pipeline.base import CheckContext, Finding
from gateway.pipeline.html import strip_invisible
from gateway.policy.model import DealerPolicy


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Last words that make a bracketed or angled phrase a field name: "[Customer Name]",
# "<<Appointment Date>>", "[VEHICLE MODEL]", "[DealerPhone]". Words that also end ordinary
# phrases ("time", "offer", "code", "total", "value") are left out on purpose.
_FIELD_LAST = _wordset(
    "name names firstname lastname fullname fname lname surname salutation title email phone "
    "mobile cell fax address street city state province zip zipcode postcode country company "
    "dealership dealer vehicle make model year trim vin stock mileage price msrp salesperson "
    "rep advisor owner manager signature link url id number date birthday appointment"
)
# A single word in brackets is a field only if it can be nothing else: "[FIRSTNAME]",
# "[email]", "<<Salutation>>". "[Email]" or "[Phone]" is the alt text of an icon.
_FIELD_SINGLE = _wordset(
    "name firstname lastname fullname fname lname surname salutation email phone mobile "
    "address city state zip zipcode postcode country company vin unsubscribe dealership "
    "salesperson"
)
_NAME_SINGLE = _wordset("name firstname lastname fullname fname lname surname salutation")
# First words of editorial phrases: "[Save the Date]", "[Click Here]", "<<Back to list>>".
_EDITORIAL_START = _wordset(
    "save click call see read view get shop book visit join text reply learn watch find "
    "check open download start try ask meet enter win claim back go more next previous "
    "prev"
)
_HUMP = re.compile(r"[A-Z]+(?![a-z])|[A-Z][a-z0-9]*|[a-z0-9]+")
_SEPARATORS = re.compile(r"[\s_.:\-]+")
_HEX_ESCAPE = re.compile(r"[0-9A-Fa-f][0-9]")
_ENTITY = re.compile(
    r"&(?:lt|gt|laquo|raquo|#0*(?:60|62|171|187)|#x0*(?:3c|3e|ab|bb));", re.IGNORECASE
)
_ENTITY_CHARS = {"lt": "<", "gt": ">", "laquo": "«", "raquo": "»", "60": "<", "62": ">",
                 "171": "«", "187": "»", "3c": "<", "3e": ">", "ab": "«", "bb": "»"}  # fmt: skip

Accept = Callable[[str, re.Match[str]], bool]


def _words(phrase: str) -> list[str]:
    """Lower-case words of a field phrase: "Customer First_Name", "CustomerFirstName"."""
    return [w.lower() for part in _SEPARATORS.split(phrase) for w in _HUMP.findall(part)]


def _field_name(phrase: str) -> bool:
    """Tell whether a bracketed phrase reads as a field name rather than editorial text."""
    words = _words(phrase)
    if not words or words[0] in _EDITORIAL_START:
        return False
    if "_" in phrase and " " not in phrase:
        return True  # first_name, FIRST_NAME: nobody writes prose like that
    if len(words) == 1:
        word = words[0]
        if phrase[:1].isupper() and phrase[1:].islower():
            return word in _NAME_SINGLE  # "[Name]", but not "[Email]", "[Reminder]"
        return word in _FIELD_SINGLE
    return words[-1] in _FIELD_LAST


def _glued(text: str, match: re.Match[str], before: str, after: str) -> bool:
    """Tell whether a match touches a letter, digit or one of the given characters."""
    start, end = match.start(), match.end()
    previous = text[start - 1] if start > 0 else " "
    following = text[end] if end < len(text) else " "
    return previous.isalnum() or previous in before or following.isalnum() or following in after


def _free(before: str, after: str) -> Accept:
    """Accept a match that is not glued to a word or to the given characters."""
    return lambda text, match: not _glued(text, match, before, after)


def _named(before: str, after: str) -> Accept:
    """Accept a free-standing match whose first group reads as a field name."""
    return lambda text, match: (
        not _glued(text, match, before, after) and _field_name(match.group(1))
    )


def _percent(text: str, match: re.Match[str]) -> bool:
    # "%E9s%20" is two URL escapes (a hex pair and "s"), not a field; "%%x%%" is its own
    # syntax; "20% off" never closes.
    return not _HEX_ESCAPE.match(match.group(1)) and not _glued(text, match, "%", "")


def _guillemets(text: str, match: re.Match[str]) -> bool:
    # «FirstName» «FIRST_NAME» «Title», but not « Bonjour » or «Merci».
    inner = match.group(1)
    return (
        inner.isupper() or _field_name(inner) or (inner.istitle() and inner.lower() in _FIELD_LAST)
    )


def _sendgrid(text: str, match: re.Match[str]) -> bool:
    # Hyphens join words ("one-owner", "-webkit-"): only a free-standing -first_name- or
    # -name- is a SendGrid substitution tag.
    inner = match.group(1)
    return not _glued(text, match, "-", "-") and ("_" in inner or inner.lower() in _FIELD_SINGLE)


_PHRASE = r"[A-Za-z][A-Za-z0-9_]*(?: [A-Za-z][A-Za-z0-9_]*){0,3}"

# (first character, pattern starting with it, extra test or None). One pattern per first
# character where no extra test is needed; a lookbehind placed after the first character
# rejects glued candidates ("font-family", "#fff", "100%") without losing the fast scan.
_PATTERNS: tuple[tuple[str, re.Pattern[str], Accept | None], ...] = (
    (
        "{",
        re.compile(
            # {{name}} {{ contact.firstname }} {{ x | default: "y" }} {{#if}} {{{raw}}}
            # {{${x} | default: 'y'}}
            r"\{\{\{?\s*[#/^>&!~*-]?\s*(?:[A-Za-z_@]|\$\{[^{}\n]*\})"
            r"(?:[^{}\n]|\$\{[^{}\n]*\}){0,120}?\}\}\}?"
            r"|\{%-?\s*[A-Za-z_][^%\n]{0,120}?%\}"  # {% if x %}
        ),
        None,
    ),
    # {FirstName} {First Name} {!Contact.FirstName} {!Contact:First Name;} {$name}
    # {contactfield=firstname}
    (
        "{",
        re.compile(
            r"\{(?<![\w{$]\{)(?:![A-Za-z_][^{}\n]{0,80}|\$[A-Za-z_]\w{0,40}|[A-Za-z_][\w.]{0,60}"
            r"(?:=[\w.]{1,40})?|[A-Z][a-z]+(?: [A-Z][a-z]+){1,3})\}"
        ),
        _free("{$", "}"),
    ),
    (
        "$",
        re.compile(
            r"\$(?:!?\{\s*!?[A-Za-z_][^{}\n]{0,80}\}"  # ${Contacts.First Name} $!{x}
            r"|\([A-Za-z_]\w{0,60}\)\$"  # $(FIRST_NAME)$
            r"|\[[A-Za-z_][^\[\]$\n]{0,60}\]\$)"  # $[LI:FIRSTNAME]$
        ),
        None,
    ),
    ("$", re.compile(r"\$(?<![\w$]\$)[A-Za-z_][A-Za-z0-9_\-]{1,60}\$"), _free("$", "$")),
    (
        "%",
        re.compile(
            r"%%(?:[A-Za-z_][\w.\-]{0,60}|=[^%\n]{1,100}=|\[[^\n]{0,200}?\])%%"  # %%x%%
            r"|%\([A-Za-z_]\w{0,40}\)[sdrif]"  # %(first_name)s
        ),
        None,
    ),
    ("%", re.compile(r"%(?<![\w%]%)([A-Za-z_][A-Za-z0-9_]{2,40})%"), _percent),  # %FIRSTNAME%
    ("*", re.compile(r"\*\|[A-Za-z_][^|*\n]{0,60}\|\*"), None),  # *|FNAME|* *|IF:X|*
    (
        "[",
        re.compile(
            r"\[\[\s*[A-Za-z_][^\[\]\n]{0,80}?\s*\]\]"  # [[FIRSTNAME]] [[var:x]]
            r"|\[%\s*[A-Za-z_][^%\]\n]{0,100}?%\]"  # [% member:first_name %]
            r"|\[[A-Za-z_]\w{0,40},\s*fallback=[^\]\n]{0,60}\]"  # [firstname,fallback=]
        ),
        None,
    ),
    # [FIRST NAME] [First Name] [FirstName] [FIRST_NAME] [first_name] [NAME] [firstname]
    ("[", re.compile(r"\[(?<![\w\[]\[)(" + _PHRASE + r")\]"), _named("[", "]")),
    ("<", re.compile(r"<<(" + _PHRASE + r")>>"), _named("<", ">")),  # <<First Name>>
    ("<", re.compile(r"<%[=\-#]?\s*[^%\n]{1,120}?%>"), None),  # <%= first_name %>
    ("(", re.compile(r"\(\((" + _PHRASE + r")\)\)"), _named("(", ")")),  # ((first_name))
    ("«", re.compile(r"«([A-Za-z][A-Za-z0-9_]*)»"), _guillemets),  # «FirstName»
    ("#", re.compile(r"##[A-Za-z_]\w{1,40}##"), None),  # ##firstname##
    ("#", re.compile(r"#(?<![\w#&]#)[A-Za-z_][\w:.]{0,40}#"), _free("#&", "#")),  # #FirstName#
    # -first_name-
    ("-", re.compile(r"-(?<![\w-]-)([A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*)-"), _sendgrid),
    ("~", re.compile(r"~[A-Z][A-Za-z]+\.[A-Za-z_][\w.]{0,40}~"), None),  # ~Contact.FirstName~
)
_ANGLES = tuple(entry for entry in _PATTERNS if entry[0] in "<«")


def _spans(
    text: str, patterns: tuple[tuple[str, re.Pattern[str], Accept | None], ...] = _PATTERNS
) -> list[tuple[int, int, str]]:
    found: list[tuple[int, int, str]] = []
    for first, pattern, accept in patterns:
        if first not in text:  # one memchr-like scan; most patterns stop here
            continue
        for match in pattern.finditer(text):
            if accept is None or accept(text, match):
                found.append((match.start(), match.end(), match.group(0)))
    return found


def placeholders(text: str) -> list[str]:
    """Every placeholder in ``text``, in order of appearance.

    A match inside a longer one (``[FIRSTNAME]`` in ``[[FIRSTNAME]]``, ``{!x}`` in
    ``${!x}``) is the same placeholder and is not listed again.
    """
    result: list[str] = []
    end = -1
    for _start, stop, field in sorted(_spans(text), key=lambda span: (span[0], -span[1])):
        if stop > end:
            result.append(field)
            end = stop
    return result


def _unescape_angles(doc: str) -> str:
    def char(match: re.Match[str]) -> str:
        name = match.group(0)[1:-1].lower().lstrip("#x0")
        return _ENTITY_CHARS.get(name, match.group(0))

    return _ENTITY.sub(char, doc)


def html_placeholders(doc: str) -> list[str]:
    """Placeholders in an HTML document, outside comments, style and script.

    ``&lt;&lt;First Name&gt;&gt;`` is how an HTML editor stores a typed ``<<First Name>>``,
    so the angle and guillemet syntaxes are also looked for with those entities decoded.
    """
    visible = strip_invisible(doc)
    fields = placeholders(visible)
    if "&" in visible and _ENTITY.search(visible):
        for _start, _stop, field in sorted(_spans(_unescape_angles(visible), _ANGLES)):
            if field not in fields:
                fields.append(field)
    return fields


_MAX_REPORTED = 5


def _record(where: str, fields: list[str], seen: dict[str, str]) -> None:
    for field in fields:
        if len(seen) >= _MAX_REPORTED:
            return
        seen.setdefault(field, where)


def unfilled_merge_field(
    msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext
) -> Iterator[Finding]:
    """Find placeholders in the subject, the text parts and the HTML parts."""
    seen: dict[str, str] = {}
    if msg.subject:
        _record("subject", placeholders(msg.subject), seen)
    for text in msg.text_parts:
        _record("text", placeholders(text), seen)
    for doc in msg.html_parts:
        _record("HTML", html_placeholders(doc), seen)
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
