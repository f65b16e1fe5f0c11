"""Parse a submitted message once into a frozen ``ParsedMessage`` (pure).

This module owns the read-only view of a message that every check works from. ``parse``
is called exactly once per message. It first runs the byte-level scanner
(``gateway.mail.mimetree``) to enforce the structural limits cheaply and without recursion,
then hands the bytes to the stdlib parser with the lenient ``compat32`` policy and reads
what the checks need, catching every decoding problem as a recorded defect. The scan is
kept on the result (``ParsedMessage.structure``), so that the checks, the repairs and the
long-line rewrite work from the same spans instead of scanning the bytes again.

The only exception ``parse`` raises is ``MessageRejected``; junk input of any other kind
(undeclared 8-bit, unknown charsets, broken base64 or quoted-printable, malformed
headers) gives a ``ParsedMessage`` with ``defects`` saying what was wrong.
"""

from __future__ import annotations

import email.errors
import email.header
import email.message
import email.parser
import email.policy
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

from gateway.errors import GatewayError
from gateway.mail import mimetree

# Reply kinds a rejection maps to: (basic code, RFC 3463 enhanced code).
REJECT_REPLIES: dict[str, tuple[int, str]] = {
    "header-too-large": (552, "5.3.4"),  # RFC 3463 §3.4: message too big for system
    "mime-too-deep": (554, "5.6.0"),  # RFC 3463 §3.7: other or undefined media error
    "too-many-parts": (554, "5.6.0"),
}

_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
_BINARY = email.policy.compat32
_T = TypeVar("_T")


class MessageRejected(GatewayError):
    """The message breaks a structural limit and is refused whole.

    ``reply_kind`` is a key of ``REJECT_REPLIES``; ``detail`` is a sentence for the reply.
    """

    def __init__(self, reply_kind: str, detail: str) -> None:
        self.reply_kind = reply_kind
        self.detail = detail
        super().__init__(f"{reply_kind}: {detail}")

    @property
    def code(self) -> int:
        """Return the basic SMTP reply code for this rejection."""
        return REJECT_REPLIES[self.reply_kind][0]

    @property
    def enhanced(self) -> str:
        """Return the RFC 3463 enhanced status code for this rejection."""
        return REJECT_REPLIES[self.reply_kind][1]


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Structural limits applied before any real parsing."""

    max_header_bytes: int  # per header section (Postfix header_size_limit: 102,400)
    max_mime_depth: int  # nested containers (Postfix mime_nesting_limit: 100)
    max_parts: int = 1000
    max_attachment_bytes: int = 10 * 1024 * 1024  # decoded bytes kept per attachment


@dataclass(frozen=True, slots=True)
class Attachment:
    """A part that is not body text: an attachment, an inline image, a forwarded message.

    ``size`` is the full decoded size; ``content`` holds at most the limit's
    ``max_attachment_bytes`` of it.
    """

    filename: str | None
    content_type: str
    size: int
    disposition: str | None  # "attachment", "inline" or None
    content: bytes


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """The parsed view of one message. ``raw`` is kept byte-for-byte."""

    raw: bytes
    headers: tuple[tuple[str, str], ...]  # top level, in order, unfolded, RFC 2047 decoded
    message_id: str | None  # first Message-ID value as written, angle brackets included
    from_addrs: tuple[str, ...]  # addr-specs from every From: header, domain lower-cased
    from_header_count: int
    subject: str | None
    has_date: bool
    text_parts: tuple[str, ...]
    html_parts: tuple[str, ...]
    attachments: tuple[Attachment, ...]
    size: int
    mime_depth: int
    defects: tuple[str, ...]
    received_count: int
    structure: mimetree.Structure  # the MIME spans of ``raw``, as ``parse`` scanned them
    from_names: tuple[str, ...] = ()  # display names of the From: mailboxes, decoded
    sender_addrs: tuple[str, ...] = ()  # addr-specs of the Sender: headers, domain lower-cased

    def header(self, name: str) -> str | None:
        """Return the first top-level header called ``name`` (any case), or ``None``."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def header_all(self, name: str) -> tuple[str, ...]:
        """Return every top-level header called ``name`` (any case), in order."""
        wanted = name.lower()
        return tuple(value for key, value in self.headers if key.lower() == wanted)


