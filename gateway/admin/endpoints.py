"""The admin API's endpoint table: one declaration per endpoint, and the OpenAPI text built from it.

Each endpoint is declared once in ``ENDPOINTS``: method, path, summary, handler
(``admin/handlers.py``), response schema (``admin/schemas.py``), query parameters, request
body model (``admin/bodies.py``) and the error statuses it may answer. ``AdminApi``
(``admin/api.py``) builds its routes from this table and ``openapi()`` builds
``/api/openapi.json`` from it, so the description cannot drift from what is served.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from gateway import __version__
from gateway.admin import handlers
from gateway.admin.bodies import (
    ConsentEventBody,
    DealerChangeBody,
    ImportBody,
    LiftBody,
    ReasonBody,
    SuppressBody,
    SuspendBody,
)
from gateway.admin.handlers import Handler
from gateway.admin.ops import MAX_LIMIT, InvalidRequest
from gateway.admin.schemas import INT, MESSAGES, RESPONSE_SCHEMAS, STR, TIME, obj, ref
from gateway.reputation.records import EventKind
from gateway.types import MessageState

JSON_TYPE = "application/json"

DESCRIPTION = """The admin JSON API under ``/api``.

Access: every endpoint but ``/api/openapi.json`` needs ``Authorization: Bearer <token>``
(tokens from ``mailgate admin token create``, stored hashed in ``http.admin_token_file``),
and only loopback clients are served unless ``http.admin_allow_remote`` is set. Errors are
JSON ``{"error": "...", "status": N}``: 400 bad input, 401/403 access, 404 unknown, 405
wrong method, 409 wrong state, 415 wrong content type, 422 a policy set that does not
validate, 503 the store is unavailable. Nothing an operator sends produces a 5xx other
than 503.
"""


@dataclass(frozen=True, slots=True)
class Param:
    """One query parameter."""

    name: str
    kind: Literal["string", "integer", "boolean", "date-time"]
    description: str
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[str, ...] = ()

    def schema(self) -> dict[str, Any]:
        """The parameter's JSON schema."""
        out: dict[str, Any]
        if self.kind == "date-time":
            out = {"type": "string", "format": "date-time"}
        else:
            out = {"type": self.kind}
        if self.default is not None:
            out["default"] = self.default
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.enum:
            out["enum"] = list(self.enum)
        return out

    def parse(self, raw: str | None) -> Any:
        """The typed value of ``raw``; raises ``InvalidRequest``."""
        if raw is None:
            return self.default
        if self.kind == "integer":
            try:
                value = int(raw)
            except ValueError:
                raise InvalidRequest(f"{self.name}: not an integer: {raw!r}") from None
            if (self.minimum is not None and value < self.minimum) or (
                self.maximum is not None and value > self.maximum
            ):
                raise InvalidRequest(
                    f"{self.name}: must be between {self.minimum} and {self.maximum}"
                )
            return value
        if self.kind == "boolean":
            lowered = raw.lower()
            if lowered in ("1", "true", "yes"):
                return True
            if lowered in ("0", "false", "no", ""):
                return False
            raise InvalidRequest(f"{self.name}: not a boolean: {raw!r} (true or false)")
        if self.kind == "date-time":
            return parse_time(raw, self.name)
        if self.enum and raw not in self.enum:
            raise InvalidRequest(f"{self.name}: must be one of {', '.join(self.enum)}")
        return raw


