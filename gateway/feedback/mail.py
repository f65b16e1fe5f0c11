"""A bounded, lenient view of a received report for the feedback parsers (pure).

This module owns reading the raw bytes of a complaint or a bounce into ``Mail``: every
MIME entity with its unfolded header fields, its content type and its body with the
transfer encoding undone, in document order, plus which entities are the roots of
enclosed messages (``message/rfc822``, RFC 2046 §5.2.1) or enclosed header blocks
(``text/rfc822-headers``, RFC 6522 §4). Structure comes from
``gateway.mail.mimetree.scan``, which is iterative and bounded; every size here is capped, so
a huge returned original or an endless nesting costs a bounded amount of work.

Nothing here raises on junk: a message the scanner refuses is read as one text entity.
"""

from __future__ import annotations

import binascii
import codecs
import email.header
import re
from dataclasses import dataclass, replace

from gateway.mail import mimetree

MAX_INPUT = 4 * 1024 * 1024  # reports are small; a returned original is not read past this
MAX_DEPTH = 12  # nested containers; a bounce of a bounce of a forward is about 4
MAX_PARTS = 300
MAX_HEADER_BYTES = 256 * 1024
MAX_BODY = 512 * 1024  # decoded bytes kept per entity
MAX_TEXT = 256 * 1024  # characters of decoded text any pattern looks at

# RFC 6522 §4 names text/rfc822-headers; senders also write these variants.
_HEADER_TYPES = frozenset(
    {"text/rfc822-headers", "text/rfc822-header", "message/rfc822-headers", "message/headers"}
)
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
_PARAM = re.compile(
    r""";\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;"]+))"""
)


@dataclass(frozen=True, slots=True)
class Part:
    """One MIME entity: header fields in order (names as written), type, decoded body."""

    headers: tuple[tuple[str, str], ...]
    content_type: str  # lower-cased type/subtype with the RFC 2045 defaults applied
    params: tuple[tuple[str, str], ...]  # Content-Type parameters, names lower-cased
    body: bytes  # transfer encoding undone, at most MAX_BODY bytes
    depth: int
    in_enclosed: bool  # inside an enclosed message (the returned original), not the report
    encloses: bool  # the root entity of an enclosed message

    def header(self, name: str) -> str | None:
        """The first field called ``name`` (any case), or ``None``."""
        return first_header(self.headers, name)

    def header_all(self, name: str) -> tuple[str, ...]:
        """Every field called ``name`` (any case), in order."""
        wanted = name.lower()
        return tuple(value for key, value in self.headers if key.lower() == wanted)

    def param(self, name: str) -> str | None:
        """A Content-Type parameter, or ``None``."""
        for key, value in self.params:
            if key == name:
                return value
        return None

    def text(self) -> str:
        """The body as text in its declared charset (undecodable bytes replaced), capped."""
        return decode_bytes(self.body[: MAX_TEXT * 2], self.param("charset"))[:MAX_TEXT]


@dataclass(frozen=True, slots=True)
class Mail:
    """A received message read into entities; ``parts[0]`` is the message itself."""

    parts: tuple[Part, ...]

    @property
    def top(self) -> Part:
        """The message's own entity (its header fields are the report's headers)."""
        return self.parts[0]

    def of_type(self, *types: str) -> list[Part]:
        """Entities of the report itself (not of an enclosed original) with these types."""
        return [p for p in self.parts if p.content_type in types and not p.in_enclosed]

    def enclosed_mails(self) -> list[Mail]:
        """The messages enclosed at the first level (``message/rfc822``), each as a Mail.

        In each, the enclosed message is ``parts[0]`` and what it encloses in turn is
        marked ``in_enclosed`` as in any report, so a forwarded bounce reads like one
        received directly.
        """
        out: list[Mail] = []
        open_roots: list[int] = []  # depths of the enclosed messages we are inside
        for i, root in enumerate(self.parts):
            while open_roots and root.depth <= open_roots[-1]:
                open_roots.pop()
            if not root.encloses:
                continue
            first_level = not open_roots
            open_roots.append(root.depth)
            if not first_level:
                continue
            parts = [replace(root, in_enclosed=False, encloses=False)]
            nested: list[int] = []
            for part in self.parts[i + 1 :]:
                if part.depth <= root.depth:
                    break
                while nested and part.depth <= nested[-1]:
                    nested.pop()
                parts.append(replace(part, in_enclosed=bool(nested)))
                if part.encloses:
                    nested.append(part.depth)
            out.append(Mail(tuple(parts)))
        return out[:4]

    def enclosed_headers(self) -> list[tuple[tuple[str, str], ...]]:
        """Header blocks of the returned originals: enclosed messages and rfc822-headers."""
        blocks: list[tuple[tuple[str, str], ...]] = []
        for part in self.parts:
            if part.encloses:
                blocks.append(part.headers)
            elif part.content_type in _HEADER_TYPES:
                blocks.append(parse_header_block(part.body))
        return blocks


def first_header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    """The first field called ``name`` (any case) in ``headers``, or ``None``."""
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


# Tried in order for 8-bit text that declares no charset (or a wrong one: "us-ascii"),
# as mailers in China, Japan, Russia and Western Europe send it unencoded: UTF-8 first
# (it rarely decodes by accident), then GB18030 (a superset of GB2312 and GBK), Shift_JIS,
# and windows-1252, which decodes anything.
_GUESSES = ("utf-8", "gb18030", "shift_jis", "windows-1252")


