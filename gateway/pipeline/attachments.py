"""Checks on attachments: ones nobody attached, and dangerous ones (pure).

Stray attachments
    Parts a person did not attach, made by a broken CRM or mail client: Apple Mail's and
    others' ``unknown1.txt`` / ``noname``, Outlook's ``ATT00001.txt``/``.htm`` for body
    pieces, ``winmail.dat`` (Outlook rich text, TNEF, unreadable outside Outlook), a text
    attachment that is really HTML, a copy of the body, a zero-byte file, and an unnamed
    part in a message with no body. Mailbox providers treat such mail as a virus carrier:
    the incident this check exists for had every HTML body turned into ``unknown1.txt``
    and the dealer's domain blacklisted. The finding names a safe repair
    (``gateway.intake.repair``) when there is one, and only for the incident's shape: the
    HTML is in a part the mail program named (``unknown1.txt``, ``unknown1.html``,
    ``ATT00001.htm``) or left unnamed, the message has no HTML body, the text body is
    empty, one line ("Please see the attached.") or the same message as the HTML, and the
    HTML runs nothing and collects nothing (no script, event handler, form or frame). Then
    the HTML becomes the body again. A document someone named (``invoice.html``), even sent
    as ``application/octet-stream``, is an attachment and is left alone. ``winmail.dat`` is
    dropped when there is a readable body.

Dangerous attachments
    Programs and scripts (by extension, declared type or content), disk images (``.iso``,
    ``.img``, ``.vhd``) and OneNote notebooks (``.one``), which hide programs from mail
    filters, macro-enabled Office files, double extensions (``invoice.pdf.exe``), SVG
    images that run scripts (``<script>``, ``on...=`` handlers, ``javascript:`` links),
    web pages that run scripts, ask for a password or post a form to a site that is not
    the dealer's (phishing kits), and archives holding any of these, however nested or
    compressed (``setup.exe.gz``). A declared type that the content's magic bytes
    contradict (a ".pdf" that is a Windows program) is reported.

Uninspectable attachments
    What cannot be shown to be safe: encrypted, damaged or oversized archives, archives
    nested deeper than the limit, and formats the standard library cannot open (RAR,
    7-Zip, CAB; see ``gateway.pipeline.archives``, which also owns the limits). The
    policy decides; the shipped default holds them.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Iterator
from urllib.parse import urlsplit

from gateway.mail.message import Attachment, ParsedMessage
from gateway.pipeline.archives import (
    UNREADABLE,
    ArchiveLimits,
    ArchiveReport,
    archive_kind,
    inspect_archive,
)
from gateway.pipeline.base import CheckContext, Finding
from gateway.pipeline.html import to_text
from gateway.policy.model import DealerPolicy
from gateway.policy.options import DangerousAttachmentOptions

__all__ = [
    "REPAIR_DROP_TNEF",
    "REPAIR_HTML_BODY",
    "ArchiveLimits",
    "active_content",
    "dangerous_attachment",
    "decoded_html",
    "html_body_obstacle",
    "html_risk",
    "is_html_stray",
    "is_stray_named",
    "is_tnef",
    "looks_like_html",
    "stray_attachment",
    "text_body_shape",
    "uninspectable_attachment",
]

REPAIR_HTML_BODY = "html-attachment-as-body"
REPAIR_DROP_TNEF = "drop-winmail-dat"

_STRAY_NAME = re.compile(
    r"^(?:unknown\d*\.(?:txt|html?)|att\d+\.(?:txt|html?|dat)|noname(?:\.\w{1,4})?"
    r"|winmail\.dat)$",
    re.IGNORECASE,
)
# Extensions a mislabelled body part may carry; any other name is a person's choice.
_MISLABEL_EXTENSIONS: tuple[list[str], ...] = ([], ["txt"], ["dat"])
# Share of a text body's words the HTML must hold for the two to be one message (a CRM's
# plain-text alternative of the same mail: unknown1-with-pdf.eml shares all of them).
_SAME_MESSAGE = 0.8
_WORD = re.compile(r"\w+")
_TNEF_TYPES = ("application/ms-tnef", "application/vnd.ms-tnef")
_HTML_START = re.compile(
    rb"^\s*(?:<!doctype\s+html|<html\b|<head\b|<body\b|<table\b|<div\b|<p\b|<meta\b|<style\b"
    rb"|<!--)",
    re.IGNORECASE,
)
_SNIFF = 2048

# Windows/macOS executables and scripts, installers, shortcuts, disk images used to carry
# them; macro-enabled Office formats (the "m" variants, Office 2007+).
_EXECUTABLE = frozenset(
    [
        "exe",
        "com",
        "scr",
        "pif",
        "bat",
        "cmd",
        "vbs",
        "vbe",
        "js",
        "jse",
        "wsf",
        "wsh",
        "wsc",
        "msi",
        "msp",
        "mst",
        "hta",
        "cpl",
        "jar",
        "ps1",
        "psm1",
        "psd1",
        "reg",
        "lnk",
        "dll",
        "sys",
        "scf",
        "inf",
        "application",
        "gadget",
        "msc",
        "sct",
        "url",
        "app",
        "command",
        "sh",
        "ade",
        "adp",
        "chm",
        "hlp",
        "ins",
        "isp",
    ]
)
# Containers that mail filters treat like programs: disk images mount as a drive and hide
# their files from filters (and from Windows' mark of the web); OneNote notebooks run the
# files embedded in them with one click (the 2023 malware wave).
_DISK_IMAGE = frozenset(["iso", "img", "vhd", "vhdx", "dmg"])
_ONENOTE = frozenset(["one", "onepkg"])
_MACRO = frozenset(["docm", "dotm", "xlsm", "xltm", "xlam", "pptm", "potm", "ppam", "ppsm", "sldm"])
_DANGEROUS_TYPES = frozenset(
    {
        "application/x-msdownload",
        "application/x-msdos-program",
        "application/x-ms-installer",
        "application/x-msi",
        "application/x-dosexec",
        "application/x-executable",
        "application/x-sh",
        "application/javascript",
        "application/x-javascript",
        "text/javascript",
        "application/hta",
        "application/x-ms-shortcut",
        "application/vnd.ms-word.document.macroenabled.12",
        "application/vnd.ms-excel.sheet.macroenabled.12",
        "application/vnd.ms-powerpoint.presentation.macroenabled.12",
    }
)
# Magic bytes: (prefix, family). Families compare declared and real type.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"MZ", "executable"),
    (b"\x7fELF", "executable"),
    (b"\xcf\xfa\xed\xfe", "executable"),
    (b"\xca\xfe\xba\xbe", "executable"),
    (b"%PDF", "pdf"),
    (b"\x89PNG\r\n\x1a\n", "image"),
    (b"\xff\xd8\xff", "image"),
    (b"GIF8", "image"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole"),
    (b"Rar!\x1a\x07", "rar"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"\x1f\x8b", "gzip"),
    (b"\xe4\x52\x5c\x7b\x8c\xd8\xa7\x4d\xae\xb1\x53\x78\xd0\x29\x96\xd3", "onenote"),
    (b"vhdxfile", "disk image"),
    (b"conectix", "disk image"),
)
_DECLARED_FAMILY = {
    "pdf": "pdf",
    "png": "image",
    "jpg": "image",
    "jpeg": "image",
    "gif": "image",
    "zip": "zip",
    "docx": "zip",
    "xlsx": "zip",
    "pptx": "zip",
    "doc": "ole",
    "xls": "ole",
    "ppt": "ole",
}
_DOCUMENT_LOOKING = frozenset(
    [
        "pdf",
        "doc",
        "docx",
        "xls",
        "xlsx",
        "ppt",
        "pptx",
        "rtf",
        "txt",
        "csv",
        "jpg",
        "jpeg",
        "png",
        "gif",
        "zip",
        "htm",
        "html",
    ]
)
_DECLARED_TYPE_FAMILY = {
    "application/pdf": "pdf",
    "image/png": "image",
    "image/jpeg": "image",
    "image/gif": "image",
    "application/zip": "zip",
}


def _name(attachment: Attachment) -> str:
    return (attachment.filename or "").strip().strip('"').strip()


def looks_like_html(data: bytes) -> bool:
    """Tell whether ``data`` starts like an HTML document or fragment."""
    head = data[:_SNIFF].lstrip(b"\xef\xbb\xbf")
    if _HTML_START.match(head):
        return True
    lowered = head.lower()
    return (
        lowered.count(b"<") > 5 and (b"</" in lowered) and (b"<br" in lowered or b"<td" in lowered)
    )


def is_tnef(attachment: Attachment) -> bool:
    """Tell whether the part is Outlook rich text (winmail.dat, RFC-less TNEF)."""
    return (
        attachment.content_type in _TNEF_TYPES
        or _name(attachment).lower() == "winmail.dat"
        or attachment.content[:4] == b"\x78\x9f\x3e\x22"
    )


def is_html_stray(attachment: Attachment) -> bool:
    """Tell whether the part is a body-less copy of HTML sent as a text-ish attachment."""
    if attachment.content_type == "message/rfc822" or attachment.content_type.startswith(
        ("image/", "audio/", "video/")
    ):
        return False
    name = _name(attachment).lower()
    text_like = attachment.content_type in (
        "text/plain",
        "text/html",
        "application/octet-stream",
    ) or name.endswith((".txt", ".htm", ".html", ".dat"))
    if not text_like:
        return False
    deliberate = attachment.content_type == "text/html" or (
        _extensions(name)[-1:] not in _MISLABEL_EXTENSIONS
    )
    if name and not _STRAY_NAME.match(name) and deliberate:
        return False  # a named document someone attached on purpose: invoice.html
    return looks_like_html(attachment.content)


def is_stray_named(attachment: Attachment) -> bool:
    """Tell whether a mail program named the part (``unknown1.txt``), or nobody did."""
    name = _name(attachment)
    return not name or _STRAY_NAME.match(name) is not None


def decoded_html(attachment: Attachment) -> str:
    """The attachment's bytes as HTML text (UTF-8, else Latin-1, as browsers fall back)."""
    try:
        return attachment.content.decode("utf-8")
    except UnicodeDecodeError:
        return attachment.content.decode("latin-1")