def parse_time(raw: str, name: str) -> datetime:
    """An ISO 8601 time (UTC when no offset is given); raises ``InvalidRequest``."""
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(f"{name}: not an ISO 8601 time: {raw!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One operation of the API."""

    method: str
    path: str
    summary: str
    tag: str
    handler: Handler
    response: Mapping[str, Any]
    query: tuple[Param, ...] = ()
    body: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    status: int = 200
    media_type: str = JSON_TYPE
    body_csv: bool = False  # also accepts a text/csv body

    @property
    def operation_id(self) -> str:
        """A stable name for the operation: its handler's."""
        return self.handler.__name__.removeprefix("_")


_LIMIT = Param("limit", "integer", "how many at most", 100, 1, MAX_LIMIT)
_DEALER_Q = Param("dealer", "string", "only this dealer's messages")
_LIST_Q = Param("list", "string", "a dealer id, or * for the global list")


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/api/health",
        "The gateway's health: store, spool, queue counts.",
        "health",
        handlers.health,
        obj(
            {
                "ok": {"type": "boolean"},
                "node": STR,
                "version": STR,
                "storage": STR,
                "spool_full": {"type": "boolean"},
                "dealers": INT,
                "queue": {"type": "object", "additionalProperties": INT},
                "oldest_queued_at": TIME,
                "queued_bytes": INT,
            }
        ),
    ),
    Endpoint(
        "GET",
        "/api/dealers",
        "Every dealer with its state and rates against thresholds.",
        "dealers",
        handlers.list_dealers,
        obj({"dealers": {"type": "array", "items": ref("Dealer")}}),
    ),
    Endpoint(
        "GET",
        "/api/dealers/{dealer}",
        "One dealer: state and why, rates against thresholds, today's counters, history.",
        "dealers",
        handlers.show_dealer,
        ref("DealerDetail"),
        query=(Param("history", "integer", "state transitions to include", 20, 0, MAX_LIMIT),),
        errors=(404,),
    ),
    Endpoint(
        "POST",
        "/api/dealers/{dealer}/suspend",
        "Suspend a dealer: MAIL FROM is refused and its queued mail waits.",
        "dealers",
        handlers.suspend_dealer,
        ref("StateChange"),
        body=SuspendBody,
        errors=(400, 404, 409),
    ),
    Endpoint(
        "POST",
        "/api/dealers/{dealer}/resume",
        "End a dealer's suspension; its queued mail goes out and counting restarts.",
        "dealers",
        handlers.resume_dealer,
        ref("StateChange"),
        body=DealerChangeBody,
        errors=(400, 404, 409),
    ),
    Endpoint(
        "GET",
        "/api/dealers/{dealer}/events",
        "A dealer's complaints and bounces, and its state transitions, newest first.",
        "dealers",
        handlers.dealer_events,
        obj(
            {
                "dealer": STR,
                "events": {"type": "array", "items": ref("Event")},
                "transitions": {"type": "array", "items": ref("StateChange")},
            }
        ),
        query=(
            Param("kind", "string", "only this kind", enum=tuple(k.value for k in EventKind)),
            Param("since", "date-time", "from this time (default: 30 days ago)"),
            _LIMIT,
        ),
        errors=(400, 404),
    ),
    Endpoint(
        "GET",
        "/api/dealers/{dealer}/daily",
        "A dealer's daily counters, oldest first.",
        "dealers",
        handlers.dealer_daily,
        obj(
            {
                "dealer": STR,
                "days": {
                    "type": "array",
                    "items": {
                        "allOf": [
                            ref("Counts"),
                            obj({"day": {"type": "string", "format": "date"}}),
                        ]
                    },
                },
            }
        ),
        query=(Param("days", "integer", "how many days back", 30, 1, 366),),
        errors=(400, 404),
    ),
    Endpoint(
        "GET",
        "/api/dealers/{dealer}/status-link",
        "The dealer's read-only status page link (unguessable; safe to send to the dealer).",
        "dealers",
        handlers.dealer_status_link,
        obj({"dealer": STR, "url": STR}),
        errors=(404,),
    ),
    Endpoint(
        "GET",
        "/api/suppressions",
        "Search suppression entries (id order, paged by 'after').",
        "suppressions",
        handlers.search_suppressions,
        obj(
            {
                "entries": {"type": "array", "items": ref("Suppression")},
                "next_after": {"type": ["integer", "null"]},
            }
        ),
        query=(
            _LIST_Q,
            Param("q", "string", "only addresses containing this text"),
            Param("all", "boolean", "include lifted and expired entries", False),
            Param("after", "integer", "entries after this id", 0, 0),
            _LIMIT,
        ),
        errors=(400, 404),
    ),
    Endpoint(
        "POST",
        "/api/suppressions",
        "Suppress addresses on one list.",
        "suppressions",
        handlers.add_suppressions,
        obj(
            {
                "results": {
                    "type": "array",
                    "items": obj(
                        {
                            "address": STR,
                            "result": {
                                "type": "string",
                                "enum": ["suppressed", "already", "invalid"],
                            },
                        }
                    ),
                }
            }
        ),
        body=SuppressBody,
        errors=(400, 404),
    ),
    Endpoint(
        "DELETE",
        "/api/suppressions",
        "Lift one address's active entry (recorded with who and why; nothing is deleted).",
        "suppressions",
        handlers.lift_suppression,
        obj({"address": STR, "list": STR, "lifted": {"type": "boolean"}}),
        body=LiftBody,
        errors=(400, 404),
    ),
    Endpoint(
        "POST",
        "/api/suppressions/import",
        "Add many entries to one list: JSON, or a CSV body with ?list= (address[,reason]).",
        "suppressions",
        handlers.import_suppressions,
        obj({"added": INT, "skipped": INT, "invalid": INT}),
        query=(
            Param("list", "string", "with a CSV body: the list"),
            Param("reason", "string", "with a CSV body: the default reason"),
        ),
        body=ImportBody,
        errors=(400, 404, 415),
        body_csv=True,
    ),
    Endpoint(
        "GET",
        "/api/suppressions/export",
        "Suppression entries as CSV.",
        "suppressions",
        handlers.export_suppressions,
        {"type": "string"},
        query=(_LIST_Q, Param("all", "boolean", "include lifted and expired entries", False)),
        errors=(400, 404),
        media_type="text/csv",
    ),
    Endpoint(
        "GET",
        "/api/held",
        "Held messages, newest first.",
        "held",
        handlers.list_held,
        MESSAGES,
        query=(_DEALER_Q, _LIMIT),
        errors=(400, 404),
    ),
    Endpoint(
        "GET",
        "/api/held/{id}",
        "One held message: why, what to do, its header.",
        "held",
        handlers.show_held,
        ref("MessageDetail"),
        errors=(404,),
    ),
    Endpoint(
        "POST",
        "/api/held/{id}/release",
        "Deliver a held message now.",
        "held",
        handlers.release_held,
        ref("Message"),
        errors=(404, 409),
    ),
    Endpoint(
        "DELETE",
        "/api/held/{id}",
        "Delete a held message for good (logged with the reason).",
        "held",
        handlers.delete_held,
        ref("Deleted"),
        body=ReasonBody,
        errors=(400, 404),
    ),
    Endpoint(
        "GET",
        "/api/queue",
        "Stored messages, newest first.",
        "queue",
        handlers.list_queue,
        MESSAGES,
        query=(
            Param("state", "string", "only this state", enum=tuple(s.value for s in MessageState)),
            _DEALER_Q,
            _LIMIT,
        ),
        errors=(400, 404),
    ),
    Endpoint(
        "GET",
        "/api/queue/{id}",
        "One stored message and its header.",
        "queue",
        handlers.show_message,
        ref("MessageDetail"),
        errors=(404,),
    ),
    Endpoint(
        "POST",
        "/api/queue/{id}/retry",
        "Try a queued or failed message again now.",
        "queue",
        handlers.retry_message,
        ref("Message"),
        errors=(404, 409),
    ),
    Endpoint(
        "DELETE",
        "/api/queue/{id}",
        "Delete a message for good (logged with the reason).",
        "queue",
        handlers.delete_message,
        ref("Deleted"),
        body=ReasonBody,
        errors=(400, 404),
    ),
    Endpoint(
        "POST",
        "/api/policies/reload",
        "Validate the policy directory and apply it only if all of it is valid (else 422).",
        "policies",
        handlers.reload_policies,
        obj(
            {
                "ok": {"type": "boolean"},
                "dealers": {"type": "array", "items": STR},
                "problems": {"type": "array", "items": STR},
            }
        ),
        errors=(422,),
    ),
    # -- consent --
    Endpoint(
        "GET",
        "/api/dealers/{dealer}/consent/{address}",
        "May the dealer email this address? Its events, the window each opens, its standing "
        "per topic and what would renew it.",
        "consent",
        handlers.show_consent,
        {"type": "object"},
        errors=(404,),
    ),
    Endpoint(
        "POST",
        "/api/dealers/{dealer}/consent",
        "Record one interaction or opt-in for an address (idempotent); returns its standing.",
        "consent",
        handlers.record_consent,
        obj({"recorded": {"type": "boolean"}, "standing": {"type": "object"}}),
        body=ConsentEventBody,
        errors=(400, 404),
    ),
)