def parse(raw: bytes, limits: ParseLimits) -> ParsedMessage:
    """Parse ``raw`` once; raise ``MessageRejected`` only for a broken structural limit."""
    try:
        structure = mimetree.scan(
            raw,
            max_depth=limits.max_mime_depth,
            max_parts=limits.max_parts,
            max_header_bytes=limits.max_header_bytes,
        )
    except mimetree.StructureLimit as exc:
        raise MessageRejected(exc.kind, exc.detail) from None
    top = structure.entities[0]
    defects: list[str] = []
    raw_fields = _header_fields(raw[top.start : top.header_end])
    headers = tuple((name, _decode_header(value, defects)) for name, value in raw_fields)

    from_values = [value for name, value in raw_fields if name.lower() == "from"]
    from_addrs: list[str] = []
    from_names: list[str] = []
    for value in from_values:
        from_addrs.extend(_addresses(value, defects, from_names))
    sender_addrs: list[str] = []
    for name, value in raw_fields:
        if name.lower() == "sender":
            sender_addrs.extend(_addresses(value, defects, header="sender"))

    def first(name: str) -> str | None:
        for key, value in headers:
            if key.lower() == name:
                return value
        return None

    message_id = first("message-id")
    try:
        # The stdlib parser recurses per nesting level; the scanner bounds the depth it
        # can see, and this guard covers structure it could not (e.g. bare-CR lines).
        tree = email.parser.BytesParser(policy=_BINARY).parsebytes(raw)
        text_parts, html_parts, attachments = _walk(tree, limits, defects)
    except RecursionError:
        raise MessageRejected(
            "mime-too-deep", "the MIME structure is nested too deeply to read"
        ) from None
    return ParsedMessage(
        raw=raw,
        headers=headers,
        message_id=message_id.strip() if message_id is not None else None,
        from_addrs=tuple(from_addrs),
        from_header_count=len(from_values),
        subject=first("subject"),
        has_date=first("date") is not None,
        text_parts=text_parts,
        html_parts=html_parts,
        attachments=attachments,
        size=len(raw),
        mime_depth=structure.max_depth,
        defects=tuple(dict.fromkeys(defects)),
        received_count=sum(1 for name, _ in headers if name.lower() == "received"),
        structure=structure,
        from_names=tuple(from_names),
        sender_addrs=tuple(sender_addrs),
    )


def _header_fields(block: bytes) -> list[tuple[str, str]]:
    """Split a header section into (name, unfolded value) pairs, decoding bytes leniently."""
    fields: list[tuple[bytes, list[bytes]]] = []
    for line in block.splitlines():
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1][1].append(line)
            continue
        name, colon, value = line.partition(b":")
        name = name.rstrip(b" \t")  # RFC 5322 §4.5: obsolete WSP before the colon
        if not colon or not _FIELD_NAME.fullmatch(name):
            continue  # an mbox "From " line or junk; not a header field
        fields.append((name, [value]))
    # RFC 5322 §2.2.3: unfolding removes the CRLF only. RFC 6532 allows UTF-8 here;
    # anything else is undeclared 8-bit and is replaced, not guessed.
    return [
        (name.decode("ascii"), b"".join(parts).strip(b" \t").decode("utf-8", "replace"))
        for name, parts in fields
    ]


def _decode_header(value: str, defects: list[str]) -> str:
    """Decode RFC 2047 encoded words, keeping the raw text when they are broken."""
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (LookupError, ValueError, UnicodeError, email.errors.HeaderParseError):
        defects.append("InvalidEncodedWordDefect")
        return value


@dataclass(frozen=True, slots=True)
class _Mailboxes:
    """What one From: or Sender: value says: addr-specs, display names, defects."""

    addresses: tuple[str, ...]
    names: tuple[str, ...]
    defects: tuple[str, ...]


def _addresses(
    value: str, defects: list[str], names: list[str] | None = None, header: str = "from"
) -> list[str]:
    """Return the addr-specs of one From: (or Sender:) value, read by ``email.headerregistry``.

    ``email.utils.parseaddr`` is not used: it mis-splits crafted values and can report an
    address that is not the real one (CVE-2023-27043). The decoded display names of the
    mailboxes are added to ``names`` when given.
    """
    # Only ordinary values are kept: the cache holds at most 1,024 × 1,000 characters.
    read = _mailboxes(value, header) if len(value) <= 1000 else _read_mailboxes(value, header)
    defects.extend(read.defects)
    if names is not None:
        names.extend(read.names)
    return list(read.addresses)


