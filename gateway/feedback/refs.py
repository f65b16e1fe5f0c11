"""Tracking references found in a report, unverified (pure).

This module owns where the parsers look for the ``X-Mailgate-Ref`` header and the VERP
return path that tie a report to the message we sent: the enclosed original's header
fields (``message/rfc822``, ``text/rfc822-headers``), an original quoted inline in a text
notice, and the report's own envelope headers (a bounce is addressed to the VERP return
path). The order is the order of evidence: the header first, then a VERP return path,
then anything else. Whether a reference is genuine is decided later by
``RefCodec.verify``; a token here is only a claim.
"""

from __future__ import annotations

import re

from gateway.feedback.mail import Mail, first_header
from gateway.tracking import RefToken, parse_header, parse_verp

MAX_REFS = 20
_HEADER_IN_TEXT = re.compile(r"^X-Mailgate-Ref:[ \t]*(v1\.[0-9a-z.]{1,60})", re.I | re.M)
_VERP_IN_TEXT = re.compile(
    r"\bb-[0-9a-z]{1,26}\.[0-9]{1,6}-[a-z2-7]{16}@[A-Za-z0-9.-]{1,255}", re.I
)
_MESSAGE_ID_IN_TEXT = re.compile(r"^Message-ID:[ \t]*(<[^>\n]{1,250}>)", re.I | re.M)
_ENVELOPE_HEADERS = ("to", "delivered-to", "x-original-to", "envelope-to", "x-envelope-to")


def find_refs(mail: Mail) -> tuple[RefToken, ...]:
    """Every reference the report carries, best evidence first, without duplicates."""
    header_refs: list[RefToken] = []
    verp_refs: list[RefToken] = []
    for headers in mail.enclosed_headers():
        for key, value in headers:
            name = key.lower()
            if name == "x-mailgate-ref":
                token = parse_header(value)
                if token is not None:
                    header_refs.append(token)
            elif name == "return-path":
                token = parse_verp(value)
                if token is not None:
                    verp_refs.append(token)
    for part in mail.parts:
        if part.content_type.startswith("text/") and not part.in_enclosed:
            text = part.text()
            for match in _HEADER_IN_TEXT.finditer(text):
                token = parse_header(match.group(1))
                if token is not None:
                    header_refs.append(token)
            for match in _VERP_IN_TEXT.finditer(text):
                token = parse_verp(match.group(0))
                if token is not None:
                    verp_refs.append(token)
    for name in _ENVELOPE_HEADERS:
        for value in mail.top.header_all(name):
            for match in _VERP_IN_TEXT.finditer(value):
                token = parse_verp(match.group(0))
                if token is not None:
                    verp_refs.append(token)
    return tuple(dict.fromkeys(header_refs + verp_refs))[:MAX_REFS]


def original_message_id(mail: Mail) -> str | None:
    """The Message-ID of the returned original, or ``None`` when it was not returned."""
    for headers in mail.enclosed_headers():
        value = first_header(headers, "message-id")
        if value:
            return value.strip()
    for part in mail.parts:
        if part.content_type == "text/plain" and not part.in_enclosed:
            text = part.text()
            # Only below the notice: the report's own Message-ID is not in its body.
            match = _MESSAGE_ID_IN_TEXT.search(text)
            if match is not None:
                return match.group(1)
    return None
