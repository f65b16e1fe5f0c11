"""Complaint reports: ARF (RFC 5965), DMARC failure reports (RFC 6591) and provider variants.

This module owns ``parse_arf(raw) -> ComplaintReport | None``. It reads, in order:

1. A ``message/feedback-report`` part (RFC 5965 §3, whatever the outer type says, since
   Yahoo, AOL and Return Path-hosted loops such as Comcast's vary the wrapper), or a text
   part made only of feedback-report fields (older Yahoo/AOL reports and mislabelled
   attachments).
2. Microsoft's JMRP/SNDS reports, which are not ARF: a ``message/rfc822`` original from
   ``staff@hotmail.com`` whose header ``X-HmXmrOriginalRecipient`` names the complainant;
   then Amazon SES complaint notifications received by e-mail (``gateway.feedback.ses``).
3. Plain-text DMARC failure reports without the ARF part (Exim's "failed the published
   DMARC policy" notice): ``auth-failure`` per RFC 6591.
4. Apple Mail's one-click unsubscribe (``X-Apple-Unsubscribe: true``): ``opt-out``.

``None`` means "not a complaint"; junk never raises.
"""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import parsedate_to_datetime

from gateway.feedback import mail as mailmod
from gateway.feedback import ses
from gateway.feedback.mail import Mail, decode_words, first_header, parse_header_block
from gateway.feedback.refs import find_refs, original_message_id
from gateway.feedback.reports import ComplaintReport

MAX_RECIPIENTS = 100
_ADDRESS = re.compile(r"[^\s<>\"';,()]{1,64}@[A-Za-z0-9.\-\[\]:]{1,255}")
_FEEDBACK_FIELD = re.compile(r"^Feedback-Type:[ \t]*([A-Za-z0-9_-]{1,40})", re.I | re.M)
_DMARC_TEXT = re.compile(
    r"failed the published DMARC policy|DMARC (?:forensic|failure) report|"
    r"authentication-failure report|spf/dkim authentication-failure",
    re.I,
)
_SOURCE_IP_TEXT = re.compile(
    r"(?:Sender IP Address|Source IP|from IP|received from IP)[: ]+([0-9a-fA-F.:]{3,45})", re.I
)
# RFC 5965 §7.3 registry plus the draft's "opt-out"; other values are kept as "other".
_KNOWN_TYPES = frozenset(
    {"abuse", "fraud", "virus", "other", "not-spam", "auth-failure", "opt-out", "opt-out-list"}
)


def _fields(text: str) -> tuple[tuple[str, str], ...]:
    # RFC 5965 §3.1: the report is header-like fields; some senders put empty lines inside.
    fields: list[tuple[str, str]] = []
    for block in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n"))[:8]:
        fields.extend(parse_header_block(block.encode("utf-8", errors="replace")))
    return tuple(fields)