def _read_mailboxes(value: str, header: str) -> _Mailboxes:
    label = header.capitalize()
    try:
        parsed = email.policy.default.header_factory(header, value)
        found = parsed.addresses
        header_defects = parsed.defects
    except Exception:  # the stdlib header parser has crashed on junk input before
        return _Mailboxes((), (), (f"Unparseable{label}Defect",))
    result: list[str] = []
    names: list[str] = []
    for address in found:
        if address.display_name:
            names.append(address.display_name)
        username, domain = address.username, address.domain
        if not username or not domain:
            continue
        result.append(f"{username}@{domain.lower()}")
    return _Mailboxes(
        tuple(result),
        tuple(names),
        tuple(f"{label}:{type(defect).__name__}" for defect in header_defects),
    )


# A CRM sends every message of a campaign, often every message, from the same From: value,
# and the stdlib's header parser costs more than the rest of ``parse`` put together: the
# reading of a value (a pure function of it) is kept for the next message.
_mailboxes = lru_cache(maxsize=1024)(_read_mailboxes)


def _walk(
    tree: email.message.Message, limits: ParseLimits, defects: list[str]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[Attachment, ...]]:
    """Collect body text, HTML and attachments without recursion."""
    text: list[str] = []
    html: list[str] = []
    attachments: list[Attachment] = []
    pending: list[email.message.Message] = [tree]
    visited: list[email.message.Message] = []
    seen = 0
    while pending:
        part = pending.pop()
        seen += 1
        if seen > limits.max_parts + 1:
            raise MessageRejected(
                "too-many-parts", f"the message has more than {limits.max_parts} MIME parts"
            )
        visited.append(part)
        # get_payload() itself can raise on junk parameters (e.g. a NUL in the charset).
        payload = _safe(part.get_payload, None)
        content_type = _safe(part.get_content_type, "text/plain")
        if part.is_multipart() and isinstance(payload, list):
            if content_type == "message/rfc822":
                attachments.append(_attachment(part, content_type, limits, defects))
                continue
            pending.extend(p for p in reversed(payload) if isinstance(p, email.message.Message))
            continue
        disposition = _safe(part.get_content_disposition, None)
        if content_type in ("text/plain", "text/html") and disposition != "attachment":
            decoded = _text(part, defects)
            (text if content_type == "text/plain" else html).append(decoded)
            continue
        attachments.append(_attachment(part, content_type, limits, defects))
    # Decoding adds defects (e.g. InvalidBase64CharactersDefect), so collect them last.
    for part in visited:
        defects.extend(type(defect).__name__ for defect in part.defects)
    return tuple(text), tuple(html), tuple(attachments)


def _safe(call: Callable[[], _T], fallback: _T) -> _T:
    """Call a stdlib accessor that may choke on malformed parameters; fall back if so."""
    try:
        return call()
    except Exception:
        return fallback


def _clean(text: str) -> str:
    """Turn the surrogate escapes the stdlib leaves for undecodable bytes into U+FFFD."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def _payload(part: email.message.Message, defects: list[str]) -> bytes:
    """Return the decoded body of a leaf; broken base64/QP decode leniently, with a defect."""
    try:
        data = part.get_payload(decode=True)
    except Exception:
        defects.append("UndecodablePayloadDefect")
        return b""
    return data if isinstance(data, bytes) else b""


def _text(part: email.message.Message, defects: list[str]) -> str:
    data = _payload(part, defects)
    charset = _safe(part.get_content_charset, None) or "us-ascii"
    try:
        return data.decode(charset, "replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        # An unknown or non-text charset (``x-bogus``, ``rot13``): read as UTF-8.
        defects.append("UnknownCharsetDefect")
        return data.decode("utf-8", "replace")


def _attachment(
    part: email.message.Message, content_type: str, limits: ParseLimits, defects: list[str]
) -> Attachment:
    if content_type == "message/rfc822":
        data = _safe(part.as_bytes, b"")
    else:
        data = _payload(part, defects)
    filename = _safe(part.get_filename, None)
    return Attachment(
        filename=_clean(filename) if isinstance(filename, str) else None,
        content_type=content_type,
        size=len(data),
        disposition=_safe(part.get_content_disposition, None),
        content=data[: limits.max_attachment_bytes],
    )
