"""Bounce and delay reports: RFC 3464 DSNs and the common non-standard formats (pure).

This module owns ``parse_bounce(raw) -> BounceReport | None``. A message is read in this
order, the most authoritative evidence first (like flufl.bounce's ``_DETECTORS``):

1. ``message/delivery-status`` parts (RFC 3464 §2.1; also ``message/global-delivery-status``,
   RFC 6533 §6.2) and DSN fields pasted into a text part: per-recipient blocks with
   ``Final-Recipient``, ``Action``, ``Status`` and ``Diagnostic-Code``; Amazon SES bounce
   notifications received by e-mail carry the same fields as JSON.
2. Auto-replies (RFC 3834: out-of-office, vacation, challenge-response) are not bounces.
3. ``TEXT_FORMATS``: the plain-text notices of qmail, Exim, Postfix, Sendmail, Exchange,
   Gmail, Yahoo, Lotus Notes and others, each a signature, a pattern naming the failed
   addresses with their diagnostic, and where the returned original starts.
4. A last, generic reading for mail that is plainly a bounce (sent by a mailer daemon or
   titled like one) but in no known format: addresses and SMTP replies in the notice.

Each recipient is then classified by ``gateway.feedback.classify``. ``None`` means "not a
bounce"; junk never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from gateway.feedback import classify as cls
from gateway.feedback import mail as mailmod
from gateway.feedback import ses
from gateway.feedback.mail import Mail, Part, decode_words, parse_header_block
from gateway.feedback.refs import find_refs, original_message_id
from gateway.feedback.reports import BounceKind, BounceReason, BounceRecipient, BounceReport

MAX_RECIPIENTS = 100  # a bounce naming more than this is cut (the rest are not read)
MAX_DIAGNOSTIC = 1000

_ADDR = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+"  # noqa: E501
ADDRESS = re.compile(_ADDR)
_FLAGS = re.IGNORECASE | re.MULTILINE

# Senders that only ever send bounces (RFC 3464 §2 leaves the From to the MTA; these are
# the names MTAs use).
_DAEMON_FROM = re.compile(
    r"mailer[- ]?daemon|mail-?daemon|postmaster|post_master|mail delivery (?:sub)?system|"
    r"delivery (?:status )?notification|maildelivery|\bmdaemon|mail administrator|"
    r"mailmaster|mail ?delivery|double-?bounce|\bdaemon@|internet mail delivery|"
    r"mail system|mailerdaemon|notification@|bounces?@|microsoftexchange",
    re.IGNORECASE,
)
# "Could not be delivered / sent" and "delivery / sending / transmission failed" in
# Chinese (simplified and traditional), as Sina, 163.com and others title and word their
# notices ("邮件传输失败", "邮件无法发送到您指定的地址").
_ZH_FAILED = (
    r"(?:无法|無法|未能|不能)(?:送达|送達|投递|投遞|发送|發送|传送|傳送|递送|遞送)|"
    r"(?:投递|投遞|发送|發送|传输|傳輸|传送|傳送|递送|遞送)(?:失败|失敗)"
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|returned mail|delivery (?:status )?notification|"
    r"delivery (?:has )?fail|failure notice|mail delivery fail|non[- ]?delivery|"
    r"could not (?:be )?deliver|delivery problem|mail system error|"
    r"returned to sender|rejected|delivery report|delivery error|bounce|"
    r"nicht zustellbar|unzustellbar|mail failure|error sending|delivery notice|"
    r"warning: could not send|delayed mail|delivery delayed|delay|message not delivered|"
    r"permanent error|mail could not|unable to deliver|failed delivery|returned|"
    r"message you sent|benachrichtig|non remis|no entregado|non recapitabile|"
    # The same titles in Chinese, Japanese, Russian, French, Spanish and Portuguese.
    r"退信|退回|配送できません|送信できませんでした|{_ZH_FAILED}|"
    r"不達|не доставлено|недоставлен|échec de (?:la )?remise|non distribu|"
    r"no se pudo entregar|devuelto|não (?:foi )?entregue|falha na entrega|failed mail".replace(
        "{_ZH_FAILED}", _ZH_FAILED
    ),
    re.IGNORECASE,
)
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(?:re:\s*)?(?:auto(?:matic)?[ -]?(?:reply|response|antwort|answer)|auto:|"
    r"out of (?:the )?office|vacation|on leave|away from|abwesenheit|absence|"
    r"r[ée]ponse automatique|respuesta autom[áa]tica|risposta automatica|"
    r"i am (?:currently )?(?:out|away)|thank you for (?:your|contacting)|ooo\b|"
    r"autoreply|autoresponse|holiday|urlaub|fuera de la oficina|absent)",
    re.IGNORECASE,
)
_CHALLENGE = re.compile(
    r"please (?:confirm|verify) (?:that )?you|boxbe|challenge|verify your (?:e-?mail|address)|"
    r"whitelist|spam arrest|bluebottle|mailblocks|i have a spam filter|"
    r"pending (?:your )?(?:verification|confirmation)",
    re.IGNORECASE,
)
# "Has not been delivered" alone is no delay: final notices say it too ("Your message
# has NOT been delivered"). A delay is what says the MTA keeps trying (RFC 3464 §2.3.3
# "delayed": "the reporting MTA has so far been unable to deliver ... will continue").
_DELAY_TEXT = re.compile(
    r"this is a warning message only|will (?:continue|keep) (?:to )?(?:try|retry)|"
    r"(?:has|have) not yet been delivered|delivery (?:has been|is) delayed|"
    r"(?:delivery )?attempts will continue|further (?:delivery )?attempts will be made|"
    r"will (?:retry|try again)\b|will continue (?:to )?attempt|"
    r"warning: (?:could not send|message .* delayed)|still (?:being )?(?:retried|trying)|"
    r"will be retried|not been able to deliver .* for .* hours|delivery delay|"
    r"temporarily deferred|status: 4\.\d|retry (?:timeout|time) not reached|"
    r"message (?:is|has been) delayed|delayed mail|no action is required on your part",
    re.IGNORECASE,
)
_PERMANENT_TEXT = re.compile(
    r"permanent(?:ly)? (?:error|failure|fatal)|i've given up|retry timeout exceeded|"
    r"giving up|could not be delivered|failed permanently|has been rejected|"
    r"undeliverable|delivery has failed|couldn't be delivered|was not delivered|"
    # "The following mail has been returned because it encountered an error" (USA.NET):
    # the message comes back, so the attempt is over.
    r"(?:mail|message) (?:has been|was|is being) returned|" + _ZH_FAILED,
    re.IGNORECASE,
)
# Of those, the ones that say the MTA stopped trying; the others ("could not be
# delivered") are also how delay warnings begin ("... could not be delivered yet;
# delivery attempts will continue").
_GAVE_UP = re.compile(
    r"permanent(?:ly)? (?:error|failure|fatal)|i've given up|retry timeout exceeded|"
    r"giving up|gave up|failed permanently|will not be retried|no further attempts",
    re.IGNORECASE,
)
# Where the returned original starts in a text notice; nothing after it is the notice.
# A returned original quoted inline: three or more header fields in a row, one of them a
# field every message has (RFC 5322 §3.6).
_INLINE_HEADERS = re.compile(
    r"^(?:From [^\n]*\n)?(?=(?:[\w-]{1,40}:[^\n]*\n|[ \t][^\n]*\n){0,10}"
    r"(?:From|To|Subject|Date|Message-I[Dd]|Return-Path|Received):)"
    r"(?:[\w-]{1,40}:[^\n]*\n(?:[ \t][^\n]*\n)*){3}",
    re.M | re.I,
)
# DSN fields pasted into a text part: the block starts at the first of these.
_DSN_TEXT_START = re.compile(
    r"^(?:Reporting-MTA|Original-Recipient|Final-Recipient|Arrival-Date|Received-From-MTA):",
    _FLAGS,
)
_ORIGINAL_STARTS = re.compile(
    r"^[ \t]*-{2,}[ \t]*(?:below this line is a copy of the message|"
    r"this is a copy of (?:the|your) message|"
    r"the (?:header|body|headers) of the (?:original )?message|"
    r"original message|enclosed are the original headers|returned message|"
    r"message headers? follow|undelivered message|copy of the original|forwarded message)"
    r".*$|^[ \t]*original message (?:follows|headers?)\b.*$|"
    r"^(?:the )?original message (?:was|is) (?:attached|below|included).*$|"
    # "Original message as received is as follows:" (LLNL), "Returned message follows".
    r"^[ \t]*(?:the )?(?:original|returned|undelivered) message\b[^\n]{0,40}\bfollows\b.*$|"
    r"^-+ ?(?:original|returned) (?:message|mail|headers?).*$",
    _FLAGS,
)


@dataclass(frozen=True, slots=True)
class _Found:
    """One failed address as read, before classification."""

    address: str
    diagnostic: str
    status: str | None = None
    smtp_code: str | None = None
    action: str | None = None  # RFC 3464 action, lower case; None when the format has none
    original: str | None = None  # RFC 3464 Original-Recipient, when it differs
    confirmed: bool = True  # False: not tied to a full address by the report itself
    written: str | None = None  # how the report wrote it, when that is not ``address``


# -- 1. RFC 3464 ---------------------------------------------------------------------------


def _field_groups(text: str) -> list[list[tuple[str, str]]]:
    """Split DSN fields into groups: per-message first, then one per recipient.

    RFC 3464 §2.1 separates the groups with empty lines; some MTAs omit them, so a new
    ``Final-Recipient`` or ``Original-Recipient`` after one was seen also starts a group.
    """
    groups: list[list[tuple[str, str]]] = [[]]
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not line.strip():
            if groups[-1]:
                groups.append([])
            continue
        if line[:1] in (" ", "\t"):
            if groups[-1]:
                name, value = groups[-1][-1]
                groups[-1][-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not re.fullmatch(r"[a-z0-9-]{1,60}", name):
            continue
        current = groups[-1]
        names = {n for n, _ in current}
        complete = bool(names & {"action", "status", "diagnostic-code"})
        if (
            (name == "final-recipient" and "final-recipient" in names)
            or (name == "original-recipient" and ("original-recipient" in names or complete))
            or (name == "reporting-mta" and "final-recipient" in names)
        ):
            groups.append([])
        groups[-1].append((name, value.strip()))
    return [group for group in groups if group]


# An address as an MTA wrote it in a DSN field, whatever its domain looks like: RFC 3464
# §2.3.2 gives the address the MTA was handed ("recipient@#example.net" with a typo in
# the domain is still the address that failed).
_LOOSE_ADDRESS = re.compile(r"[^\s<>\"'@;,()]{1,64}@[^\s<>\"'@;,()]{1,255}")


def _address_of(value: str) -> str | None:
    # RFC 3464 §2.3.2: "address-type ; generic-address", address-type usually rfc822.
    _, semi, rest = value.partition(";")
    candidate = rest if semi else value
    match = ADDRESS.search(candidate) or _LOOSE_ADDRESS.search(candidate)
    return clean_address(match.group(0)) or None if match else None


def _local_part_of(value: str) -> str | None:
    """A bare local part in a DSN field ("LOCAL; pat", "rfc822; pat"), or ``None``."""
    _, semi, rest = value.partition(";")
    return clean_local_part(rest if semi else value) or None


# X.400 gateways and Exchange write an Internet address as "SMTP=user@host" or
# "SMTP:user@host" (an O/R address attribute, RFC 2156 §4.2); some MTAs leave a quote or
# an apostrophe stuck to it. Neither is part of the address.
_ADDRESS_PREFIX = re.compile(r"^(?:(?:smtp|rfc822|internet|x400)[=:;][ \t]*)+", re.IGNORECASE)


# A local part written alone (RFC 5322 §3.4.1 dot-atom text): what old gateways and
# providers print for one of their own users, or a screen name (AOL).
_LOCAL_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._+=-]{0,62}[A-Za-z0-9_])?")


def clean_local_part(value: str) -> str:
    """``value`` as a bare local part (no ``@``), or an empty string when it is not one."""
    text = _ADDRESS_PREFIX.sub("", value.strip().strip("<>\"'`()[]{}")).strip("<>\"'`()[]{}")
    text = text.rstrip(".,;:")
    return text if "@" not in text and _LOCAL_PART.fullmatch(text) else ""


def clean_address(value: str) -> str:
    """``value`` as an address: no ``SMTP=`` prefix, brackets or stray quotes.

    Returns an empty string when what is left is not ``local@domain``.
    """
    address = value.strip().strip("<>\"'`()[]{}")
    address = _ADDRESS_PREFIX.sub("", address).strip("<>\"'`()[]{} \t").rstrip(".,;:")
    local, at, domain = address.rpartition("@")
    return address if at and local and "." in domain else ""


_DSN_TYPES = ("message/delivery-status", "message/global-delivery-status", "text/delivery-status")


def _report_status(mail: Mail) -> str | None:
    """The Status field of a delivery-status part, wherever it stands."""
    for part in mail.of_type(*_DSN_TYPES):
        match = re.search(r"^Status:[ \t]*([245]\.\d{1,3}\.\d{1,3})", part.text(), _FLAGS)
        if match is not None:
            return match.group(1)
    return None


def _dsn_text(mail: Mail) -> tuple[list[str], str]:
    """DSN field texts and the variant name, or empty when the mail has none."""
    parts = mail.of_type(*_DSN_TYPES)
    if parts:
        return [p.text() for p in parts], "rfc3464"
    texts: list[str] = []
    for part in mail.parts:
        if part.in_enclosed or not _is_text(part):
            continue
        text = part.text()
        start = _DSN_TEXT_START.search(text)
        if start is not None and re.search(r"^(?:Status|Action):", text, _FLAGS):
            texts.append(text[start.start() :])
    return texts, "rfc3464-text"


def _from_dsn(mail: Mail) -> tuple[list[_Found], str | None, str] | None:
    texts, variant = _dsn_text(mail)
    if not texts:
        return None
    found: list[_Found] = []
    reporting_mta: str | None = None
    for text in texts:
        for group in _field_groups(text):
            fields = dict(reversed(group))  # the first occurrence of each name wins
            if "reporting-mta" in fields and reporting_mta is None:
                reporting_mta = fields["reporting-mta"].partition(";")[2].strip() or None
            address = None
            for name in ("final-recipient", "x-actual-recipient", "original-recipient"):
                if name in fields:
                    address = _address_of(fields[name])
                    if address:
                        break
            confirmed = True
            if address is None:
                # "Final-Recipient: LOCAL; pat": the MTA named its own user without a
                # domain. Only the sent log can say which address that was.
                local = _local_part_of(fields.get("final-recipient", ""))
                if local is None:
                    continue
                address, confirmed = local, False
            # RFC 3464 §2.3.1/2.3.2: Original-Recipient is the address we sent to; the
            # Final-Recipient is where forwarding or an alias led. Both are reported.
            original = _address_of(fields.get("original-recipient", ""))
            if original is not None and original.lower() == address.lower():
                original = None
            diagnostic = fields.get("diagnostic-code", "")
            dtype, semi, dtext = diagnostic.partition(";")
            if semi and re.fullmatch(r"\s*[A-Za-z-]+\s*", dtype):
                diagnostic = dtext
            status_field = fields.get("status", "")
            status = cls.find_status(status_field)
            found.append(
                _Found(
                    address=address,
                    diagnostic=_clean(diagnostic),
                    status=status,
                    smtp_code=cls.find_smtp_code(diagnostic),
                    action=fields.get("action", "").strip().lower() or None,
                    original=original,
                    confirmed=confirmed,
                )
            )
    if not found:
        return None
    return _dedupe(found), reporting_mta, variant


def _from_ses(mail: Mail) -> tuple[list[_Found], str | None, str] | None:
    document = ses.notification(mail)
    if document is None or document.get("notificationType") != "Bounce":
        return None
    found: list[_Found] = []
    for entry in ses.entries(document, "bounce", "bouncedRecipients"):
        diagnostic = entry.get("diagnosticCode")
        diagnostic = (
            diagnostic.partition(";")[2] or diagnostic if isinstance(diagnostic, str) else ""
        )
        status = entry.get("status")
        action = entry.get("action")
        found.append(
            _Found(
                address=entry["emailAddress"],
                diagnostic=_clean(diagnostic),
                status=cls.find_status(status) if isinstance(status, str) else None,
                smtp_code=cls.find_smtp_code(diagnostic),
                action=action.lower() if isinstance(action, str) else "failed",
            )
        )
    mta = ses.section(document, "bounce").get("reportingMTA")
    reporting = mta.partition(";")[2].strip() if isinstance(mta, str) else None
    return (found, reporting or None, "amazon-ses") if found else None


# -- 2. Auto-replies -------------------------------------------------------------------------


def is_auto_reply(mail: Mail) -> bool:
    """True for an RFC 3834 automatic response that is not a delivery report."""
    top = mail.top
    subject = decode_words(top.header("subject") or "")
    for name in ("x-autoreply", "x-autorespond", "x-autoresponder", "x-vacation"):
        if top.header(name) is not None:
            return True
    precedence = (top.header("precedence") or "").lower()
    if "auto_reply" in precedence or "auto-reply" in precedence:
        return True
    if _AUTO_REPLY_SUBJECT.search(subject):
        return True
    sender = top.header("from") or ""
    if _DAEMON_FROM.search(sender) is None and _CHALLENGE.search(subject + "\n" + sender):
        return True
    auto = (top.header("auto-submitted") or "").strip().lower()
    # RFC 3834 §5: "auto-replied" from a person's address (not a mailer daemon) is a reply.
    return (
        auto.startswith("auto-replied")
        and _DAEMON_FROM.search(sender) is None
        and (not _BOUNCE_SUBJECT.search(subject))
    )


# -- 3. Known plain-text formats -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextFormat:
    """A non-standard bounce format: how to recognise it and read its failed addresses.

    ``recipient`` has a group ``addr`` and optionally ``diag`` (the reason for that address);
    without ``diag`` the text after the address up to the next match is the diagnostic.
    """

    name: str
    signature: re.Pattern[str]
    recipient: re.Pattern[str]


_A = rf"(?P<addr>{_ADDR})"

# Ordered most specific to least: the first format whose signature matches the notice and
# that yields at least one address wins.
TEXT_FORMATS: tuple[TextFormat, ...] = (
    TextFormat(
        "qmail",
        re.compile(
            r"qmail-send program|I'm afraid I wasn't able to deliver your message|"
            r"I wasn't able to deliver|vdelivermail|This is a permanent error; I've given up",
            re.IGNORECASE,
        ),
        re.compile(rf"^[ \t]*<{_A}>:?[ \t]*$", re.MULTILINE),
    ),
    TextFormat(
        "exim",
        re.compile(
            r"created automatically by mail delivery software|following address\(es\) failed|"
            r"could not be delivered to one or more of its\s+recipients|"
            r"has not yet been delivered to one or more of its\s+recipients",
            re.IGNORECASE,
        ),
        re.compile(rf"^[ \t]+<?{_A}>?(?:[ \t]*<[^>\n]*>)?[ \t]*(?:\n|$)", re.MULTILINE),
    ),
    TextFormat(
        "postfix",
        re.compile(
            r"This is the (?:mail system|Postfix program) at host|I'm sorry to have to inform you",
            re.IGNORECASE,
        ),
        re.compile(rf"^[ \t]*<{_A}>(?:[ \t]+\(expanded from[^)\n]*\))?:(?P<diag>.*)", re.MULTILINE),
    ),
    TextFormat(
        "sendmail",
        re.compile(r"-{3,} ?Transcript of session follows|The original message was received at"),
        re.compile(
            rf"^(?:<<<|\d{{3}}[ -]|[ \t])*(?:\d\.\d\.\d+[ \t]+)?<?{_A}>?\.\.\.[ \t]*(?P<diag>.*)",
            re.MULTILINE,
        ),
    ),
    TextFormat(
        "gmail",
        re.compile(
            r"Delivery to the following recipients? (?:failed|has been delayed)|"
            r"Delivery to these recipients or groups|Your message wasn't delivered to|"
            r"The response from the remote server was|Technical details of (?:permanent|temporary)"
            r" failure",
            re.IGNORECASE,
        ),
        re.compile(rf"^[ \t]*<?{_A}>?(?:[ \t].*)?$", re.MULTILINE),
    ),
    TextFormat(
        "exchange",
        re.compile(
            r"Your message did not reach some or all of the intended recipients|"
            r"The following recipient\(s\) (?:could not be reached|cannot be reached)|"
            r"Delivery has failed to these recipients|did not reach the following recipient",
            re.IGNORECASE,
        ),
        re.compile(
            rf"^[ \t]*(?:[^\n<]*<)?{_A}>?(?:[ \t]+on [^\n]*)?[ \t]*\n?(?P<diag>(?:[ \t]+\S.*\n?)*)",
            re.MULTILINE,
        ),
    ),
    TextFormat(
        "yahoo",
        re.compile(r"Sorry, we were unable to deliver your message to the following address"),
        re.compile(rf"^[ \t]*<{_A}>:?[ \t]*(?P<diag>.*)", re.MULTILINE),
    ),
    TextFormat(
        # KDDI au one net (dion.ne.jp, auone-net.jp): "Your mail sent on: <date> /
        # Could not be delivered to: <addr> / As their mailbox is full.", with no SMTP
        # reply; the line after the address is the reason.
        "au-one-net",
        re.compile(r"Your mail sent on:.*\n\s*Could not be delivered to:", re.IGNORECASE),
        re.compile(
            rf"Could not be delivered to:[ \t]*<?{_A}>?[ \t]*\n(?P<diag>[^\n]*)", re.IGNORECASE
        ),
    ),
    TextFormat(
        # fml, the Japanese mailing-list manager (X-MLServer: fml): it refuses a post from
        # a non-member ("You are not a member of this mailing list <list>.") or a looping
        # one ("Duplicated Message-ID in <list>."). The list is the failed recipient; both
        # say nothing about an address (Sisimai "rejected", "systemerror"), so soft.
        "fml",
        re.compile(
            r"You are not a member of this mailing list <|Duplicated Message-ID in <",
            re.IGNORECASE,
        ),
        re.compile(
            rf"(?P<diag>You are not a member of this mailing list|Duplicated Message-ID in)"
            rf"[ \t]*<{_A}>",
            re.IGNORECASE,
        ),
    ),
    TextFormat(
        "notes",
        re.compile(r"Your message\s+Subject:.*\s+was not delivered to:", re.IGNORECASE),
        re.compile(rf"was not delivered to:\s*\n\s*<?{_A}>?", re.IGNORECASE),
    ),
)


def _notice(mail: Mail) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The human-readable notice (the first text part, cut at the returned original).

    Also returns the header fields of an original quoted inline below the notice, if any.
    """
    chosen: Part | None = None
    for part in mail.parts:
        if part.in_enclosed or part.encloses:
            continue
        if part.content_type == "text/plain" or (
            _is_text(part) and part.content_type != "text/html"
        ):
            chosen = part
            break
    if chosen is None:
        for part in mail.parts:
            if not part.in_enclosed and part.content_type == "text/html":
                chosen = part
                break
    if chosen is None:
        return "", ()
    text = chosen.text()
    if chosen.content_type == "text/html":
        text = _strip_html(text)
    cut = _ORIGINAL_STARTS.search(text)
    if cut is not None and cut.start() > 0:
        text, rest = text[: cut.start()], text[cut.end() :]
    else:
        # An inline original without a marker: its header block starts the copy.
        header = _INLINE_HEADERS.search(text)
        if header is None or header.start() == 0:
            return text, ()
        text, rest = text[: header.start()], text[header.start() :]
    block = _INLINE_HEADERS.search(rest[:20000])
    if block is None:
        return text, ()
    return text, parse_header_block(block.group(0).encode("utf-8", errors="replace"))


