"""Checks on attachments: ones nobody attached, and dangerous ones (pure).

Stray attachments
    Parts a person did not attach, made by a broken CRM or mail client: Apple Mail's and
    others' ``unknown1.txt`` / ``noname``, Outlook's ``ATT00001.txt``/``.htm`` for body
    pieces, ``winmail.dat`` (Outlook rich text, TNEF, unreadable outside Outlook), a text
    attachment that is really HTML, a copy of the body, a zero-byte file, and an unnamed
    part in a message with no body. Mailbox providers treat such mail as a virus carrier:
    the incident this check exists for had every HTML body turned into ``unknown1.txt``
    and the dealer's domain blacklisted. The finding names a safe repair
    (``gateway.intake.repair``) when there is one: HTML sent only as such an attachment becomes
    the body again, and ``winmail.dat`` is dropped when there is a readable body.

Dangerous attachments
    Programs and scripts (by extension, declared type or content), macro-enabled Office
    files, double extensions (``invoice.pdf.exe``), and zip archives containing any of
    these. Archives are read from memory with ``zipfile`` within the policy's limits
    (``max_depth``, ``max_entries``, ``max_bytes`` declared uncompressed, ``max_ratio``),
    using the sizes the archive declares, and a nested archive is opened only when it
    is within those limits; an archive that breaks a limit, is encrypted or is corrupt
    cannot be shown to be safe and is reported as such. A declared type that the
    content's magic bytes contradict (a ".pdf" that is a Windows program) is reported.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator

from gateway.mail.message import Attachment, ParsedMessage
from gateway.pipeline.base import CheckContext, Finding
from gateway.policy.model import DealerPolicy
from gateway.policy.options import DangerousAttachmentOptions

REPAIR_HTML_BODY = "html-attachment-as-body"
REPAIR_DROP_TNEF = "drop-winmail-dat"

_STRAY_NAME = re.compile(
    r"^(?:unknown\d*\.txt|att\d+\.(?:txt|html?|dat)|noname(?:\.\w{1,4})?|winmail\.dat)$",
    re.IGNORECASE,
)
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
        "iso",
        "img",
        "vhd",
        "vhdx",
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
_BOMB_FLOOR = 1024 * 1024  # small, very compressible files (blank forms) are normal
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
    if attachment.content_type == "text/html" and name and not _STRAY_NAME.match(name):
        return False  # a named HTML document someone attached on purpose
    return looks_like_html(attachment.content)


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
            repair = REPAIR_HTML_BODY
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
    return None


def _name_kind(name: str) -> str | None:
    """Say what kind of dangerous file ``name`` is by its extensions, or ``None``."""
    extensions = _extensions(name)
    if not extensions:
        return None
    last = extensions[-1]
    if last in _EXECUTABLE:
        if len(extensions) > 1 and extensions[-2] in _DOCUMENT_LOOKING:
            return f"a program disguised as a .{extensions[-2]} file"
        return f"a program or script (.{last})"
    if last in _MACRO:
        return f"an Office file with macros (.{last})"
    return None


def _zip_problem(data: bytes, label: str, limits: DangerousAttachmentOptions) -> str | None:
    """Walk a zip (and zips inside it) within ``limits``; describe the first problem."""
    pending: list[tuple[bytes, str, int]] = [(data, label, 1)]
    entries = 0
    total = 0
    while pending:
        blob, where, depth = pending.pop()
        try:
            archive = zipfile.ZipFile(io.BytesIO(blob))
            infos = archive.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError):
            return f"{where} is a damaged archive that cannot be checked"
        for info in infos:
            entries += 1
            if entries > limits.max_entries:
                return f"{label} has more than {limits.max_entries} files to check"
            total += info.file_size
            if total > limits.max_bytes:
                return f"{label} unpacks to more than {limits.max_bytes // (1024 * 1024)} MB"
            if info.file_size > _BOMB_FLOOR and info.file_size > limits.max_ratio * max(
                info.compress_size, 1
            ):
                return f"{where} contains {info.filename}, compressed suspiciously well (zip bomb)"
            if info.flag_bits & 0x1:
                return f"{where} is password-protected and cannot be checked"
            inner = info.filename.rsplit("/", 1)[-1]
            kind = _name_kind(inner)
            if kind is not None:
                return f"{where} contains {inner}, {kind}"
            if info.is_dir() or not inner.lower().endswith((".zip", ".jar")):
                continue
            if depth >= limits.max_depth:
                return f"{where} nests archives more than {limits.max_depth} deep"
            try:
                nested = archive.read(info)
            except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError):
                return f"{where} contains a damaged archive {inner}"
            pending.append((nested, f"{inner} inside {where}", depth + 1))
    return None


def _dangerous_reason(attachment: Attachment, limits: DangerousAttachmentOptions) -> str | None:
    name = _name(attachment)
    label = name or f"an unnamed {attachment.content_type} attachment"
    kind = _name_kind(name) if name else None
    if kind is not None:
        return f"{name} is {kind}"
    if attachment.content_type in _DANGEROUS_TYPES:
        return f"{label} is declared as {attachment.content_type}, a program or script"
    real = _magic_family(attachment.content)
    if real == "executable":
        return f"{label} is a program (its content is an executable)"
    extensions = _extensions(name)
    declared = _DECLARED_FAMILY.get(extensions[-1]) if extensions else None
    declared = declared or _DECLARED_TYPE_FAMILY.get(attachment.content_type)
    if declared is not None and real is not None and real != declared:
        return f"{label} is declared as {declared} but its content is {real}"
    if real == "zip" and attachment.size > len(attachment.content):
        return f"{label} is too large to check"
    if real == "zip" and declared in (None, "zip"):
        return _zip_problem(attachment.content, label, limits)
    return None


def dangerous_attachment(
    msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext
) -> Iterator[Finding]:
    """Find programs, scripts, macro files, disguised files and archives holding them."""
    if not msg.attachments:
        return
    limits = dealer.options(DangerousAttachmentOptions)
    for attachment in msg.attachments:
        if attachment.content_type == "message/rfc822":
            continue
        reason = _dangerous_reason(attachment, limits)
        if reason is not None:
            yield Finding(
                "dangerous-attachment",
                reason,
                data={"filename": _name(attachment), "content_type": attachment.content_type},
            )