def _report_fields(mail: Mail) -> tuple[tuple[str, str], ...] | None:
    for part in mail.of_type("message/feedback-report"):
        fields = _fields(part.text())
        if first_header(fields, "feedback-type") is not None:
            return fields
    is_report = (mail.top.param("report-type") or "").lower() == "feedback-report"
    for part in mail.parts:
        if (
            part.in_enclosed
            or part.encloses
            or not part.content_type.startswith(("text/", "application/"))
        ):
            continue
        text = part.text()
        match = _FEEDBACK_FIELD.search(text)
        if match is None:
            continue
        # A field block that starts with (or is) the ARF fields, not prose quoting them.
        block = text[match.start() :] if is_report else text
        fields = _fields(block)
        names = {name.lower() for name, _ in fields}
        if "feedback-type" in names and (
            is_report or names & {"user-agent", "version", "original-rcpt-to", "source-ip"}
        ):
            return fields
    return None


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _addresses(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        out.extend(m.strip("<>.") for m in _ADDRESS.findall(value))
    return tuple(dict.fromkeys(out))[:MAX_RECIPIENTS]


def _original(mail: Mail) -> tuple[tuple[str, str], ...]:
    blocks = mail.enclosed_headers()
    return blocks[0] if blocks else ()


def _all(fields: tuple[tuple[str, str], ...], name: str) -> list[str]:
    return [value for key, value in fields if key.lower() == name]


def _one(fields: tuple[tuple[str, str], ...], name: str) -> str | None:
    value = first_header(fields, name)
    return value.strip() or None if value is not None else None


def _feedback_type(value: str | None) -> str:
    kind = (value or "").strip().lower().split(";")[0].strip()
    if kind in ("opt-out-list",):
        return "opt-out"
    return kind if kind in _KNOWN_TYPES else "other"


def _report(
    mail: Mail,
    fields: tuple[tuple[str, str], ...],
    variant: str,
    *,
    reported: tuple[str, ...] = (),
) -> ComplaintReport:
    original = _original(mail)
    rcpt_to = _addresses(_all(fields, "original-rcpt-to"))
    removal = _addresses(_all(fields, "removal-recipient"))
    recipients = reported or rcpt_to or removal
    if not recipients:
        # Providers that omit Original-Rcpt-To leave the complainant in the original's To.
        recipients = _addresses(
            [v for k, v in original if k.lower() in ("to", "x-hmxmroriginalrecipient")]
        )
    mail_from = _addresses(_all(fields, "original-mail-from"))
    subject = first_header(original, "subject")
    source_ip = _one(fields, "source-ip")
    if source_ip is not None:
        source_ip = source_ip.strip("[]") or None
    reporting = _one(fields, "reporting-mta")
    if reporting is not None:
        reporting = reporting.partition(";")[2].strip() or reporting
    return ComplaintReport(
        feedback_type=_feedback_type(_one(fields, "feedback-type")),
        variant=variant,
        arrived_at=_date(_one(fields, "arrival-date") or _one(fields, "received-date")),
        reported_recipients=recipients,
        original_mail_from=mail_from[0] if mail_from else None,
        original_rcpt_to=rcpt_to,
        source_ip=source_ip,
        user_agent=_one(fields, "user-agent"),
        reporting_mta=reporting,
        refs=find_refs(mail),
        subject=decode_words(subject).strip() if subject is not None else None,
        original_message_id=original_message_id(mail),
        auth_failure=(_one(fields, "auth-failure") or "").lower() or None,
        reported_domain=_one(fields, "reported-domain"),
    )


def _jmrp(mail: Mail) -> ComplaintReport | None:
    # Microsoft JMRP: no report part; the enclosed original carries the complainant.
    # Some mailboxes deliver the original itself as the report (flattened forward).
    for headers in [*mail.enclosed_headers(), mail.top.headers]:
        recipient = first_header(headers, "x-hmxmroriginalrecipient")
        if recipient is None:
            continue
        fields: tuple[tuple[str, str], ...] = (("Feedback-Type", "abuse"),)
        reporter_ip = first_header(headers, "x-reporter-ip")
        if reporter_ip:
            fields += (("User-Agent", "Microsoft JMRP"),)
        return _report(mail, fields, "jmrp", reported=_addresses([recipient]))
    return None


def _dmarc_text(mail: Mail) -> ComplaintReport | None:
    subject = decode_words(mail.top.header("subject") or "")
    for part in mail.parts:
        if part.in_enclosed or part.content_type != "text/plain":
            continue
        text = part.text()
        if not (_DMARC_TEXT.search(text) or _DMARC_TEXT.search(subject)):
            continue
        if not re.search(r"dmarc|spf|dkim", text, re.I):
            continue
        fields: list[tuple[str, str]] = [("Feedback-Type", "auth-failure")]
        ip = _SOURCE_IP_TEXT.search(text) or _SOURCE_IP_TEXT.search(subject)
        if ip is not None:
            fields.append(("Source-IP", ip.group(1).rstrip(".")))
        fields.append(("Auth-Failure", "dmarc"))
        return _report(mail, tuple(fields), "dmarc-text")
    return None


def _ses(mail: Mail) -> ComplaintReport | None:
    document = ses.notification(mail)
    if document is None or document.get("notificationType") != "Complaint":
        return None
    complaint = ses.section(document, "complaint")
    kind = complaint.get("complaintFeedbackType")
    agent = complaint.get("userAgent")
    fields: list[tuple[str, str]] = [("Feedback-Type", kind if isinstance(kind, str) else "abuse")]
    if isinstance(agent, str):
        fields.append(("User-Agent", agent))
    reported = tuple(
        e["emailAddress"] for e in ses.entries(document, "complaint", "complainedRecipients")
    )
    return _report(mail, tuple(fields), "amazon-ses", reported=reported)


def _apple_unsubscribe(mail: Mail) -> ComplaintReport | None:
    # Apple Mail answers a List-Unsubscribe mailto: (RFC 2369) with this header set.
    if (mail.top.header("x-apple-unsubscribe") or "").strip().lower() != "true":
        return None
    sender = _addresses(mail.top.header_all("from"))
    fields = (("Feedback-Type", "opt-out"), ("User-Agent", "Apple Mail"))
    return _report(mail, fields, "apple-unsubscribe", reported=sender)


def complaint_from(mail: Mail) -> ComplaintReport | None:
    """Read a complaint from an already read ``Mail``; ``None`` when it is not one."""
    fields = _report_fields(mail)
    if fields is not None:
        return _report(mail, fields, "arf")
    return _jmrp(mail) or _ses(mail) or _dmarc_text(mail) or _apple_unsubscribe(mail)


def parse_arf(raw: bytes) -> ComplaintReport | None:
    """Parse ``raw`` as a feedback report.

    Returns ``None`` when the message is not a complaint, an opt-out or a DMARC failure
    report (bounces, auto-replies, ordinary mail, junk). Never raises on malformed input.
    """
    return complaint_from(mailmod.read(raw))