def text_body_shape(texts: list[str], html: str) -> str | None:
    """Say how the text body relates to HTML that lost its place as the body.

    ``"empty"``; ``"placeholder"`` (one line, like "Please see the attached."); ``"same"``
    (the plain-text alternative of the same message); ``None``: a text of its own, so the
    HTML is not known to be the message.
    """
    text = "\n".join(texts).strip()
    if not text:
        return "empty"
    if len([line for line in text.splitlines() if line.strip()]) == 1:
        return "placeholder"
    words = _WORD.findall(text.lower())
    html_words = set(_WORD.findall(to_text(html).lower()))
    shared = sum(1 for word in words if word in html_words)
    return "same" if words and shared >= _SAME_MESSAGE * len(words) else None


def _has_body(msg: ParsedMessage) -> bool:
    return any(part.strip() for part in (*msg.text_parts, *msg.html_parts))


def _normalised(text: str) -> str:
    return " ".join(text.split())


def _repeats_body(attachment: Attachment, msg: ParsedMessage) -> bool:
    if not attachment.content_type.startswith("text/") or attachment.size > 1024 * 1024:
        return False
    try:
        text = _normalised(attachment.content.decode("utf-8"))
    except UnicodeDecodeError:
        text = _normalised(attachment.content.decode("latin-1"))
    if not text:
        return False
    return any(_normalised(part) == text for part in (*msg.text_parts, *msg.html_parts))