def _guess(data: bytes) -> str:
    for name in _GUESSES[:-1]:
        try:
            text = data.decode(name)
        except UnicodeDecodeError:
            continue
        # A decoding that yields C1 controls or private-use characters is a wrong guess.
        if not any("\x80" <= c <= "\x9f" or "\ue000" <= c <= "\uf8ff" for c in text):
            return text
    return data.decode(_GUESSES[-1], errors="replace")


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode ``data`` in ``charset``, guessing for undeclared 8-bit text, never raising."""
    name = (charset or "").strip().strip('"').lower()
    if name in ("", "us-ascii", "ascii", "unknown-8bit", "x-unknown", "8bit", "utf-8", "utf8"):
        if data.isascii():
            return data.decode("ascii")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return _guess(data)
    try:
        codecs.lookup(name)
    except (LookupError, ValueError):
        return _guess(data) if not data.isascii() else data.decode("ascii")
    try:
        return data.decode(name, errors="replace")
    except Exception:  # some codecs raise odd errors on junk even with "replace"
        return data.decode("utf-8", errors="replace")


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words in a header value, leaving it as is on failure."""
    if "=?" not in value:
        return value
    try:
        chunks = email.header.decode_header(value)
    except Exception:  # email.header raises HeaderParseError and worse on junk
        return value
    out: list[str] = []
    for chunk, charset in chunks:
        out.append(chunk if isinstance(chunk, str) else decode_bytes(chunk, charset))
    return "".join(out)


def parse_header_block(block: bytes) -> tuple[tuple[str, str], ...]:
    """Read header fields from ``block`` (up to the first empty line), unfolded.

    RFC 5322 §2.2.3: a line starting with white space continues the previous field.
    Lines that are neither are skipped, as lenient readers do, rather than ending the block.
    """
    # Unencoded 8-bit header fields (RFC 6532 UTF-8, or a local charset such as GB2312 in
    # a Subject) are read as the body would be.
    text = decode_bytes(block[:MAX_HEADER_BYTES], None)
    fields: list[list[str]] = []
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not line.strip():
            if fields:
                break
            continue
        if line[:1] in (" ", "\t"):
            if fields:
                fields[-1][1] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if colon and _HEADER_NAME.fullmatch(name.rstrip()):
            fields.append([name.rstrip(), value.strip()])
    return tuple((name, value) for name, value in fields)


def _params(value: str) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for match in _PARAM.finditer(value):
        quoted, bare = match.group(2), match.group(3)
        text = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        out.append((match.group(1).lower(), text))
    return tuple(out)


def _undo_transfer_encoding(body: bytes, cte: str) -> bytes:
    # RFC 2045 §6: only base64 and quoted-printable change the bytes.
    body = body[: MAX_BODY * 2]
    try:
        if cte == "base64":
            return binascii.a2b_base64(body)[:MAX_BODY]
        if cte == "quoted-printable":
            return binascii.a2b_qp(body)[:MAX_BODY]
    except (binascii.Error, ValueError):
        pass
    return body[:MAX_BODY]


def _has_children(entities: tuple[mimetree.Entity, ...], parent: mimetree.Entity) -> bool:
    return any(
        e.depth == parent.depth + 1 and parent.body_start <= e.start < max(parent.body_end, 1)
        for e in entities
    )


def normalise(raw: bytes) -> bytes:
    """Cap the input and make every line end in LF (CRLF and bare CR alike)."""
    data = raw[:MAX_INPUT]
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    # An mbox "From " separator before the headers is not a header field.
    if data.startswith(b"From "):
        data = data.partition(b"\n")[2]
    return data


def read(raw: bytes) -> Mail:
    """Read ``raw`` into a ``Mail``; junk gives a mail with whatever could be read."""
    data = normalise(raw)
    try:
        structure = mimetree.scan(
            data, max_depth=MAX_DEPTH, max_parts=MAX_PARTS, max_header_bytes=MAX_HEADER_BYTES
        )
    except mimetree.StructureLimit:
        header_end = data.find(b"\n\n")
        split = len(data) if header_end < 0 else header_end + 1
        headers = parse_header_block(data[:split])
        body = data[split + 1 :][:MAX_BODY]
        return Mail((Part(headers, "text/plain", (), body, 0, False, False),))

    roots = {
        (entity.body_start, entity.depth + 1)
        for entity in structure.entities
        if entity.content_type == "message/rfc822" and entity.boundary is None
    }
    parts: list[Part] = []
    # The body spans of enclosed messages, to tell which entities lie inside one.
    enclosed_spans: list[tuple[int, int]] = []
    for entity in structure.entities:
        is_root = (entity.start, entity.depth) in roots and entity.depth > 0
        if is_root:
            enclosed_spans.append((entity.start, entity.body_end))
        inside = any(lo <= entity.start < hi for lo, hi in enclosed_spans)
        headers = parse_header_block(data[entity.start : entity.header_end])
        ctype_value = first_header(headers, "content-type") or ""
        if entity.is_container and _has_children(structure.entities, entity):
            body = b""
        else:
            # A leaf, or a multipart none of whose delimiters appear: its body is all text.
            body = _undo_transfer_encoding(data[entity.body_start : entity.body_end], entity.cte)
        parts.append(
            Part(
                headers=headers,
                content_type=entity.content_type,
                params=_params(ctype_value),
                body=body,
                depth=entity.depth,
                in_enclosed=inside,
                encloses=is_root,
            )
        )
    if not parts:  # the scanner always yields the message itself; keep the invariant anyway
        parts.append(Part((), "text/plain", (), data[:MAX_BODY], 0, False, False))
    return Mail(tuple(parts))