def _is_text(part: Part) -> bool:
    """A text leaf, or a multipart without parts (its body is then read as text)."""
    return part.content_type.startswith("text/") or (
        part.content_type.startswith("multipart/") and bool(part.body)
    )


def _strip_html(text: str) -> str:
    text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", text)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>|</li>", "\n", text)
    text = re.sub(r"<[^>]{0,2000}>", " ", text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return text.replace("&nbsp;", " ").replace("&#64;", "@")


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()[:MAX_DIAGNOSTIC]


@dataclass(frozen=True, slots=True)
class _Exclusions:
    """Addresses of a notice that are not failed recipients.

    ``sender`` (the report's own sender and recipient, the original's sender) are dropped
    unless nothing else is named: someone can write to themselves. ``never`` are not
    addresses at all (Message-IDs, References) and are never taken.
    """

    sender: frozenset[str]
    never: frozenset[str]


# Fields whose values are message identifiers (RFC 5322 §3.6.4): "local@host" in them is
# a msg-id, not a mailbox, wherever they are quoted.
_ID_FIELDS = ("message-id", "references", "in-reply-to", "resent-message-id", "content-id")
_ID_LINE = re.compile(
    r"^[ \t>]*(?:(?:resent-|original-|x-)?message-id|references|in-reply-to|content-id|"
    r"x-ms-exchange-\S*message-id|mts-id)[ \t]*[:=].*(?:\n[ \t]+\S.*)*",
    re.IGNORECASE | re.MULTILINE,
)
# A line of the original message's header summary, as notices quote it ("Your message
# To: ... Subject: ... Sent: ... did not reach the following recipient(s)"): the
# addresses there are the original's recipients and sender, not what failed.
_SUMMARY_LINE = re.compile(  # used with .match(text, line_start): no "^"
    r"[ \t>]*(?:to|from|cc|bcc|sender|reply-to|return-path|subject|sent|date|"
    r"delivered-to|x-original-to|envelope-to|resent-(?:to|from|cc|sender)|"
    r"message-id|references|in-reply-to)[ \t]*:",
    re.IGNORECASE,
)


def _excluded(mail: Mail, inline: tuple[tuple[str, str], ...], notice: str) -> _Exclusions:
    """The addresses of ``mail`` that a notice may mention but that did not fail."""
    sender: set[str] = set()
    never: set[str] = set()
    top = mail.top
    for name in ("from", "to", "reply-to", "return-path", "sender", "cc"):
        for value in top.header_all(name):
            sender.update(a.lower() for a in ADDRESS.findall(value))
    blocks = [top.headers, *mail.enclosed_headers(), inline]
    for headers in blocks[1:]:
        for key, value in headers:
            if key.lower() in ("from", "sender", "return-path", "reply-to"):
                sender.update(a.lower() for a in ADDRESS.findall(value))
    for headers in blocks:
        for key, value in headers:
            if key.lower() in _ID_FIELDS:
                never.update(a.lower() for a in ADDRESS.findall(value))
    for match in _ID_LINE.finditer(notice[:MAX_NOTICE_SCAN]):
        never.update(a.lower() for a in ADDRESS.findall(match.group(0)))
    return _Exclusions(frozenset(sender), frozenset(never))


def _summary_line(text: str, at: int) -> bool:
    """True when position ``at`` of ``text`` lies on a quoted header-summary line."""
    start = text.rfind("\n", 0, at) + 1
    return _SUMMARY_LINE.match(text, start) is not None


MAX_NOTICE_SCAN = 64 * 1024


_GENERIC_ADDRESS = re.compile(_A)
_LINE_ADDRESS = re.compile(rf"[ \t]*[<\"(]?{_A}")
_MAILER_DAEMON = re.compile(r"mailer-?daemon|mail-?daemon|double-bounce|mdaemon", re.I)


def _is_daemon(address: str) -> bool:
    local = address.partition("@")[0].lower()
    return bool(
        re.fullmatch(
            r"(?:mailer-?daemon|postmaster|root|mail-?daemon|abuse|noreply|no-reply|"
            r"bounces?|double-bounce|nobody|mail|admin|webmaster|hostmaster|support|"
            r"microsoftexchange[0-9a-f]*|mdaemon)",
            local,
        )
    )


def _from_text_format(
    notice: str, mail: Mail, excluded: _Exclusions
) -> tuple[list[_Found], str] | None:
    for fmt in TEXT_FORMATS:
        if not fmt.signature.search(notice):
            continue
        matches = _prefer(list(fmt.recipient.finditer(notice)), excluded, notice)
        matches = matches[:MAX_RECIPIENTS]
        if not matches:
            continue
        found: list[_Found] = []
        for i, match in enumerate(matches):
            diag: str | None = match.groupdict().get("diag")
            after_end = matches[i + 1].start() if i + 1 < len(matches) else len(notice)
            following = notice[match.end() : after_end]
            # The paragraph after the address is that address's reason (qmail, Exim).
            paragraph = re.split(r"\n[ \t]*\n", following, maxsplit=1)[0]
            if not diag or not diag.strip():
                diag = paragraph
            elif fmt.name == "postfix":
                diag = diag + " " + paragraph
            found.append(_Found(match.group("addr"), _clean(diag)))
        return _dedupe(found), fmt.name
    return None


def _usable(address: str, excluded: _Exclusions) -> bool:
    lowered = clean_address(address).lower()
    return bool(lowered) and lowered not in excluded.sender and not _is_daemon(lowered)


def _prefer(
    matches: list[re.Match[str]], excluded: _Exclusions, notice: str
) -> list[re.Match[str]]:
    """Matches naming a plausible recipient; the sender or a daemon only if nothing else.

    A failed recipient can be a postmaster, or the sender writing to themselves, so those
    are dropped only when the notice also names someone else. Message-IDs and the lines
    of a quoted header summary are never taken.
    """
    candidates = [
        m
        for m in matches
        if clean_address(m.group("addr"))
        and clean_address(m.group("addr")).lower() not in excluded.never
        and not _summary_line(notice, m.start("addr"))
    ]
    plausible = [m for m in candidates if _usable(m.group("addr"), excluded)]
    if plausible:
        return plausible
    return [
        m
        for m in candidates
        if not _MAILER_DAEMON.fullmatch(clean_address(m.group("addr")).partition("@")[0])
    ]


def _dedupe(found: list[_Found]) -> list[_Found]:
    """One entry per address (in first-seen order), keeping the most informative one."""
    seen: dict[str, _Found] = {}
    for item in found:
        key = item.address.lower()
        kept = seen.get(key)
        if kept is None or _weight(item) > _weight(kept):
            seen[key] = item
    return list(seen.values())[:MAX_RECIPIENTS]


def _weight(item: _Found) -> tuple[bool, bool, int]:
    return (item.status is not None, item.action is not None, len(item.diagnostic))


# -- 4. Generic reading ----------------------------------------------------------------------


def _looks_like_bounce(mail: Mail, notice: str) -> bool:
    top = mail.top
    sender = decode_words(top.header("from") or "")
    subject = decode_words(top.header("subject") or "")
    if top.header("x-failed-recipients"):
        return True
    if _DAEMON_FROM.search(sender) and (_BOUNCE_SUBJECT.search(subject) or _looks_failed(notice)):
        return True
    return bool(_BOUNCE_SUBJECT.search(subject)) and _looks_failed(notice)


def _looks_failed(notice: str) -> bool:
    return bool(
        _PERMANENT_TEXT.search(notice)
        or _DELAY_TEXT.search(notice)
        or cls.find_status(notice)
        or cls.find_smtp_code(notice)
        or cls.text_reason(notice) not in (None, BounceReason.TEMPORARY)
    )


def _generic(
    notice: str, mail: Mail, excluded: _Exclusions, inline: tuple[tuple[str, str], ...]
) -> list[_Found]:
    found: list[_Found] = []
    header = mail.top.header("x-failed-recipients")
    if header:
        # Exim: the failed addresses, comma-separated (Exim spec, "X-Failed-Recipients").
        for address in ADDRESS.findall(header)[:MAX_RECIPIENTS]:
            found.append(_Found(address, _near(notice, address)))
        if found:
            return _dedupe(found)
    candidates = [
        m
        for m in _GENERIC_ADDRESS.finditer(notice)
        # Not part of a URL or a longer token.
        if notice[max(0, m.start() - 1) : m.start()] not in ("/", "=", ".")
    ]
    chosen = _prefer(candidates, excluded, notice)[:MAX_RECIPIENTS]
    if len({m.group("addr").lower() for m in chosen}) > 1:
        # A notice in no known format that names several addresses: only those the
        # notice says something about (a reply code or a reason on their own line or
        # paragraph) failed; the others are contacts, forwarding targets, examples. When
        # none has words of its own, all are kept but none is confirmed.
        tiers = {m.group("addr").lower(): _own_words(notice, m.group("addr")) for m in chosen}
        best = max(tiers.values())
        own = [m for m in chosen if best and tiers[m.group("addr").lower()] == best]
        if own:
            chosen = own
        else:
            return _dedupe(
                [
                    _Found(m.group("addr"), _near(notice, m.group("addr")), confirmed=False)
                    for m in chosen
                ]
            )
    for match in chosen:
        found.append(_Found(match.group("addr"), _near(notice, match.group("addr"))))
    if found:
        return _dedupe(found)
    # Some notices list the failed message as "Subject: ... / To: x": x is what failed
    # only if the original was not list mail; a candidate, never confirmed.
    listed = {
        clean_address(a).lower(): clean_address(a)
        for line in re.findall(r"(?im)^[ \t]*to:[ \t]*(.+)$", notice[:MAX_NOTICE_SCAN])
        for a in ADDRESS.findall(line)
        if _usable(a, excluded) and clean_address(a).lower() not in excluded.never
    }
    if len(listed) == 1 and not any(_is_list_mail(h) for h in mail.enclosed_headers()):
        (address,) = listed.values()
        return [_Found(address, _clean(notice), confirmed=False)]
    return [_unnamed(mail, inline, excluded, notice)]


# A line introducing the list of failed recipients ("Your mail to the following
# recipients could not be delivered because ...:", "Message not delivered to the
# following:"); the entries follow it, one a line.
_LIST_HEADER = re.compile(
    r"^[^\n]*(?:\bfollowing\b[^\n]{0,60}?\b(?:recipients?|address(?:es|\(es\))?|users?|"
    r"mailbox(?:es)?|persons?|destinations?)\b|\b(?:delivered|sent|deliverable) to the "
    r"following\b)[^\n]{0,300}:[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
# One entry: the recipient alone on its line, or followed by its reason after a tab or two
# spaces (a column); a line of prose (words one space apart) is no entry.
_LIST_ENTRY = re.compile(
    r"[ \t]*(?P<tok>[^\s:]+)(?P<colon>:?)(?:[ \t]*|(?:\t|  )[ \t]*(?P<diag>\S.*))"
)


def _from_recipient_list(notice: str, excluded: _Exclusions) -> list[_Found] | None:
    """Failed recipients listed under a "following recipients:" line, by local part too.

    AOL names its members by screen name, Yale and other directory gateways by the bare
    local part (``userx    No matches to nameserver query``): no domain. Such an entry is
    an unconfirmed recipient (only the sent log can say which address it was; see
    ``gateway.feedback.ingest``); full addresses of the same list are confirmed. Lists
    without a bare local part are left to the generic reading, which knows more about
    full addresses.
    """
    for header in _LIST_HEADER.finditer(notice[:MAX_NOTICE_SCAN]):
        lines = notice[header.end() :].split("\n")[1:]
        while lines and not lines[0].strip() and len(lines) > 1:
            lines = lines[1:]
        found: list[_Found] = []
        bare = False
        for line in lines[:MAX_RECIPIENTS]:
            entry = _LIST_ENTRY.fullmatch(line.rstrip())
            if not line.strip() or entry is None or entry.group("tok")[0] in "-=*":
                break
            token, diag = entry.group("tok"), entry.group("diag") or header.group(0)
            address = clean_address(token)
            if address:
                if address.lower() not in excluded.never and _usable(address, excluded):
                    found.append(_Found(address, _clean(diag)))
                continue
            local = clean_local_part(token)
            # "Remote-MTA:  dns; ..." is a field label, not a name.
            if not local or entry.group("colon") or _is_daemon(f"{local}@x"):
                break
            found.append(_Found(local, _clean(diag), confirmed=False))
            bare = True
        if bare:
            return _dedupe(found)
    return None


# Header fields of the returned original that name whom it was for.
_FOR_FIELDS = ("to", "cc", "delivered-to", "x-original-to", "envelope-to")


def _resolved(found: list[_Found], mail: Mail, inline: tuple[tuple[str, str], ...]) -> list[_Found]:
    """Bare local parts completed from the returned original, still unconfirmed.

    When the original's ``To:``/``Cc:`` (or delivery fields) hold exactly one address with
    that local part, that is the candidate address; the report still did not say it, so
    it stays unconfirmed (never hard) and ``written`` keeps what the report wrote.
    """
    if not any(not f.confirmed and f.address and "@" not in f.address for f in found):
        return found
    named: list[str] = []
    for headers in [*mail.enclosed_headers(), inline]:
        for key, value in headers:
            if key.lower() in _FOR_FIELDS:
                named.extend(clean_address(a) for a in ADDRESS.findall(value))
    out: list[_Found] = []
    for item in found:
        if item.confirmed or not item.address or "@" in item.address:
            out.append(item)
            continue
        local = item.address.lower()
        matches = {a.lower(): a for a in named if a and a.rpartition("@")[0].lower() == local}
        if len(matches) == 1:
            (address,) = matches.values()
            out.append(replace(item, address=address, written=item.address))
        else:
            out.append(item)
    return out


def _is_list_mail(headers: tuple[tuple[str, str], ...]) -> bool:
    """True for a message sent through a mailing list (RFC 2369, RFC 2919, Precedence)."""
    for key, value in headers:
        name = key.lower()
        if name in ("list-id", "list-post", "list-unsubscribe", "mailing-list", "x-beenthere"):
            return True
        if name.startswith("x-mailman") or name in ("x-ml-name", "x-mailing-list"):
            return True
        if name == "precedence" and value.strip().lower() in ("list", "bulk", "junk"):
            return True
    return False


def _unnamed(
    mail: Mail, inline: tuple[tuple[str, str], ...], excluded: _Exclusions, notice: str
) -> _Found:
    """The failure of a notice that names no address: never a confirmed recipient.

    The returned original's ``To:`` is only a candidate, offered when it names one
    address and the original is not list mail (whose ``To:`` is the list, which did not
    fail); only the sent log, through a verified reference, says whom the copy was for.
    """
    candidates: list[str] = []
    for headers in [*mail.enclosed_headers(), inline]:
        if _is_list_mail(headers):
            return _Found("", _clean(notice), confirmed=False)
        for key, value in headers:
            if key.lower() in ("to", "delivered-to", "x-original-to"):
                candidates.extend(a for a in ADDRESS.findall(value) if _usable(a, excluded))
    unique = list(dict.fromkeys(clean_address(a).lower() for a in candidates))
    address = clean_address(candidates[0]) if len(unique) == 1 else ""
    return _Found(address, _clean(notice), confirmed=False)


def _own_words(notice: str, address: str) -> int:
    """How closely the notice ties a reply code or a reason to ``address``.

    2: its line or its sentence gives one; 1: only its paragraph does; 0: nothing. An
    address the notice cites as an example or a contact ("The standard form of address is
    lastname@host.") shares a paragraph with the one that failed, not its sentence.
    """
    lowered = address.lower()
    at = notice.lower().find(lowered)
    if at < 0:
        return 0
    line_start = notice.rfind("\n", 0, at) + 1
    line_end = notice.find("\n", at)
    line = notice[line_start : line_end if line_end >= 0 else len(notice)]
    start = notice.rfind("\n\n", 0, at)
    end = notice.find("\n\n", at)
    paragraph = notice[start + 1 if start >= 0 else 0 : end if end >= 0 else len(notice)]
    flat = re.sub(r"\s+", " ", paragraph[:4096])
    sentence = next((s for s in _SENTENCE_END.split(flat) if lowered in s.lower()), line)
    for text in (line, sentence):
        if _says_failure(text) or _FAILED_TO.search(text):
            return 2
    return 1 if _says_failure(paragraph[:4096]) or _PERMANENT_TEXT.search(paragraph[:4096]) else 0


# A sentence ends at ".", "!" or "?" followed by a space (an address's dots are not).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _says_failure(text: str) -> bool:
    """True when ``text`` gives a reply code, a status code or a reason."""
    if cls.find_smtp_code(text) or cls.find_status(text):
        return True
    return cls.text_reason(text) not in (None, BounceReason.TEMPORARY)


# A line that says delivery to the address on it failed ("unable to deliver your message
# to x", "x: undeliverable").
_FAILED_TO = re.compile(
    r"(?:unable|not able|could not|couldn't|cannot|can't|failed) to (?:be )?deliver|"
    r"not (?:be )?delivered|delivery (?:to .{0,80})?failed|undeliverable|rejected|refused",
    re.IGNORECASE,
)


def _near(notice: str, address: str) -> str:
    """What the notice says next to ``address``: its line and the lines that continue it.

    The chunk ends at an empty line or at a line that starts with another address (the
    next recipient's entry). Without a reply code or a reason there, the paragraph, then
    the start of the notice, stand in.
    """
    lowered = address.lower()
    at = notice.lower().find(lowered)
    if at < 0:
        return _clean(notice[:2000])
    line_start = notice.rfind("\n", 0, at) + 1
    chunk: list[str] = []
    for i, line in enumerate(notice[line_start:].split("\n")[:20]):
        if i > 0 and not line.strip():
            break
        head = _LINE_ADDRESS.match(line)
        if i > 0 and head is not None and head.group("addr").lower() != lowered:
            break
        chunk.append(line)
    text = " ".join(chunk)
    if cls.find_smtp_code(text) or cls.text_reason(text):
        return _clean(text)
    start = notice.rfind("\n\n", 0, at)
    end = notice.find("\n\n", at)
    paragraph = notice[start + 1 if start >= 0 else 0 : end if end >= 0 else len(notice)]
    if cls.find_smtp_code(paragraph) or cls.text_reason(paragraph):
        return _clean(paragraph)
    return _clean(notice[:2000])


# -- Assembly ------------------------------------------------------------------------------


def _kind(item: _Found, notice_is_delay: bool) -> BounceKind | None:
    action = (item.action or "").split()[0] if item.action else ""
    if action in ("delivered", "relayed", "expanded"):
        return None  # RFC 3464 §2.3.3: success notices name no failure
    if action == "delayed":
        return BounceKind.DELAY
    if action == "failed":
        return BounceKind.BOUNCE
    status = item.status or ""
    if status.startswith("2"):
        return None
    if status.startswith("4") and (notice_is_delay or action == ""):
        return BounceKind.DELAY if notice_is_delay else BounceKind.BOUNCE
    return (
        BounceKind.DELAY if notice_is_delay and not status.startswith("5") else (BounceKind.BOUNCE)
    )


def _origin(mail: Mail, reporting_mta: str | None, notice: str) -> str:
    """Who sent the report, for ``PROVIDER_RULES``: its header fields, MTA, notice start."""
    fields = "\n".join(f"{key}: {value}" for key, value in mail.top.headers)
    return f"{fields[:8192]}\nreporting-mta: {reporting_mta or ''}\n{notice[:2048]}"


def _recipient(item: _Found, kind: BounceKind, notice: str, origin: str = "") -> BounceRecipient:
    diagnostic = item.diagnostic
    status = item.status or cls.find_status(diagnostic)
    smtp_code = item.smtp_code or cls.find_smtp_code(diagnostic)
    # The notice's own words about this address: weaker evidence than the diagnostic.
    context = _near(notice, item.address)
    if cls.text_reason(diagnostic) is None:
        status = status or cls.find_status(context)
    special = cls.provider_reason(item.address, f"{diagnostic}\n{context}", origin, status)
    if special is not None:
        reason, permanent = special, False
    else:
        rcpt = bool(cls.RCPT_STAGE.search(notice[:20000]))
        reason, permanent = cls.classify(kind, status, smtp_code, diagnostic, context, rcpt)
    return BounceRecipient(
        address=item.address,
        # A hard flag goes only to an address the report itself says failed.
        hard=permanent and item.confirmed,
        kind=kind,
        reason=reason,
        status=status,
        smtp_code=smtp_code,
        diagnostic=diagnostic,
        confirmed=item.confirmed,
        permanent=permanent,
        original_recipient=item.original,
        written=item.written,
    )


def _cleaned(found: list[_Found]) -> list[_Found]:
    """Addresses as they are (no ``SMTP=`` prefix, no stray quote), one entry each."""
    out: list[_Found] = []
    for item in found:
        address = clean_address(item.address) if item.address else ""
        if not address and not item.confirmed and item.address:
            address = clean_local_part(item.address)
        if address or not item.confirmed:
            original = clean_address(item.original) if item.original else None
            out.append(replace(item, address=address, original=original or None))
    return _dedupe(out)


def _has_report_part(mail: Mail) -> bool:
    """True for an RFC 3464 report: a delivery-status part, even one naming nobody."""
    return bool(mail.of_type(*_DSN_TYPES))


def _enclosed_report(mail: Mail, *, reports_only: bool) -> BounceReport | None:
    """A bounce forwarded as an attachment (``message/rfc822`` holding the DSN).

    People forward a bounce they received to the address a sender gave them; the
    forwarding message is then only a wrapper, and the enclosed report says what failed.
    """
    for inner in mail.enclosed_mails():
        daemon = _DAEMON_FROM.search(inner.top.header("from") or "") is not None
        if _has_report_part(inner) or (daemon and not reports_only):
            report = bounce_from(inner, nested=True)
            if report is not None:
                refs = tuple(dict.fromkeys(find_refs(mail) + report.refs))
                return replace(report, refs=refs, variant=f"forwarded-{report.variant}")
    return None


def bounce_from(mail: Mail, *, nested: bool = False) -> BounceReport | None:
    """Read a bounce from an already read ``Mail``; ``None`` when it is not one."""
    notice, inline = _notice(mail)
    subject = decode_words(mail.top.header("subject") or "")
    # Sendmail titles a notice "Returned mail: ..." only when it gives the message back,
    # i.e. the failure is final, even when the last try was deferred ("Returned mail:
    # Deferred: Connection timed out"); its delay warnings are "Warning: could not send".
    returned = re.match(r"\s*returned mail:", subject, re.I) is not None
    says_retrying = _DELAY_TEXT.search(notice) is not None
    final_words = _GAVE_UP if says_retrying else _PERMANENT_TEXT
    notice_is_delay = (
        (says_retrying or re.search(r"delay|warning|deferred", subject, re.I) is not None)
        and not final_words.search(notice)
        and not returned
    )
    excluded = _excluded(mail, inline, notice)
    reporting_mta: str | None = None
    dsn = _from_dsn(mail) or _from_ses(mail)
    report_part = _has_report_part(mail)
    if dsn is not None:
        found, reporting_mta, variant = dsn
    else:
        if not report_part:
            if not nested:
                # From a person: any enclosed bounce; from a mailer (a gateway that wraps
                # what it relays, a disclaimer appender): only an enclosed RFC 3464 report,
                # since a mailer's own notice encloses the returned original.
                daemon = _DAEMON_FROM.search(mail.top.header("from") or "") is not None
                forwarded = _enclosed_report(mail, reports_only=daemon)
                if forwarded is not None:
                    return forwarded
            if is_auto_reply(mail):
                return None
            if not _looks_like_bounce(mail, notice) and not _strong_signature(notice):
                return None
        text_found = _from_text_format(notice, mail, excluded)
        listed = _from_recipient_list(notice, excluded) if text_found is None else None
        if text_found is not None:
            found, variant = text_found
        elif listed is not None:
            found, variant = listed, "recipient-list"
        else:
            found, variant = _generic(notice, mail, excluded, inline), "generic"
        if report_part:
            # RFC 3464 report whose delivery-status part names no recipient (only the
            # per-message fields): the notice names the address, the part may say how.
            variant = f"rfc3464-{variant}"
            dsn_status = _report_status(mail)
            if dsn_status is not None:
                found = [f if f.status else replace(f, status=dsn_status) for f in found]
        notice_status = cls.find_status(notice) if len(found) == 1 else None
        if notice_status is not None and not found[0].diagnostic:
            found = [replace(found[0], diagnostic=_clean(notice), status=notice_status)]
    found = _resolved(_cleaned(found), mail, inline)
    recipients: list[BounceRecipient] = []
    origin = _origin(mail, reporting_mta, notice)
    for item in found[:MAX_RECIPIENTS]:
        kind = _kind(item, notice_is_delay)
        # Only the subject said "Warning" or "delayed": a notice that this address does
        # not exist is final whatever it is titled ("Warning: x - User unknown!").
        if (
            kind is BounceKind.DELAY
            and not says_retrying
            and item.action is None
            and cls.text_reason(item.diagnostic)
            in (BounceReason.UNKNOWN_USER, BounceReason.DOMAIN_NOT_FOUND)
        ):
            kind = BounceKind.BOUNCE
        if kind is None:
            continue
        recipients.append(_recipient(item, kind, notice, origin))
    if not recipients:
        return None
    return BounceReport(
        recipients=tuple(recipients),
        refs=find_refs(mail),
        original_message_id=original_message_id(mail),
        reporting_mta=reporting_mta,
        variant=variant,
    )


def _strong_signature(notice: str) -> bool:
    return any(fmt.signature.search(notice) for fmt in TEXT_FORMATS if fmt.name in _STRONG_FORMATS)


# Formats whose signature alone proves a bounce, whatever the From and Subject say.
_STRONG_FORMATS = frozenset({"qmail", "exim", "postfix", "sendmail", "au-one-net", "fml"})


def parse_bounce(raw: bytes) -> BounceReport | None:
    """Parse ``raw`` as a bounce or delay report.

    Returns ``None`` when the message is not one (an auto-reply, a complaint, ordinary
    mail, junk). Never raises on malformed input.
    """
    return bounce_from(mailmod.read(raw))
