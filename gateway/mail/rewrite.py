r"""Byte-level message rewrites that change one thing and keep every other byte (pure).

This module owns every change the gateway makes to submitted bytes before signing:
line-ending normalisation, header removal (Bcc), header insertion (tracking, return
path) and making every line fit the SMTP limit. Each function returns new bytes; nothing
is reserialised through the ``email`` generator, so DKIM signatures computed afterwards
cover exactly what was submitted plus the documented edits.

Line endings
    ``normalize_line_endings`` turns every bare CR and every bare LF into CRLF and leaves
    CRLF pairs alone, so ``"\r\r\n"`` becomes ``"\r\n\r\n"`` (the first CR is bare).
    Postfix's ``cleanup_replace_stray_cr_lf`` replaces a stray CR with a space instead;
    a line break keeps the layout of CR-only (classic Mac) text. Either way no bare CR
    or LF reaches the next hop, which closes SMTP smuggling (RFC 5321 §2.3.8, §4.1.1.4);
    a resulting line holding only ``.`` is dot-stuffed by the SMTP client on the way out.

Long lines
    RFC 5321 §4.5.3.1.6 limits a line to 1000 octets including CRLF. ``fold_long_lines``
    folds over-long header lines at whitespace (RFC 5322 §2.2.3; unfolding restores the
    value exactly). An over-long body line in a 7bit/8bit/binary (or unlabelled) leaf part
    makes that leaf quoted-printable (RFC 2045 §6.7), an over-long base64 body is
    re-wrapped (RFC 2045 §6.8 ignores line breaks) and an over-long quoted-printable line
    gets soft line breaks. Decoded content never changes and nothing is truncated. What
    cannot be fixed that way (a header word longer than the limit, a long preamble or
    boundary line, an unknown encoding) raises ``LineTooLong`` so the caller refuses.
"""

from __future__ import annotations

import re
from collections.abc import Sequence, Set

from gateway.mail import mimetree
from gateway.mail.message import MessageRejected, ParseLimits

MAX_LINE = 998  # RFC 5321 §4.5.3.1.6: 1000 octets including the CRLF
FOLD_AT = 78  # RFC 5322 §2.1.1: lines SHOULD be no more than 78 characters
QP_LINE = 76  # RFC 2045 §6.7 rule 5: encoded lines no more than 76 characters

DEFAULT_LIMITS = ParseLimits(max_header_bytes=102_400, max_mime_depth=100)

# A whole line (CRLF-delimited) of a single "." with at least one NUL around it, e.g.
# b"\x00." or b".\x00" (a plain "." line is left to dot-stuffing).
_NUL_DOT_LINE = re.compile(rb"(?:^|(?<=\r\n))(?:\x00+\.\x00*|\.\x00+)(?=\r\n|\Z)")
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
_CHUNK = re.compile(rb"[ \t]*[^ \t]+|[ \t]+$")  # a word with the whitespace before it


