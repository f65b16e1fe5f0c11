"""What the gateway would do with a message, each finding explained and located (pure).

``check(submission, dealer, ...)`` runs ``gateway.intake.prepare`` (``admit``, then
``prepare_message``), the very functions intake runs on every submission, with the
dealer's policy and no stored state (no recipient history, consent records or
suppressions, so the per-recipient checks find nothing), exactly as ``mailgate check``
does. So the verdict and findings are the gateway's own, never a second opinion.

To each finding it adds the catalogue's plain words (``gateway.findings``: why it matters,
what to fix) and its *locations*: where in the message the problem is, as plain text for
the caller to escape and mark:

* an unfilled merge field: the subject, text or HTML part and line, with the text around it;
* an attachment: its file name and type, and what the gateway would do with it;
* Gmail clipping: the byte offset in the HTML where Gmail cuts it, with the text around
  that point and what falls after it (the links, the unsubscribe link);
* a link: the link in the HTML source; a header defect: the header.

A template's HTML (and subject) is wrapped in the message a CRM would submit: ``From:``
one of the dealer's domains, ``Date:``, ``Message-ID:``, the HTML as the only body (a CRM
that sends HTML alone gets ``html-without-text``; ``with_text`` adds the plain-text
version the CRM makes from it). A file is not SMTP DATA: its line ends are made CRLF as an
SMTP client does when it sends one (RFC 5321 §2.3.8), as ``mailgate check`` does.

Nothing here runs what it reads: the HTML is parsed by the checks' parsers, never rendered,
and every excerpt is returned as text.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import Literal

from gateway import replies
from gateway.findings import CATALOGUE, REFUSALS
from gateway.intake.prepare import NO_STATE, CheckCrashed, Limits, Prepared, Stamp, admit
from gateway.intake.prepare import prepare_message as run_prepare
from gateway.mail.message import ParsedMessage
from gateway.pipeline.attachments import REPAIR_DROP_TNEF, REPAIR_HTML_BODY
from gateway.pipeline.base import Finding
from gateway.pipeline.decide import action_for
from gateway.pipeline.html import links, strip_invisible, to_text
from gateway.pipeline.merge_fields import placeholders
from gateway.policy.model import DealerPolicy
from gateway.policy.options import GmailClippingOptions
from gateway.tracking import RefCodec, new_submission_id
from gateway.types import Action, Envelope, Reply

__all__ = [
    "RECIPIENT",
    "Checked",
    "Item",
    "Location",
    "Submission",
    "check",
    "template_message",
    "timed_out",
    "verdict_words",
]

RECIPIENT = "recipient@example.invalid"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
CONTEXT = 60  # characters of context on each side of a problem
MAX_LOCATIONS = 5  # per finding

LocationKind = Literal["field", "attachment", "clipping", "link", "header", "html"]


@dataclass(frozen=True, slots=True)
class Submission:
    """What a dealer hands in: a whole message (``raw``), or a template's HTML and subject.

    ``html`` set means a template: ``raw`` is ignored and the message is built around it
    (``template_message``). ``name`` is the uploaded file's name, shown back.
    """

    raw: bytes = b""
    html: str | None = None
    subject: str = ""
    with_text: bool = False
    name: str = ""


@dataclass(frozen=True, slots=True)
class Location:
    """Where one problem is, as plain text (the caller escapes it).

    ``before``/``text``/``after`` are the problem in its context (``text`` is what to
    mark); ``where`` names the part ("subject", "HTML part 1", "attachment"); ``line`` is
    1-based within that part; ``offset`` is a byte offset (for clipping: from the start of
    the HTML, as Gmail counts); ``note`` says what the gateway would do there.
    """

    kind: LocationKind
    where: str
    text: str = ""
    before: str = ""
    after: str = ""
    line: int | None = None
    offset: int | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Item:
    """One finding with the action policy takes, its plain words and its locations."""

    finding: Finding
    action: Action
    why: str
    fix: str
    locations: tuple[Location, ...] = ()

    @property
    def severity(self) -> str:
        """``info`` (accepted), ``warning`` (tagged or repaired) or ``error`` (the rest)."""
        if self.action <= Action.ACCEPT:
            return "info"
        return "warning" if self.action <= Action.REPAIR else "error"


@dataclass(frozen=True, slots=True)
class Checked:
    """What the gateway would do with one submission, and why.

    ``action`` is the gateway's (``Prepared.action``); ``reply`` the SMTP reply of a
    refusal or deferral; ``refused`` names a refusal before the checks (a limit), with
    ``refusal_why``/``refusal_fix``; ``repair_failed`` when a repair does not fit and the
    message would be held; ``error`` when a check raised (the gateway answers 451).
    """

    dealer_id: str
    action: Action
    items: tuple[Item, ...] = ()
    reply: Reply | None = None
    refused: str = ""
    refusal_why: str = ""
    refusal_fix: str = ""
    repair_failed: bool = False
    error: str = ""
    size: int = 0
    subject: str = ""
    name: str = ""

    @property
    def verdict(self) -> str:
        """The action in words: "accept it as it is", "hold it for an operator", ..."""
        return verdict_words(self.action)

    @property
    def refusal(self) -> str:
        """The SMTP reply line when the message would be refused or deferred, else ``""``."""
        return self.reply.line() if self.reply is not None and self.reply.code >= 400 else ""


def verdict_words(action: Action) -> str:
    """What the gateway does with a message, as the end of "the gateway would ..."."""
    return {
        Action.ACCEPT: "accept it as it is",
        Action.TAG: "deliver it with an X-Mailgate-Findings header",
        Action.REPAIR: "repair it and deliver it",
        Action.HOLD: "hold it for an operator",
        Action.DROP: "accept it and send nothing",
        Action.TEMPFAIL: "defer it (4xx)",
        Action.REJECT: "refuse it (5xx)",
    }.get(action, action.label)


def _sender_domain(dealer: DealerPolicy) -> str:
    return min(dealer.from_domains) if dealer.from_domains else "example.invalid"


def template_message(
    html: str, subject: str, dealer: DealerPolicy, now: datetime, *, with_text: bool = False
) -> bytes:
    """The message a CRM would submit for a template: the HTML as its body, one per line CRLF."""
    domain = _sender_domain(dealer)
    # Text from a form or JSON may hold lone surrogates or line breaks in the subject;
    # neither may reach a header (a line break would start a new one).
    html = html.encode("utf-8", "replace").decode("utf-8")
    subject = _CONTROL.sub(" ", subject.encode("utf-8", "replace").decode("utf-8")).strip()
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"{dealer.name or dealer.dealer_id} <noreply@{domain}>"
    msg["To"] = f"<{RECIPIENT}>"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = f"<check.{secrets.token_hex(8)}@{domain}>"
    if with_text:
        msg.set_content(to_text(html), charset="utf-8", cte="quoted-printable")
        msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    else:
        msg.set_content(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg.as_bytes()


def check(
    submission: Submission,
    dealer: DealerPolicy,
    *,
    limits: Limits,
    now: datetime,
    hostname: str = "mailgate.invalid",
    max_bytes: int | None = None,
) -> Checked:
    """What the gateway would do with ``submission`` from ``dealer``; never raises on input.

    ``max_bytes`` is the submission listener's size limit: a larger message is refused
    as the listener refuses it (552 5.3.4).
    """
    if submission.html is not None:
        raw = template_message(
            submission.html, submission.subject, dealer, now, with_text=submission.with_text
        )
    else:
        raw = submission.raw
    base = Checked(dealer.dealer_id, Action.ACCEPT, size=len(raw), name=submission.name)
    if max_bytes is not None and len(raw) > max_bytes:
        return _refused(base, replies.MESSAGE_TOO_BIG, "message-too-big")
    # A file is not SMTP DATA: judge it as the CRM's SMTP client would send it.
    admitted = admit(raw, dataclasses.replace(limits, bare_line_endings="normalize"))
    if isinstance(admitted, Prepared):
        reply = admitted.reply or replies.INTERNAL_ERROR
        return _refused(base, reply, admitted.refused)
    base = dataclasses.replace(base, subject=admitted.subject or "")
    envelope = Envelope(
        dealer_id=dealer.dealer_id,
        mail_from=admitted.from_addrs[0] if admitted.from_addrs else "",
        rcpt_tos=(RECIPIENT,),
        peer="127.0.0.1",
        auth_user="",
        helo="check",
        received_at=now,
    )
    try:
        prepared = run_prepare(
            admitted,
            envelope,
            dealer,
            limits=limits,
            # The copies are thrown away: any key makes their tracking references.
            stamp=Stamp(hostname, RefCodec(secrets.token_bytes(32))),
            now=now,
            submission_id=new_submission_id(now),
            state=NO_STATE,
        )
    except CheckCrashed as exc:
        failed = _refused(base, replies.INTERNAL_ERROR, "check")
        return dataclasses.replace(failed, error=f"the check {exc.name} raised {exc.__cause__!r}")
    items = tuple(_item(f, dealer, admitted) for f in prepared.findings)
    return dataclasses.replace(
        base,
        action=prepared.action,
        items=items,
        reply=prepared.reply,
        refused=prepared.refused,
        refusal_why=_why_refused(prepared.refused),
        refusal_fix=_fix_refused(prepared.refused),
        repair_failed=prepared.repair_failed,
    )


def timed_out(dealer_id: str, submission: Submission) -> Checked:
    """The answer when the checks overran their time budget (intake answers 451 then)."""
    base = Checked(dealer_id, Action.TEMPFAIL, size=len(submission.raw), name=submission.name)
    return _refused(base, replies.CHECKS_TIMED_OUT, "checks-timeout")


def _refused(base: Checked, reply: Reply, code: str) -> Checked:
    action = Action.REJECT if reply.code >= 500 else Action.TEMPFAIL
    return dataclasses.replace(
        base,
        action=action,
        reply=reply,
        refused=code,
        refusal_why=_why_refused(code),
        refusal_fix=_fix_refused(code),
    )


def _why_refused(code: str) -> str:
    kind = REFUSALS.get(code)
    return _sentence(kind.summary) if kind is not None else ""


def _fix_refused(code: str) -> str:
    kind = REFUSALS.get(code)
    return _sentence(kind.advice) if kind is not None else ""


def _sentence(text: str) -> str:
    return f"{text[:1].upper()}{text[1:]}." if text else ""


def _item(finding: Finding, dealer: DealerPolicy, message: ParsedMessage) -> Item:
    kind = CATALOGUE.get(finding.code)
    action = action_for(finding, dealer)
    return Item(
        finding=finding,
        action=action,
        why=_sentence(kind.summary) if kind else "",
        fix=_sentence(kind.advice) if kind else "",
        locations=tuple(_locations(finding, action, message))[:MAX_LOCATIONS],
    )


# -- locations -------------------------------------------------------------------------------

_SPACE = re.compile(r"\s+")


def _squash(text: str) -> str:
    return _SPACE.sub(" ", text)


def _around(text: str, start: int, end: int) -> tuple[str, str, str]:
    """The text before, at and after ``start:end``, cut to ``CONTEXT`` on each side."""
    before = text[max(0, start - CONTEXT) : start]
    after = text[end : end + CONTEXT]
    if start > CONTEXT:
        before = "…" + before
    if end + CONTEXT < len(text):
        after += "…"
    return _squash(before), _squash(text[start:end]), _squash(after)


def _line(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _part_name(kind: str, number: int, count: int) -> str:
    return kind if count == 1 else f"{kind} part {number}"


def _locations(finding: Finding, action: Action, message: ParsedMessage) -> Iterator[Location]:
    code = finding.code
    if code == "unfilled-merge-field":
        yield from _field_locations(message)
    elif code in ("stray-attachment", "dangerous-attachment"):
        yield _attachment_location(finding, action)
    elif code == "gmail-clipping":
        location = _clip_location(finding, message)
        if location is not None:
            yield location
    elif code == "link-defect":
        yield from _link_locations(finding, message)
    elif code in ("header-defect", "from-domain-not-allowed", "multiple-from", "missing-from"):
        yield from _header_locations(finding, message)
    elif code == "broken-html":
        problems = finding.data.get("problems", "")
        part = int(finding.data.get("part", "1") or 1)
        where = _part_name("HTML", part, len(message.html_parts))
        for problem in [p.strip() for p in problems.split(";") if p.strip()]:
            yield Location("html", where, text=problem)


def _field_locations(message: ParsedMessage) -> Iterator[Location]:
    """Every placeholder ``unfilled-merge-field`` found, in the part the manager edits."""
    if message.subject:
        for field in dict.fromkeys(placeholders(message.subject)):
            start = message.subject.find(field)
            before, text, after = _around(message.subject, start, start + len(field))
            yield Location("field", "subject", text, before, after, line=1)
    texts, htmls = message.text_parts, message.html_parts
    for number, part in enumerate(texts, start=1):
        yield from _fields_in(part, placeholders(part), _part_name("text", number, len(texts)))
    for number, doc in enumerate(htmls, start=1):
        # The check searches the document without comments, style and script; the fields
        # it finds there are shown in the source the manager edits.
        found = placeholders(strip_invisible(doc))
        yield from _fields_in(doc, found, _part_name("HTML", number, len(htmls)))


def _fields_in(text: str, fields: list[str], where: str) -> Iterator[Location]:
    for field in dict.fromkeys(fields):
        start = text.find(field)
        if start < 0:
            continue
        before, marked, after = _around(text, start, start + len(field))
        yield Location("field", where, marked, before, after, line=_line(text, start))


def _attachment_location(finding: Finding, action: Action) -> Location:
    name = finding.data.get("filename", "") or "(no name)"
    content_type = finding.data.get("content_type", "")
    if action is Action.REPAIR and finding.repair == REPAIR_HTML_BODY:
        note = "the gateway would remove it and send its HTML as the body of the message"
    elif action is Action.REPAIR and finding.repair == REPAIR_DROP_TNEF:
        note = "the gateway would remove it and send the message without it"
    elif action is Action.HOLD:
        note = "the gateway would hold the message because of it"
    elif action >= Action.TEMPFAIL:
        note = "the gateway would refuse the message because of it"
    else:
        note = f"the gateway would {action.label} the message"
    return Location("attachment", "attachment", name, after=content_type, note=note)


def _clip_location(finding: Finding, message: ParsedMessage) -> Location | None:
    """The point where Gmail cuts the HTML: ``limit`` bytes into the HTML parts."""
    default = GmailClippingOptions().max_bytes
    try:
        limit = int(finding.data.get("limit", default))
    except ValueError:
        limit = default
    seen = 0
    parts = message.html_parts
    for number, doc in enumerate(parts, start=1):
        encoded = doc.encode("utf-8", "replace")
        if seen + len(encoded) <= limit:
            seen += len(encoded)
            continue
        # The characters whose UTF-8 form fits before the limit (a character cut in two
        # is after the point).
        index = len(encoded[: limit - seen].decode("utf-8", "ignore"))
        before, _, after = _around(doc, index, index)
        rest = doc[index:]
        cut_links = [href for href, _text in links(rest) if href]
        unsubscribe = "unsubscribe" in rest.lower()
        note = f"{len(cut_links)} link{'' if len(cut_links) == 1 else 's'} after this point"
        if unsubscribe:
            note += ", the unsubscribe link among them" if cut_links else ", and the unsubscribe"
        note += " would be hidden behind Gmail's “[Message clipped]”"
        return Location(
            "clipping",
            _part_name("HTML", number, len(parts)),
            text="",
            before=before,
            after=after,
            line=_line(doc, index),
            offset=limit,
            note=note,
        )
    return None


def _link_locations(finding: Finding, message: ParsedMessage) -> Iterator[Location]:
    href = finding.data.get("href", "")
    parts = message.html_parts
    for number, doc in enumerate(parts, start=1):
        start = doc.find(href) if href else -1
        if start < 0 and not href:
            start = doc.find('href=""')
        if start < 0:
            continue
        before, text, after = _around(doc, start, start + max(len(href), 1))
        yield Location("link", _part_name("HTML", number, len(parts)), text, before, after,
                       line=_line(doc, start))  # fmt: skip
        return
    if href:
        yield Location("link", "HTML", href)


def _header_locations(finding: Finding, message: ParsedMessage) -> Iterator[Location]:
    wanted = finding.data.get("header", "from" if "from" in finding.code else "")
    if not wanted:
        if finding.data.get("kind") == "missing":  # header-defect: no Date:
            yield Location("header", "header", "Date:", note="missing")
        return
    shown = 0
    for name, value in message.headers:
        if name.lower() == wanted.lower():
            yield Location("header", "header", f"{name}: {_squash(value)[:200]}")
            shown += 1
    if not shown:
        yield Location("header", "header", f"{wanted.title()}:", note="missing")