def _stray_reason(attachment: Attachment, msg: ParsedMessage) -> str | None:
    name = _name(attachment)
    if is_tnef(attachment):
        return "winmail.dat (Outlook rich text that other mail programs cannot read)"
    if attachment.content_type == "message/rfc822" or attachment.content_type.startswith(
        "multipart/"
    ):
        return None  # a forwarded message, or a container the parser could not split
    if is_html_stray(attachment):
        return f"{name or 'an unnamed part'} holds HTML that should have been the body"
    if name and _STRAY_NAME.match(name):
        return f"{name} was made by the mail program, not attached by a person"
    if attachment.size == 0:
        return f"{name or 'an unnamed attachment'} is empty (0 bytes)"
    if _repeats_body(attachment, msg):
        return f"{name or 'an unnamed attachment'} repeats the body of the message"
    if not name and attachment.disposition != "inline" and not _has_body(msg):
        return f"an unnamed {attachment.content_type} part is the only content"
    return None


def html_body_obstacle(attachment: Attachment, msg: ParsedMessage) -> str | None:
    """Say why a stray HTML part may not become the body, or ``None`` when it may.

    It may when it has the incident's shape (see the module docstring).
    """
    if not is_stray_named(attachment):
        return "a person named it"
    html = decoded_html(attachment)
    active = active_content(html)
    if active is not None:
        return f"it {active}"  # never promoted: the dangerous-attachment policy decides
    if text_body_shape(list(msg.text_parts), html) is None:
        return "the text body is a message of its own"
    return None