# -- OpenAPI -----------------------------------------------------------------------------

_ERROR_TEXT = {
    400: "Bad input (the message says what is wrong).",
    401: "Missing or unknown bearer token.",
    403: "Not served to this client (http.admin_allow_remote).",
    404: "No such dealer, message or entry.",
    409: "The object is not in a state that allows this.",
    415: "Wrong content type.",
    422: "The policy set does not validate; the old set stays in force.",
    503: "The store is unavailable; retry.",
}


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 description of ``ENDPOINTS``."""
    schemas: dict[str, Any] = dict(RESPONSE_SCHEMAS)
    paths: dict[str, dict[str, Any]] = {}
    for ep in ENDPOINTS:
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in path_names(ep.path)
        ]
        params += [
            {
                "name": p.name,
                "in": "query",
                "required": False,
                "description": p.description,
                "schema": p.schema(),
            }
            for p in ep.query
        ]
        responses: dict[str, Any] = {
            str(ep.status): {
                "description": "OK",
                "content": {ep.media_type: {"schema": ep.response}},
            }
        }
        for code in sorted({401, 403, 503, *ep.errors} | ({400} if ep.body or ep.query else set())):
            responses[str(code)] = {
                "description": _ERROR_TEXT[code],
                "content": {JSON_TYPE: {"schema": ref("Error")}},
            }
        if ep.operation_id == "reload_policies":
            responses["422"]["content"] = {JSON_TYPE: {"schema": ep.response}}
        op: dict[str, Any] = {
            "operationId": ep.operation_id,
            "summary": ep.summary,
            "tags": [ep.tag],
            "parameters": params,
            "responses": responses,
        }
        if ep.body is not None:
            schema = ep.body.model_json_schema(
                by_alias=True, ref_template="#/components/schemas/{model}"
            )
            schemas.update(schema.pop("$defs", {}))
            schemas[ep.body.__name__] = schema
            content: dict[str, Any] = {JSON_TYPE: {"schema": ref(ep.body.__name__)}}
            if ep.body_csv:
                content["text/csv"] = {"schema": {"type": "string"}}
            op["requestBody"] = {"required": True, "content": content}
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Mailgate admin API",
            "version": __version__,
            "description": DESCRIPTION,
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


def path_names(path: str) -> list[str]:
    """The names of the ``{parameters}`` in ``path``, in order."""
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
