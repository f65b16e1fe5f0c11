"""Check that the text of a message is declared and encoded the way it is written (pure).

What is looked for, each reported once per message:

* header bytes that are not UTF-8 (RFC 6532 allows UTF-8 only). An 8-bit body without an
  8bit/binary transfer encoding (RFC 2045 §2.7, §6.2) is not reported: intake re-encodes
  every 8-bit body as quoted-printable or base64 and declares the charset its bytes are in
  before signing (``mail.rewrite.transport_safe``), and a defect the gateway fixes is no
  finding;
* an unknown charset: the parser read the part as UTF-8 instead (``UnknownCharsetDefect``);
* text that does not decode in its declared charset (replacement characters appear);
* broken base64 (RFC 2045 §6.8) or quoted-printable (``=`` not followed by two hex digits
  or a line break, RFC 2045 §6.7 rule 1).

Most of this comes from the defects ``message.parse`` already recorded. The byte-level
scan for 8-bit and quoted-printable problems runs only when the raw message can have them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from gateway.mail.message import ParsedMessage
from gateway.pipeline.base import CheckContext, Finding
from gateway.policy.model import DealerPolicy

_EIGHT_BIT = re.compile(rb"[\x80-\xff]")
_BAD_QP = re.compile(rb"=(?![0-9A-Fa-f]{2}|\r?\n|[ \t]*\r?$)", re.MULTILINE)
_BASE64_DEFECTS = (
    "InvalidBase64CharactersDefect",
    "InvalidBase64PaddingDefect",
    "InvalidBase64LengthDefect",
)
_END_OF_HEADER = re.compile(rb"\r?\n\r?\n")


def _finding(kind: str, detail: str) -> Finding:
    return Finding("encoding", detail, data={"kind": kind})


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_CHARSET_PARAM = re.compile(rb"charset\s*=", re.IGNORECASE)
_RE_ENCODED = ("", "7bit", "8bit", "binary")  # what transport_safe re-encodes and declares


def _charsets_supplied_by_intake(msg: ParsedMessage) -> bool:
    """True when every text part names no charset and is one intake re-encodes.

    Such a part decodes with replacement characters only because nothing says what its
    bytes are; intake declares the charset they are in (UTF-8, else Windows-1252) before
    signing, so the text reaches the recipient whole and there is nothing to report.
    """
    raw = msg.raw
    texts = [
        e
        for e in msg.structure.entities
        if not e.is_container and e.content_type.startswith("text/")
    ]
    return bool(texts) and all(
        e.cte in _RE_ENCODED and not _CHARSET_PARAM.search(raw[e.start : e.header_end])
        for e in texts
    )


def _byte_problems(msg: ParsedMessage) -> Iterator[tuple[str, str]]:
    """8-bit headers that are not UTF-8, and broken quoted-printable, from the MIME spans."""
    raw = msg.raw
    end = _END_OF_HEADER.search(raw)
    header = raw[: end.start()] if end is not None else raw
    if _EIGHT_BIT.search(header) and not _is_utf8(header):
        yield "8bit-header", "a header contains 8-bit characters that are not UTF-8"
    seen: set[str] = set()
    # The spans parse already found: one scan per message (mail/message.py).
    for entity in msg.structure.entities:
        if entity.is_container:
            continue
        body = raw[entity.body_start : entity.body_end]
        if "qp" not in seen and entity.cte == "quoted-printable" and _BAD_QP.search(body):
            seen.add("qp")
            yield (
                "quoted-printable",
                (f"a {entity.content_type} part has broken quoted-printable encoding"),
            )


def encoding(msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext) -> Iterator[Finding]:
    """Find undeclared 8-bit data, unknown charsets, undecodable text, broken encodings."""
    defects = set(msg.defects)
    if "UnknownCharsetDefect" in defects:
        yield _finding("charset", "a text part declares a character set that does not exist")
    if any(name in defects for name in _BASE64_DEFECTS):
        yield _finding("base64", "a part has broken base64 encoding")
    if "UndecodablePayloadDefect" in defects:
        yield _finding("payload", "a part cannot be decoded at all")
    raw = msg.raw
    # Both tests in C: isascii() finds no byte over 0x7f, and re's IGNORECASE on a bytes
    # pattern folds ASCII only, as lower() does (the regular expressions took 50 us on 10 KB).
    if not raw.isascii() or b"quoted-printable" in raw.lower():
        for kind, detail in _byte_problems(msg):
            yield _finding(kind, detail)
    if (
        "UnknownCharsetDefect" not in defects
        and any("\ufffd" in part for part in (*msg.text_parts, *msg.html_parts))
        and not _charsets_supplied_by_intake(msg)
    ):
        yield _finding("undecodable", "some text does not decode in its declared character set")
