"""Delivery status notifications for permanent failures (pure: bytes in, bytes out).

Owns the bounce a dealer receives when a message cannot be delivered: an RFC 3464
``multipart/report; report-type=delivery-status`` with three parts (RFC 3462 §2):

1. a plain-language explanation for the dealer's staff;
2. ``message/delivery-status``: the machine-readable per-message and per-recipient fields;
3. ``text/rfc822-headers``: the original headers only, never the body, so a bounce does
   not resend customer content (RFC 3462 §2 allows headers-only returns).

The result is sent with the null reverse-path (RFC 3464 §2, RFC 5321 §4.5.5) by the
worker; here it is marked ``Auto-Submitted: auto-replied`` (RFC 3834 §5) so that
auto-responders do not answer it. Output uses CRLF and no line exceeds 998 octets
(RFC 5322 §2.1.1).
"""

from __future__ import annotations

import binascii
import hashlib
import re
from datetime import datetime
from email.utils import format_datetime

from gateway.types import QueuedMessage, RcptOutcome

CRLF = "\r\n"
# RFC 5322 §2.1.1: 998 octets per line; fields here are capped well below it.
MAX_FIELD = 900
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def _ascii(text: str, limit: int = MAX_FIELD) -> str:
    """One printable ASCII line: DSN fields are 7-bit (RFC 3464 §2.1.2)."""
    flat = _CONTROL.sub(" ", text).encode("ascii", "replace").decode("ascii")
    return " ".join(flat.split())[:limit]


def _original_headers(data: bytes) -> bytes:
    """Return the header block of the original message, without the separating blank line."""
    m = _HEADER_END.search(data)
    block = data[: m.start()] if m else data
    return block.replace(b"\r\n", b"\n")


def _headers_part(data: bytes) -> tuple[str, str]:
    """Return the transfer encoding and body of the ``text/rfc822-headers`` part.

    Headers that are 7-bit with short lines go as they are; anything else (8-bit bytes,
    over-long lines) is quoted-printable so the DSN stays 7-bit with lines <= 76 octets.
    """
    block = _original_headers(data)
    lines = block.split(b"\n")
    if block.isascii() and all(len(line) <= MAX_FIELD for line in lines) and b"\r" not in block:
        return "7bit", CRLF.join(line.decode("ascii") for line in lines)
    encoded = binascii.b2a_qp(block, istext=True, header=False).decode("ascii")
    return "quoted-printable", CRLF.join(encoded.split("\n"))


def _human_text(
    original: QueuedMessage, outcome: RcptOutcome, reporting_mta: str, held_since: datetime | None
) -> str:
    rcpt = _ascii(original.rcpt, 300)
    diagnostic = _ascii(outcome.summary(), 600)
    if held_since is not None:
        hint = (
            f"The gateway held it for review on {held_since:%Y-%m-%d %H:%M} UTC and nobody "
            "released it before the hold period ended, so it was deleted without being sent."
        )
        steps = [
            "  - Fix what the reason below names (your gateway's status page explains each).",
            "  - Then send the message again from your CRM.",
            "  - If the message was fine, ask your gateway administrator to review holds sooner.",
        ]
    else:
        hint = (
            "The recipient's mail server said the address does not exist or cannot receive mail."
            if outcome.enhanced.startswith("5.1.")
            else "The message was refused permanently, so it will not be retried."
        )
        steps = [
            "  - Check the address for typing mistakes and update it in your CRM.",
            "  - If the address is right, contact the recipient another way (phone, text).",
            "  - If many messages bounce like this, contact your gateway administrator.",
        ]
    return CRLF.join(
        [
            f"This is the mail gateway at {_ascii(reporting_mta, 200)}.",
            "",
            "Your message could not be delivered to this recipient:",
            "",
            f"    {rcpt}",
            "",
            hint,
            "",
            "The reason given was:",
            "",
            f"    {diagnostic}",
            "",
            "What you can do:",
            *steps,
            "",
            "The headers of your original message are attached below; the body is not.",
            "",
        ]
    )