def stray_attachment(
    msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext
) -> Iterator[Finding]:
    """Find attachments nobody attached, naming the safe repair where one applies."""
    html_strays = [a for a in msg.attachments if is_html_stray(a) and not is_tnef(a)]
    has_html_body = any(part.strip() for part in msg.html_parts)
    readable = _has_body(msg) or (not has_html_body and len(html_strays) == 1)
    for attachment in msg.attachments:
        reason = _stray_reason(attachment, msg)
        if reason is None:
            continue
        repair: str | None = None
        if is_tnef(attachment):
            repair = REPAIR_DROP_TNEF if readable else None
        elif len(html_strays) == 1 and html_strays[0] is attachment and not has_html_body:
            obstacle = html_body_obstacle(attachment, msg)
            if obstacle is None:
                repair = REPAIR_HTML_BODY
            else:
                reason = f"{reason}; it was not made the body because {obstacle}"
        yield Finding(
            "stray-attachment",
            reason,
            data={"filename": _name(attachment), "content_type": attachment.content_type},
            repair=repair,
        )


# -- dangerous attachments ------------------------------------------------------------


def _extensions(name: str) -> list[str]:
    parts = name.lower().rstrip(". ").split(".")
    return [p.strip() for p in parts[1:]] if len(parts) > 1 else []


def _magic_family(data: bytes) -> str | None:
    for prefix, family in _MAGIC:
        if data.startswith(prefix):
            return family
    # ISO 9660 (RFC-less; ECMA-119 §8.4): the first volume descriptor at 32 KiB + 1.
    if data[0x8001:0x8006] == b"CD001":
        return "disk image"
    return None


def _name_kind(name: str) -> str | None:
    """Say what kind of dangerous file ``name`` is by its extensions, or ``None``."""
    extensions = _extensions(name)
    if not extensions:
        return None
    last = extensions[-1]
    if last in _EXECUTABLE:
        kind = f"a program or script (.{last})"
    elif last in _DISK_IMAGE:
        kind = f"a disk image (.{last}), which can hide programs from mail filters"
    elif last in _ONENOTE:
        kind = f"a OneNote notebook (.{last}), which can hide programs"
    elif last in _MACRO:
        return f"an Office file with macros (.{last})"
    else:
        return None
    if len(extensions) > 1 and extensions[-2] in _DOCUMENT_LOOKING:
        return f"a program disguised as a .{extensions[-2]} file"
    return kind


