"""The safe repairs: changes that restore what the sender meant (pure).

``apply(raw, findings, structure)`` runs the repair each finding names (``Finding.repair``,
set by the check that saw it applies) and returns the new bytes, or ``None`` when the
message turns out not to have the shape the repair needs; intake then holds it instead.
``structure`` is the MIME scan parse made of ``raw`` (``ParsedMessage.structure``); the
first repair works from it, and only a second repair, on bytes the first one changed,
scans again.

``html-attachment-as-body``
    The HTML went out as a stray attachment (``unknown1.txt``, ``unknown1.html``,
    ``ATT00001.htm``, or unnamed) and the message has no HTML body: the message is rebuilt
    as ``multipart/alternative`` with a text part and the HTML as the body. The text part
    is the existing plain-text body when that is the same message; an empty or one-line
    body ("Please see the attached.") is a placeholder, not an alternative, and the text
    part is made from the HTML instead. Other real attachments are kept byte for byte in a
    ``multipart/mixed`` around it; inline images (those with a Content-ID) go into a
    ``multipart/related`` with the HTML so that ``cid:`` references still resolve.

    Only that shape is repaired (``attachments.html_body_obstacle`` decides, and the
    repair checks again on the bytes): a document a person named (``invoice.html``), a
    text body of its own, or HTML with active content (script, event handler, form,
    frame) gives ``None``, and the message is held instead. Active content is never
    promoted into a body.

``drop-winmail-dat``
    ``winmail.dat`` (TNEF) is cut out of its multipart, together with its delimiter line;
    every other byte stays as it was.

Top-level header fields other than the MIME ones are kept as submitted, so the repair
happens before the gateway's own header changes and before signing.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import quopri
import secrets
from collections.abc import Callable, Sequence
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart

from gateway.mail import mimetree, rewrite
from gateway.mail.message import Attachment
from gateway.pipeline.attachments import (
    REPAIR_DROP_TNEF,
    REPAIR_HTML_BODY,
    active_content,
    is_html_stray,
    is_stray_named,
    is_tnef,
    text_body_shape,
)
from gateway.pipeline.base import Finding
from gateway.pipeline.html import to_text

_POLICY = email.policy.compat32.clone(linesep="\r\n")
_MIME_HEADERS = {"content-type", "content-transfer-encoding", "content-disposition", "mime-version"}
_LIMITS = {"max_depth": 100, "max_parts": 1000, "max_header_bytes": 1024 * 1024}


class _Leaf:
    """One leaf entity: its exact bytes and what the repairs need to know about it."""

    def __init__(self, raw: bytes, entity: mimetree.Entity) -> None:
        self.entity = entity
        self.bytes = raw[entity.start : entity.body_end]
        self.part = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(self.bytes)
        data = self.part.get_payload(decode=True)
        self.payload = data if isinstance(data, bytes) else b""
        try:
            filename = self.part.get_filename()
        except Exception:
            filename = None
        self.attachment = Attachment(
            filename=filename if isinstance(filename, str) else None,
            content_type=entity.content_type,
            size=len(self.payload),
            disposition=self.part.get_content_disposition(),
            content=self.payload,
        )

    def text(self) -> str:
        charset = self.part.get_content_charset() or "utf-8"
        try:
            return self.payload.decode(charset, "replace")
        except LookupError:
            return self.payload.decode("utf-8", "replace")

    @property
    def is_body_text(self) -> bool:
        return (
            self.entity.content_type == "text/plain"
            and self.attachment.disposition != "attachment"
            and not self.attachment.filename
        )


def apply(
    raw: bytes, findings: Sequence[Finding], structure: mimetree.Structure | None = None
) -> bytes | None:
    """Run every repair the findings name, in order; ``None`` if one cannot be applied.

    ``structure`` must be the scan of exactly ``raw`` (or ``None``: scanned here).
    """
    names = list(dict.fromkeys(f.repair for f in findings if f.repair is not None))
    for name in names:
        try:
            if structure is None:
                structure = mimetree.scan(raw, **_LIMITS)
            repaired = _REPAIRS[name](raw, structure)
        except (mimetree.StructureLimit, ValueError, LookupError, UnicodeError):
            return None
        if repaired is None:
            return None
        raw, structure = repaired, None  # new bytes: the old spans no longer apply
    return raw


def _leaves(raw: bytes, structure: mimetree.Structure) -> list[_Leaf]:
    return [_Leaf(raw, e) for e in structure.entities if not e.is_container]


def _top_headers(raw: bytes, structure: mimetree.Structure) -> bytes:
    """The top-level header section without its MIME fields, each line CRLF-terminated."""
    top = structure.entities[0]
    block = rewrite.remove_headers(raw[top.start : top.header_end] + b"\r\n", _MIME_HEADERS)
    block = block.removesuffix(b"\r\n")
    if block and not block.endswith(b"\n"):
        block += b"\r\n"
    return block


def _text_part(text: str, subtype: str) -> MIMENonMultipart:
    """A UTF-8 text part, quoted-printable (readable, and 7bit-safe for any relay)."""
    part = MIMENonMultipart("text", subtype, charset="utf-8")
    del part["MIME-Version"]
    part["Content-Transfer-Encoding"] = "quoted-printable"
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    part.set_payload(quopri.encodestring(normalised.encode("utf-8")).decode("ascii"))
    return part


def _boundary(data: bytes) -> str:
    while True:
        candidate = f"=_mailgate_{secrets.token_hex(12)}"
        if candidate.encode() not in data:
            return candidate


def html_attachment_as_body(raw: bytes, structure: mimetree.Structure) -> bytes | None:
    """Rebuild a message whose only HTML is a stray attachment as multipart/alternative."""
    leaves = _leaves(raw, structure)
    strays = [leaf for leaf in leaves if is_html_stray(leaf.attachment)]
    if len(strays) != 1 or any(
        leaf.entity.content_type == "text/html" and leaf.attachment.disposition != "attachment"
        for leaf in leaves
        if leaf is not strays[0]
    ):
        return None
    stray = strays[0]
    html = stray.text()
    if not is_stray_named(stray.attachment) or active_content(html) is not None:
        return None
    texts = [leaf for leaf in leaves if leaf is not stray and leaf.is_body_text]
    shape = text_body_shape([leaf.text() for leaf in texts], html)
    if shape is None:
        return None  # a text body of its own: the HTML is not known to be the message
    plain = "\n".join(leaf.text() for leaf in texts).strip() if shape == "same" else ""
    kept = [leaf for leaf in leaves if leaf is not stray and leaf not in texts]
    inline = [leaf for leaf in kept if leaf.part.get("Content-ID") is not None]
    others = [leaf for leaf in kept if leaf not in inline]

    html_part: email.message.Message = _text_part(html, "html")
    if inline:
        related = MIMEMultipart("related")
        related.attach(html_part)
        for leaf in inline:
            related.attach(leaf.part)
        html_part = related
    body = MIMEMultipart("alternative")
    body.attach(_text_part(plain + "\n" if plain else to_text(html), "plain"))
    body.attach(html_part)
    outer: email.message.Message = body
    if others:
        outer = MIMEMultipart("mixed")
        outer.attach(body)
        for leaf in others:
            outer.attach(leaf.part)
    for part in outer.walk():
        if part is not outer:
            del part["MIME-Version"]  # RFC 2045 §4: needed at the top level only
        if part.is_multipart():
            part.set_boundary(_boundary(raw))
    generated = outer.as_bytes(policy=_POLICY)
    return _top_headers(raw, structure) + generated


def drop_winmail_dat(raw: bytes, structure: mimetree.Structure) -> bytes | None:
    """Cut every TNEF part out of its multipart; ``None`` if one is the whole message."""
    entities = structure.entities
    cuts: list[tuple[int, int]] = []
    for index, entity in enumerate(entities):
        if entity.is_container or not is_tnef(_Leaf(raw, entity).attachment):
            continue
        parent = next(
            (
                p
                for p in reversed(entities[:index])
                if p.depth == entity.depth - 1 and p.boundary is not None
            ),
            None,
        )
        if parent is None:
            return None
        assert parent.boundary is not None  # chosen above for having one
        delimiter = raw.rfind(b"--" + parent.boundary, parent.body_start, entity.start)
        if delimiter < 0:
            return None
        # RFC 2046 §5.1.1: the line break before a delimiter belongs to the delimiter.
        if raw[delimiter - 2 : delimiter] == b"\r\n" and delimiter - 2 >= parent.body_start:
            cuts.append((delimiter - 2, entity.body_end))
        elif raw[delimiter - 1 : delimiter] == b"\n" and delimiter - 1 >= parent.body_start:
            cuts.append((delimiter - 1, entity.body_end))
        else:
            # The first delimiter, at the very start of the body: take the break after the
            # part instead, so the next delimiter starts the body.
            end = entity.body_end
            end += 2 if raw[end : end + 2] == b"\r\n" else 1 if raw[end : end + 1] == b"\n" else 0
            cuts.append((delimiter, end))
    if not cuts:
        return None
    out: list[bytes] = []
    position = 0
    for start, end in sorted(cuts):
        out.append(raw[position:start])
        position = end
    out.append(raw[position:])
    return b"".join(out)


_REPAIRS: dict[str, Callable[[bytes, mimetree.Structure], bytes | None]] = {
    REPAIR_HTML_BODY: html_attachment_as_body,
    REPAIR_DROP_TNEF: drop_winmail_dat,
}