def _status_part(
    original: QueuedMessage,
    outcome: RcptOutcome,
    reporting_mta: str,
    remote_mta: str,
    now: datetime,
) -> str:
    status = outcome.enhanced if outcome.enhanced.startswith("5.") else "5.0.0"
    # RFC 3464 §2.2: per-message fields, a blank line, then one block per recipient.
    per_message = [
        f"Reporting-MTA: dns; {_ascii(reporting_mta, 255)}",
        f"X-Mailgate-Queue-ID: {_ascii(original.id, 255)}",
        f"Arrival-Date: {format_datetime(original.received_at)}",
    ]
    per_recipient = [
        f"Final-Recipient: rfc822; {_ascii(original.rcpt, 300)}",
        "Action: failed",
        f"Status: {status}",
    ]
    if remote_mta:
        per_recipient.append(f"Remote-MTA: dns; {_ascii(remote_mta, 255)}")
    per_recipient.append(f"Diagnostic-Code: smtp; {_ascii(outcome.summary())}")
    per_recipient.append(f"Last-Attempt-Date: {format_datetime(now)}")
    return CRLF.join([*per_message, "", *per_recipient, ""])


def _boundary(message_id: str, parts: list[str]) -> str:
    seed = hashlib.sha256(message_id.encode("utf-8", "replace")).hexdigest()[:24]
    boundary = f"=_mailgate_dsn_{seed}"
    # "=_" cannot start a quoted-printable line and the seed is unguessable by a sender,
    # but check anyway: RFC 2046 §5.1.1 requires the boundary to appear in no part.
    while any(boundary in part for part in parts):
        boundary += "_"
    return boundary


def build_dsn(
    *,
    original: QueuedMessage,
    outcome: RcptOutcome,
    reporting_mta: str,
    from_addr: str,
    now: datetime,
    message_id: str,
    remote_mta: str = "",
    to: str = "",
    held_since: datetime | None = None,
) -> bytes:
    """Return the complete DSN message (headers and body) for one failed recipient.

    ``original`` is the failed queued message (its ``mail_from`` is the DSN's ``To``);
    ``outcome`` is the permanent failure; ``reporting_mta`` is this gateway's host name;
    ``from_addr`` is the DSN's ``From`` (usually ``MAILER-DAEMON@host``); ``message_id``
    is used for ``Message-ID`` with or without angle brackets; ``remote_mta``, when not
    empty, names the relay that gave the failure. ``to`` replaces the DSN's ``To`` when the
    envelope sender is not the person to tell (a VERP return path of this gateway);
    ``held_since`` says the message was held by the gateway and expired unreleased.
    """
    human = _human_text(original, outcome, reporting_mta, held_since)
    status = _status_part(original, outcome, reporting_mta, remote_mta, now)
    cte, headers = _headers_part(original.data)
    boundary = _boundary(message_id, [human, status, headers])
    mid = message_id.strip().strip("<>")
    lines = [
        f"From: Mail Delivery System <{_ascii(from_addr, 300)}>",
        f"To: <{_ascii(to or original.mail_from, 300)}>",
        f"Subject: Undelivered mail: {_ascii(original.rcpt, 200)}",
        f"Date: {format_datetime(now)}",
        f"Message-ID: <{_ascii(mid, 300)}>",
        # RFC 3834 §5: marks this as machine-generated so vacation responders stay quiet.
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Description: Notification",
        "Content-Transfer-Encoding: 7bit",
        "",
        human,
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "Content-Description: Delivery report",
        "",
        status,
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "Content-Description: Undelivered message headers",
        f"Content-Transfer-Encoding: {cte}",
        "",
        headers,
        "",
        f"--{boundary}--",
        "",
    ]
    return CRLF.join(lines).encode("ascii")