# Active content in HTML and SVG: what runs or collects input when the file is opened. The
# patterns are bounded (attributes up to 2,000 characters) so junk stays linear.
_SCRIPT = re.compile(r"<script\b", re.IGNORECASE)
_HANDLER = re.compile(r"<[a-z][^<>]{0,2000}?[\s/\"']on[a-z]{3,30}\s*=", re.IGNORECASE)
_SCRIPT_URL = re.compile(
    r"""\b(?:href|src|action|formaction|data)\s*=\s*["']?\s*"""
    r"""(?:javascript|vbscript|data\s*:\s*text/html)\s*:?""",
    re.IGNORECASE,
)
_FORM = re.compile(r"<form\b([^<>]{0,2000})>", re.IGNORECASE)
_ACTION = re.compile(r"""\baction\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)
_PASSWORD = re.compile(r"""<input\b[^<>]{0,2000}?\btype\s*=\s*["']?password\b""", re.IGNORECASE)
_EMBED = re.compile(
    r"<(?:iframe|object|embed|applet)\b|<meta\b[^<>]{0,2000}?http-equiv\s*=\s*[\"']?refresh",
    re.IGNORECASE,
)
_SVG_START = re.compile(
    rb"\s*(?:<\?xml[^>]{0,500}>\s*)?(?:<!--.{0,2000}?-->\s*)*(?:<!doctype[^>]{0,2000}>\s*)?<svg\b",
    re.IGNORECASE | re.DOTALL,
)
_HTML_EXTENSIONS = frozenset(["htm", "html", "xhtml", "shtml", "mht", "mhtml"])


def _own(host: str, domains: frozenset[str]) -> bool:
    return any(host == domain or host.endswith("." + domain) for domain in domains)


def _script_reason(text: str) -> str | None:
    if _SCRIPT.search(text):
        return "runs a script"
    if _HANDLER.search(text):
        return "runs a script when it is opened or clicked (an on... event handler)"
    if _SCRIPT_URL.search(text):
        return "has a javascript: link"
    return None


def html_risk(text: str, own_domains: frozenset[str]) -> str | None:
    """Say why an HTML document is dangerous to open from an attachment, or ``None``.

    Phishing kits arrive as HTML attachments: a page that runs a script, asks for a
    password, or posts what is typed to a site that is not the dealer's.
    """
    reason = _script_reason(text)
    if reason is not None:
        return reason
    if _PASSWORD.search(text):
        return "asks for a password"
    for form in _FORM.finditer(text):
        action = _ACTION.search(form.group(1))
        if action is None:
            continue
        target = next(g for g in action.groups() if g is not None).strip()
        host = (urlsplit(target).hostname or "") if "//" in target else ""
        if host and not _own(host.lower(), own_domains):
            return f"has a form that sends what is typed to {host}"
    return None


def active_content(text: str) -> str | None:
    """Say what in an HTML document would run or collect input, or ``None``.

    Stricter than ``html_risk``: any form, frame or embedded object counts, whoever it
    belongs to. Such HTML is never promoted from an attachment to a message body.
    """
    reason = _script_reason(text)
    if reason is not None:
        return reason
    if _FORM.search(text) or _PASSWORD.search(text):
        return "has a form"
    if _EMBED.search(text):
        return "embeds a frame, an object or a redirect"
    return None


def _is_svg(attachment: Attachment, extensions: list[str]) -> bool:
    return (
        attachment.content_type == "image/svg+xml"
        or (extensions[-1:] in (["svg"], ["svgz"]))
        or _SVG_START.match(attachment.content[:_SNIFF]) is not None
    )


def _is_html_document(attachment: Attachment, extensions: list[str]) -> bool:
    if attachment.content_type in ("text/html", "application/xhtml+xml"):
        return True
    if extensions and extensions[-1] in _HTML_EXTENSIONS:
        return True
    return attachment.content_type in ("application/octet-stream", "text/plain") and (
        looks_like_html(attachment.content)
    )


def _text_of(data: bytes, limit: int) -> str:
    # Latin-1 maps every byte to one character, so the patterns see the markup whatever the
    # real charset; only ASCII markup matters here.
    return data[:limit].decode("latin-1")


def _limits(dealer: DealerPolicy) -> ArchiveLimits:
    """The archive limits, from the dangerous-attachment rule's typed options (one place)."""
    options = dealer.options(DangerousAttachmentOptions)
    return ArchiveLimits(
        max_depth=options.max_depth,
        max_entries=options.max_entries,
        max_bytes=options.max_bytes,
        max_ratio=options.max_ratio,
        max_scan_bytes=options.max_scan_bytes,
    )


def inspect(
    attachment: Attachment, limits: ArchiveLimits, own_domains: frozenset[str]
) -> ArchiveReport:
    """Say why ``attachment`` is dangerous, and what of it could not be checked."""
    name = _name(attachment)
    label = name or f"an unnamed {attachment.content_type} attachment"
    kind = _name_kind(name) if name else None
    if kind is not None:
        return ArchiveReport(dangerous=f"{name} is {kind}")
    if attachment.content_type in _DANGEROUS_TYPES:
        return ArchiveReport(
            f"{label} is declared as {attachment.content_type}, a program or script"
        )
    data = attachment.content
    real = _magic_family(data)
    if real == "executable":
        return ArchiveReport(f"{label} is a program (its content is an executable)")
    if real == "disk image":
        return ArchiveReport(f"{label} is a disk image, which can hide programs from mail filters")
    if real == "onenote":
        return ArchiveReport(f"{label} is a OneNote notebook, which can hide programs")
    extensions = _extensions(name)
    declared = _DECLARED_FAMILY.get(extensions[-1]) if extensions else None
    declared = declared or _DECLARED_TYPE_FAMILY.get(attachment.content_type)
    if declared is not None and real is not None and real != declared:
        return ArchiveReport(f"{label} is declared as {declared} but its content is {real}")
    truncated = attachment.size > len(data)
    if _is_svg(attachment, extensions):
        if real == "gzip":  # .svgz
            try:
                data = zlib.decompressobj(wbits=31).decompress(data, limits.max_scan_bytes)
            except zlib.error:
                return ArchiveReport(uninspectable=f"{label} is a damaged compressed image")
        reason = _script_reason(_text_of(data, limits.max_scan_bytes))
        if reason is not None:
            return ArchiveReport(f"{label} is an SVG image that {reason}")
        return ArchiveReport()
    if _is_html_document(attachment, extensions):
        if truncated or len(data) > limits.max_scan_bytes:
            return ArchiveReport(uninspectable=f"{label} is a web page too large to check")
        reason = html_risk(_text_of(data, limits.max_scan_bytes), own_domains)
        return ArchiveReport(f"{label} is a web page that {reason}" if reason else None)
    archive = archive_kind(name, data)
    if archive is None or (archive == "zip" and declared not in (None, "zip")):
        return ArchiveReport()
    if truncated and archive not in UNREADABLE:
        return ArchiveReport(uninspectable=f"{label} is too large to check")
    return inspect_archive(data, archive, name, label, limits, _name_kind)


# Both attachment checks read the same inspections; the cache spares the second one the
# archive walks. Keyed by the whole message, so it keeps at most the last two messages.
@functools.lru_cache(maxsize=2)
def _inspections(
    msg: ParsedMessage, limits: ArchiveLimits, own_domains: frozenset[str]
) -> tuple[tuple[Attachment, ArchiveReport], ...]:
    return tuple(
        (attachment, inspect(attachment, limits, own_domains))
        for attachment in msg.attachments
        if attachment.content_type != "message/rfc822"
    )


def _attachment_data(attachment: Attachment) -> dict[str, str]:
    return {"filename": _name(attachment), "content_type": attachment.content_type}


def dangerous_attachment(
    msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext
) -> Iterator[Finding]:
    """Find programs, scripts, macro files, disguised files and archives holding them."""
    if not msg.attachments:
        return
    for attachment, report in _inspections(msg, _limits(dealer), dealer.from_domains):
        reason = report.dangerous
        if reason is not None:
            yield Finding("dangerous-attachment", reason, data=_attachment_data(attachment))


def uninspectable_attachment(
    msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext
) -> Iterator[Finding]:
    """Find attachments that could not be checked: encrypted, damaged, unreadable formats.

    An attachment already found dangerous is not reported again here.
    """
    if not msg.attachments:
        return
    for attachment, report in _inspections(msg, _limits(dealer), dealer.from_domains):
        if report.uninspectable is not None and report.dangerous is None:
            yield Finding(
                "uninspectable-attachment",
                report.uninspectable,
                data=_attachment_data(attachment),
            )