class LineTooLong(ValueError):
    """A line over the limit that cannot be folded or re-encoded without changing meaning.

    ``where`` says which line, in words for a reply or log line.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(f"line longer than {MAX_LINE} octets that cannot be folded: {where}")


# -- line endings -------------------------------------------------------------------------


def normalize_line_endings(raw: bytes) -> tuple[bytes, int]:
    """Make every line end CRLF; return the new bytes and how many line ends were fixed."""
    pairs = raw.count(b"\r\n")
    fixed = raw.count(b"\r") + raw.count(b"\n") - 2 * pairs
    if not fixed:
        return raw, 0
    # Each CRLF pair, then each bare CR, becomes one LF, and every LF then one CRLF: the
    # same result as replacing each bare CR or LF by CRLF, in three C-speed passes where
    # the look-around regex took ~0.5 ms per 20 KB.
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n"), fixed


def neutralize_nul_dot_lines(raw: bytes) -> tuple[bytes, int]:
    """Turn each line made only of NULs and one ``.`` into a plain ``.``; count them.

    ``<CRLF> NUL "." <CRLF>`` is one of the SMTP-smuggling end-of-data sequences: some
    receivers ignore NUL and read the line as a lone ``.``. It has no bare CR or LF, and
    RFC 5321 §4.5.2 stuffs only a line whose *first* character is ``.``, so the SMTP
    client relays it unchanged and such a next hop ends DATA there and runs the rest as a
    second transaction. As a plain ``.`` the line is dot-stuffed on the way out like any
    other. NULs anywhere else are kept (reliability D14: never altered or truncated).
    """
    if b"\x00" not in raw:  # the common case, at C speed
        return raw, 0
    return _NUL_DOT_LINE.subn(b".", raw)


def has_bare_line_endings(raw: bytes) -> bool:
    """Tell whether ``raw`` contains a CR not followed by LF or an LF not preceded by CR."""
    # Every CR and every LF belongs to a CRLF pair exactly when the three counts agree;
    # counting is C-speed, where the look-around regex costs ~0.5 ms per 10 KB.
    pairs = raw.count(b"\r\n")
    return raw.count(b"\r") != pairs or raw.count(b"\n") != pairs


# -- header section -------------------------------------------------------------------


def _split(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """Return (header section, separator line, body); they concatenate back to ``raw``."""
    if raw.startswith((b"\r\n", b"\n")):
        sep = b"\r\n" if raw.startswith(b"\r\n") else b"\n"
        return b"", sep, raw[len(sep) :]
    match = re.search(rb"\n(\r?\n)", raw)
    if match is None:
        return raw, b"", b""
    return raw[: match.start() + 1], match.group(1), raw[match.end() :]


def split_header_body(raw: bytes) -> tuple[bytes, bytes]:
    """Split at the first empty line (RFC 5322 §2.1).

    The header bytes keep each field's line ending; the empty line belongs to neither
    part. Without an empty line the whole message is header and the body is empty.
    """
    header, _, body = _split(raw)
    return header, body


def _fields(header: bytes) -> list[list[bytes]]:
    """Group header lines (with their line endings) into fields: a line and its folds."""
    fields: list[list[bytes]] = []
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    return fields


def _field_name(first_line: bytes) -> bytes:
    name, colon, _ = first_line.partition(b":")
    # RFC 5322 §4.5: obsolete syntax allows whitespace before the colon ("Bcc :").
    return name.rstrip(b" \t").lower() if colon else b""


def remove_headers(raw: bytes, names: Set[str]) -> bytes:
    """Remove every header field named in ``names`` (any case), continuation lines included.

    Used to strip ``Bcc:`` as a submission agent must (RFC 6409 §8.1, RFC 5322 §3.6.3).
    The body and all other fields are untouched.
    """
    wanted = {name.lower().encode("ascii") for name in names}
    header, sep, body = _split(raw)
    kept = [b"".join(field) for field in _fields(header) if _field_name(field[0]) not in wanted]
    return b"".join(kept) + sep + body


def _fold(line: bytes, soft: int, hard: int) -> list[bytes]:
    """Break one physical header line (no line ending) before whitespace.

    Greedy: a break goes before a word when the line would pass ``soft`` characters.
    Returns the pieces; every piece after the first starts with whitespace, so joining
    them with CRLF is a fold that unfolding undoes exactly (RFC 5322 §2.2.3).
    """
    chunks = _CHUNK.findall(line)
    pieces: list[bytes] = []
    current = b""
    for chunk in chunks:
        if current and len(current) + len(chunk) > soft and chunk.strip(b" \t"):
            pieces.append(current)
            current = chunk
        else:
            current += chunk
    pieces.append(current)
    if any(len(piece) > hard for piece in pieces):
        raise LineTooLong(f"header {line.partition(b':')[0][:40].decode('ascii', 'replace')}")
    return pieces


def prepend_headers(raw: bytes, headers: Sequence[tuple[str, str]]) -> bytes:
    """Put ``headers`` in order above the existing header section.

    Refuses (``ValueError``) a name that is not an RFC 5322 §3.6.8 field name and any name
    or value containing CR, LF or NUL: such values are how header injection happens
    (CVE-2024-6923). Values are UTF-8 (RFC 6532); lines over 78 characters are folded
    at whitespace (RFC 5322 §2.2.3).
    """
    lines: list[bytes] = []
    for name, value in headers:
        if any(ch in name or ch in value for ch in ("\r", "\n", "\0")):
            raise ValueError(f"header {name!r} contains CR, LF or NUL")
        name_bytes = name.encode("utf-8")
        if not _FIELD_NAME.fullmatch(name_bytes):
            raise ValueError(f"{name!r} is not a valid header field name")
        line = name_bytes + b": " + value.encode("utf-8")
        lines.append(b"\r\n".join(_fold(line, FOLD_AT, MAX_LINE)) + b"\r\n")
    return b"".join(lines) + raw


# -- long lines -------------------------------------------------------------------------


def _long_line(data: bytes, limit: int) -> bool:
    # splitlines() runs in C; the equivalent regex restarts at every byte (~2 ms per 10 KB).
    if len(data) <= limit:
        return False
    return any(len(line) > limit for line in data.splitlines())


def _fold_header_section(block: bytes, limit: int) -> bytes:
    out: list[bytes] = []
    for line in block.splitlines(keepends=True):
        content = line.rstrip(b"\r\n")
        if len(content) <= limit:
            out.append(line)
            continue
        ending = line[len(content) :] or b"\r\n"
        out.append(b"\r\n".join(_fold(content, FOLD_AT, limit)) + ending)
    return b"".join(out)


def _qp_encode(data: bytes) -> bytes:
    """Quoted-printable per RFC 2045 §6.7, CRLF as the only hard line break.

    Any other CR or LF byte is encoded (=0D, =0A), so decoding gives back ``data``
    exactly. Lines are at most 76 characters, soft breaks included.
    """
    out: list[bytes] = []
    lines = data.split(b"\r\n")
    for index, line in enumerate(lines):
        encoded: list[bytes] = []
        for position, byte in enumerate(line):
            last = position == len(line) - 1
            if (33 <= byte <= 126 and byte != 61) or (byte in (9, 32) and not last):
                encoded.append(bytes((byte,)))
            else:
                # Rule 3: whitespace at the end of a line is encoded so it survives.
                encoded.append(b"=%02X" % byte)
        current = b""
        for token in encoded:
            if len(current) + len(token) > QP_LINE - 1:  # room for the soft break "="
                out.append(current + b"=\r\n")
                current = b""
            current += token
        out.append(current)
        if index < len(lines) - 1:
            out.append(b"\r\n")
    return b"".join(out)


def _soft_break_qp(body: bytes, limit: int) -> bytes:
    """Add soft line breaks to over-long quoted-printable lines; the decoding is unchanged."""
    out: list[bytes] = []
    for line in body.splitlines(keepends=True):
        content = line.rstrip(b"\r\n")
        ending = line[len(content) :]
        if len(content) <= limit:
            out.append(line)
            continue
        position = 0
        while len(content) - position > QP_LINE:
            cut = position + QP_LINE - 1
            # Never split an "=XX" escape: back up to before it.
            escape = content.rfind(b"=", max(position, cut - 2), cut)
            if escape >= 0:
                cut = escape
            out.append(content[position:cut] + b"=\r\n")
            position = cut
        out.append(content[position:] + ending)
    return b"".join(out)


def _wrap_base64(body: bytes) -> bytes:
    """Re-wrap base64 at 76 characters; decoders ignore line breaks (RFC 2045 §6.8)."""
    text = re.sub(rb"[\r\n]", b"", body)
    return b"\r\n".join(text[i : i + QP_LINE] for i in range(0, len(text), QP_LINE))


def _set_cte(block: bytes, value: bytes, top_level: bool) -> bytes:
    fields = [
        b"".join(field)
        for field in _fields(block)
        if _field_name(field[0]) != b"content-transfer-encoding"
    ]
    if fields and not fields[-1].endswith(b"\n"):
        fields[-1] += b"\r\n"
    added = b"Content-Transfer-Encoding: " + value + b"\r\n"
    names = {_field_name(field) for field in fields}
    if top_level and b"mime-version" not in names:
        # RFC 2045 §4: a transfer encoding only means something in a MIME message.
        added = b"MIME-Version: 1.0\r\n" + added
    return b"".join(fields) + added


def fold_long_lines(
    raw: bytes,
    limit: int = MAX_LINE,
    *,
    limits: ParseLimits = DEFAULT_LIMITS,
    structure: mimetree.Structure | None = None,
) -> tuple[bytes, bool]:
    """Make every line at most ``limit`` octets (excluding CRLF); return (bytes, changed).

    ``structure`` is the scan of exactly ``raw`` when the caller has one
    (``ParsedMessage.structure``); without it ``raw`` is scanned here, under ``limits``.
    Raises ``LineTooLong`` when a line cannot be fixed without changing meaning and
    ``MessageRejected`` when the structure exceeds ``limits`` (the same limits ``parse``
    applied, so this only happens when it is called on an unparsed message).
    """
    if not _long_line(raw, limit):
        return raw, False
    if structure is None:
        try:
            structure = mimetree.scan(
                raw,
                max_depth=limits.max_mime_depth,
                max_parts=limits.max_parts,
                max_header_bytes=limits.max_header_bytes,
            )
        except mimetree.StructureLimit as exc:
            raise MessageRejected(exc.kind, exc.detail) from None

    edits: list[tuple[int, int, bytes]] = []  # (start, end, replacement), non-overlapping
    for number, entity in enumerate(structure.entities):
        block = raw[entity.start : entity.header_end]
        new_block = _fold_header_section(block, limit) if _long_line(block, limit) else block
        body = raw[entity.body_start : entity.body_end]
        new_body = body
        if not entity.is_container and _long_line(body, limit):
            where = f"part {number} ({entity.content_type})"
            if entity.cte in ("", "7bit", "8bit", "binary"):
                new_body = _qp_encode(body)
                new_block = _set_cte(new_block, b"quoted-printable", entity.depth == 0)
            elif entity.cte == "base64":
                new_body = _wrap_base64(body)
            elif entity.cte == "quoted-printable":
                new_body = _soft_break_qp(body, limit)
            else:
                raise LineTooLong(f"{where} with transfer encoding {entity.cte}")
        if new_body is body and new_block is block:
            continue
        if entity.has_separator or new_body is body:
            # Only leaves get a new body, so these spans never overlap a child's.
            edits.append((entity.start, entity.header_end, new_block))
            if new_body is not body:
                edits.append((entity.body_start, entity.body_end, new_body))
        else:
            # RFC 5322 §2.1: an empty line must separate the new header field from the body.
            edits.append((entity.start, entity.body_end, new_block + b"\r\n" + new_body))

    out: list[bytes] = []
    position = 0
    for start, end, replacement in sorted(edits):
        out.append(raw[position:start])
        out.append(replacement)
        position = end
    out.append(raw[position:])
    result = b"".join(out)
    if _long_line(result, limit):
        raise LineTooLong("a preamble, epilogue or boundary line")
    return result, result != raw
