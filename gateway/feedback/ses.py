"""Amazon SES notifications received by e-mail (SNS e-mail subscriptions) (pure).

This module owns reading the JSON document of an SES "Bounce" or "Complaint"
notification out of a received message, so that a dealer whose bounces come back through
an SES relay is still understood. The JSON shapes are those of the SES notification
contents documentation (``notificationType``, ``bounce.bouncedRecipients``,
``complaint.complainedRecipients``). ``Delivery`` notices and anything else give ``None``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.feedback.mail import Mail

MAX_JSON = 256 * 1024
# SNS e-mail delivery wraps long lines as "!\n " inside the JSON text.
_SNS_WRAP = re.compile(r"!\n ")


def notification(mail: Mail) -> dict[str, Any] | None:
    """The SES notification document carried by ``mail``, or ``None``."""
    for part in mail.parts:
        if part.in_enclosed or not part.content_type.startswith(("text/plain", "application/json")):
            continue
        text = part.text()
        start = text.find('{"notificationType"')
        if start < 0:
            continue
        body = _SNS_WRAP.sub("", text[start : start + MAX_JSON])
        try:
            document, _ = json.JSONDecoder().raw_decode(body)
        except (ValueError, RecursionError):
            continue
        if isinstance(document, dict) and document.get("notificationType") in (
            "Bounce",
            "Complaint",
        ):
            return document
    return None


def section(document: dict[str, Any], name: str) -> dict[str, Any]:
    """A sub-object of the notification, or an empty one when absent or malformed."""
    value = document.get(name)
    return value if isinstance(value, dict) else {}


def entries(document: dict[str, Any], name: str, key: str) -> list[dict[str, Any]]:
    """The list ``document[name][key]`` keeping only objects with an ``emailAddress``."""
    items = section(document, name).get(key)
    if not isinstance(items, list):
        return []
    return [
        i for i in items[:100] if isinstance(i, dict) and isinstance(i.get("emailAddress"), str)
    ]
