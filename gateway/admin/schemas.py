"""The response schemas of ``/api/openapi.json``, written by hand next to ``admin/views.py``.

Each schema describes what one ``views`` function returns (``Dealer`` is ``dealer_json``,
``Message`` is ``message_json``, and so on); request body schemas are not here, they come
from the models in ``admin/bodies.py``. ``ref``, ``obj`` and the scalar constants keep the
endpoint table (``admin/endpoints.py``) short.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.reputation.records import EventKind
from gateway.types import MessageState


def ref(name: str) -> dict[str, str]:
    """A reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


STR = {"type": "string"}
INT = {"type": "integer"}
TIME = {"type": ["string", "null"], "format": "date-time"}


def obj(props: Mapping[str, Any], required: bool = True) -> dict[str, Any]:
    """An object schema with ``props`` (all of them required unless ``required`` is false)."""
    schema: dict[str, Any] = {"type": "object", "properties": dict(props)}
    if required:
        schema["required"] = list(props)
    return schema


COUNTS = obj({k: INT for k in ("sent", "delivered", "complaints", "hard_bounces", "soft_bounces")})
STATES = ["active", "warned", "suspended", "resumed"]
RESPONSE_SCHEMAS: dict[str, Any] = {
    "Error": obj({"error": STR, "status": INT}),
    "Counts": COUNTS,
    "Rate": obj(
        {
            "rate": {"type": "number"},
            "events": INT,
            "volume": INT,
            "warn_rate": {"type": "number"},
            "suspend_rate": {"type": "number"},
            "min_volume": INT,
            "since": {"type": "string", "format": "date"},
            "until": {"type": "string", "format": "date"},
            "level": {"type": "string", "enum": ["ok", "warn", "suspend", "low-volume"]},
        }
    ),
    "Dealer": obj(
        {
            "id": STR,
            "name": STR,
            "state": {"type": "string", "enum": STATES},
            "reason": STR,
            "actor": {"type": ["string", "null"]},
            "since": TIME,
            "expires_at": TIME,
            "suspended": {"type": "boolean"},
            "rates": obj({"complaints": ref("Rate"), "bounces": ref("Rate")}),
            "today": ref("Counts"),
        }
    ),
    "StateChange": obj(
        {
            "id": INT,
            "dealer": STR,
            "state": {"type": "string", "enum": STATES},
            "previous": {"type": "string", "enum": STATES},
            "reason": STR,
            "actor": {"type": "string", "enum": ["auto", "admin"]},
            "by": STR,
            "note": STR,
            "at": TIME,
            "expires_at": TIME,
            "evidence": {"type": "object"},
        }
    ),
    "Suppression": obj(
        {
            "id": INT,
            "list": STR,
            "address": STR,
            "reason": STR,
            "source": STR,
            "created_at": TIME,
            "expires_at": TIME,
            "lifted_at": TIME,
            "lifted_by": STR,
            "lift_reason": STR,
        }
    ),
    "Event": obj(
        {
            "kind": {"type": "string", "enum": [k.value for k in EventKind]},
            "message_id": STR,
            "recipient": STR,
            "at": TIME,
            "detail": STR,
            "subject": STR,
            "source": STR,
        }
    ),
    "Message": obj(
        {
            "id": STR,
            "dealer": STR,
            "state": {"type": "string", "enum": [s.value for s in MessageState]},
            "mail_from": STR,
            "rcpt": STR,
            "received_at": TIME,
            "updated_at": TIME,
            "attempts": INT,
            "next_attempt_at": TIME,
            "last_error": STR,
            "findings": {"type": "array", "items": STR},
            "note": STR,
            "size": INT,
            "system": {"type": "boolean"},
        }
    ),
    "Deleted": obj({"id": STR, "deleted": {"type": "boolean"}}),
}
RESPONSE_SCHEMAS["DealerDetail"] = {
    "allOf": [
        ref("Dealer"),
        obj(
            {
                "policy": obj(
                    {
                        "source": STR,
                        "auth_users": {"type": "array", "items": STR},
                        "from_domains": {"type": "array", "items": STR},
                        "contacts": {"type": "array", "items": STR},
                        "on_suspended": STR,
                        "dkim": {
                            "type": "array",
                            "items": obj({"domain": STR, "selector": STR, "algorithm": STR}),
                        },
                    }
                ),
                "history": {"type": "array", "items": ref("StateChange")},
            }
        ),
    ]
}
RESPONSE_SCHEMAS["MessageDetail"] = {
    "allOf": [
        ref("Message"),
        obj(
            {
                "findings_explained": {
                    "type": "array",
                    "items": obj({"code": STR, "summary": STR, "advice": STR}),
                },
                "header": {"type": "array", "items": STR},
                "header_truncated": {"type": "boolean"},
            }
        ),
    ]
}
MESSAGES = obj({"messages": {"type": "array", "items": ref("Message")}})
