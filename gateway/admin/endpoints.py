"""The admin API's endpoint table: one declaration per endpoint, and the OpenAPI text built from it.

Each endpoint is declared once in ``ENDPOINTS``: method, path, summary, handler
(``admin/handlers.py``), response schema (``admin/schemas.py``), query parameters, request
body model (``admin/bodies.py``) and the error statuses it may answer. ``AdminApi``
(``admin/api.py``) builds its routes from this table and ``openapi()`` builds
``/api/openapi.json`` from it, so the description cannot drift from what is served.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from gateway import __version__
from gateway.admin import handlers
from gateway.admin.bodies import (
    CheckBody,
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
# Every integer the API takes fits the stores' 64-bit columns (SQLite INTEGER, bigserial);
# a larger one is refused as bad input instead of overflowing in the driver (a 500).
INT64_MAX = 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]+")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)

DESCRIPTION = """The admin JSON API under ``/api``.

Access: every endpoint but ``/api/openapi.json`` needs ``Authorization: Bearer <token>``
(tokens from ``mailgate admin token create``, stored hashed in ``http.admin_token_file``),
and only loopback clients are served unless ``http.admin_allow_remote`` is set.
``POST /api/check`` also takes a dealer's status-link token with ``?dealer=<id>``, from
anywhere (the dealer's own policy; nothing is stored). Errors are JSON
``{"error": "...", "status": N}``: 400 bad input, 401/403 access, 404 unknown, 405 wrong
method, 409 wrong state, 413 too large, 415 wrong content type, 422 a policy set that does
not validate, 503 the store is unavailable. Nothing an operator sends produces a 5xx other
than 503.
"""


# What ``handlers._within`` takes: a duration from 0 to 10 years, in units the schema can
# bound without arithmetic (9999h, 999d and 99w all fit).
WITHIN = r"^ *([0-9]{1,4}(ms|s|m|h)?|[0-9]{1,3}d|[0-9]{1,2}w) *$"


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
    required: bool = False
    min_length: int = 0
    pattern: str = ""  # a string must match it whole (JSON schema "pattern", enforced here)

    def schema(self) -> dict[str, Any]:
        """The parameter's JSON schema."""
        out: dict[str, Any]
        if self.kind == "date-time":
            out = {
                "type": "string",
                "anyOf": [{"format": "date-time"}, {"format": "date"}],
                "description": "an RFC 3339 date-time, or a full-date (midnight UTC)",
            }
        else:
            out = {"type": self.kind}
        if self.default is not None:
            out["default"] = self.default
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.kind == "integer":
            out["maximum"] = self.top
        if self.enum:
            out["enum"] = list(self.enum)
        if self.min_length:
            out["minLength"] = self.min_length
        if self.pattern:
            out["pattern"] = self.pattern
        return out

    @property
    def top(self) -> int:
        """The largest integer accepted: ``maximum``, else the 64-bit limit."""
        return INT64_MAX if self.maximum is None else min(self.maximum, INT64_MAX)

    def parse(self, raw: str | None) -> Any:
        """The typed value of ``raw``; raises ``InvalidRequest``."""
        if raw is None:
            if self.required:
                raise InvalidRequest(f"the query parameter {self.name!r} is required")
            return self.default
        if self.pattern and not re.fullmatch(self.pattern, raw):
            raise InvalidRequest(f"{self.name}: {raw!r} is not {self.description}")
        if self.kind == "integer":
            # Digits only: int() would also take " 7", "+7" and "1_000".
            if not _INTEGER.fullmatch(raw):
                raise InvalidRequest(f"{self.name}: not an integer: {raw!r}")
            try:
                value = int(raw)
            except ValueError:  # more digits than int() converts
                raise InvalidRequest(f"{self.name}: not an integer: {raw!r}") from None
            low = self.minimum if self.minimum is not None else -INT64_MAX - 1
            if not low <= value <= self.top:
                raise InvalidRequest(f"{self.name}: must be between {low} and {self.top}")
            return value
        if self.kind == "boolean":
            # What the description says (a JSON boolean in the query: true or false), no more.
            if raw in ("true", "false"):
                return raw == "true"
            raise InvalidRequest(f"{self.name}: not a boolean: {raw!r} (true or false)")
        if self.kind == "date-time":
            return parse_time(raw, self.name)
        if len(raw) < self.min_length:
            raise InvalidRequest(f"{self.name}: give a value")
        if self.enum and raw not in self.enum:
            raise InvalidRequest(f"{self.name}: must be one of {', '.join(self.enum)}")
        return raw


def parse_time(raw: str, name: str) -> datetime:
    """An RFC 3339 date-time, or a full-date (midnight UTC); raises ``InvalidRequest``.

    Exactly what the description's ``format`` says: ``datetime.fromisoformat`` alone would
    also take ``20240101T1000`` and refuse the lower-case ``t`` and ``z`` RFC 3339 allows.
    """
    problem = InvalidRequest(f"{name}: not an RFC 3339 time or a YYYY-MM-DD day: {raw!r}")
    if _DAY.fullmatch(raw):
        text = raw
    elif _TIME.fullmatch(raw):
        text = raw[:10] + "T" + raw[11:].upper()
    else:
        raise problem
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise problem from None
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
    body_csv: bool = False  # the request body is text/csv (not a JSON ``body`` model)
    raw_types: tuple[str, ...] = ()  # other media types taken as a raw body
    bounded: bool = False  # the body may not exceed AdminApi.max_body (413)
    dealer_link: bool = False  # a dealer's status-link token (with ?dealer=) also admits

    @property
    def operation_id(self) -> str:
        """A stable name for the operation: its handler's."""
        return self.handler.__name__.removeprefix("_")


_LIMIT = Param("limit", "integer", "how many at most", 100, 1, MAX_LIMIT)
_STANDINGS = obj({"recipients": {"type": "array"}})
_DEALER_Q = Param("dealer", "string", "only this dealer's messages")
_LIST_Q = Param("list", "string", "a dealer id, or * for the global list", min_length=1)
IMPORTED = obj({"added": INT, "skipped": INT, "invalid": INT})


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
        "Add many entries to one list (up to 10,000 per request).",
        "suppressions",
        handlers.import_suppressions,
        IMPORTED,
        body=ImportBody,
        errors=(400, 404, 415),
    ),
    Endpoint(
        "POST",
        "/api/suppressions/import/csv",
        "Add the rows of a CSV body (address[,reason], a header row naming them) to one list.",
        "suppressions",
        handlers.import_suppressions_csv,
        IMPORTED,
        query=(
            Param(
                "list",
                "string",
                "a dealer id, or * for the global list",
                required=True,
                min_length=1,
            ),
            Param("reason", "string", "the reason of rows without one (default: imported)"),
        ),
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
    *(
        Endpoint(
            "GET",
            f"/api/dealers/{{dealer}}/consent-expiring{suffix}",
            "Recipients whose implied consent ends within `within` (default 30d), with the "
            "day it ends: ask them for express consent while it is still allowed.",
            "consent",
            handler,
            schema,
            query=(
                Param(
                    "within",
                    "string",
                    "a duration up to 10 years: 30d, 8w, 90d",
                    "30d",
                    pattern=WITHIN,
                ),
            ),
            errors=(400, 404),
            media_type=media,
        )
        for suffix, handler, schema, media in (
            ("", handlers.consent_expiring, _STANDINGS, JSON_TYPE),
            (".csv", handlers.consent_expiring_csv, {"type": "string"}, "text/csv"),
        )
    ),
    *(
        Endpoint(
            "GET",
            f"/api/dealers/{{dealer}}/consent-locked{suffix}",
            "Recipients on record who may not get the dealer's commercial mail, and why.",
            "consent",
            handler,
            schema,
            errors=(404,),
            media_type=media,
        )
        for suffix, handler, schema, media in (
            ("", handlers.consent_locked, _STANDINGS, JSON_TYPE),
            (".csv", handlers.consent_locked_csv, {"type": "string"}, "text/csv"),
        )
    ),
    *(
        Endpoint(
            "GET",
            f"/api/dealers/{{dealer}}/consent-evidence{suffix}",
            "The consent ledger: for each commercial message queued, the basis the rules "
            "found at that moment (event, date, source, proof, rules and window).",
            "consent",
            handler,
            schema,
            query=(
                Param("address", "string", "one customer's entries"),
                Param("since", "date-time", "entries from this time on"),
                Param("until", "date-time", "entries before this time"),
            ),
            errors=(400, 404),
            media_type=media,
        )
        for suffix, handler, schema, media in (
            ("", handlers.consent_evidence, obj({"entries": {"type": "array"}}), JSON_TYPE),
            (".csv", handlers.consent_evidence_csv, {"type": "string"}, "text/csv"),
        )
    ),
    *(
        Endpoint(
            "GET",
            f"/api/dealers/{{dealer}}/consent-statements{suffix}",
            "Unsubscribes, complaints and withdrawals as consent statements in the CRM's "
            "words (what the CRM webhook is sent), oldest first.",
            "consent",
            handler,
            schema,
            query=(Param("since", "date-time", "statements from this time on"),),
            errors=(400, 404),
            media_type=media,
        )
        for suffix, handler, schema, media in (
            ("", handlers.consent_statements, obj({"statements": {"type": "array"}}), JSON_TYPE),
            (".csv", handlers.consent_statements_csv, {"type": "string"}, "text/csv"),
        )
    ),
    Endpoint(
        "GET",
        "/api/dealers/{dealer}/consent-refusals",
        "Recipients a consent check left out of a message (or refused with it), newest first.",
        "consent",
        handlers.consent_refusals,
        obj({"refusals": {"type": "array"}}),
        query=(Param("since", "date-time", "refusals from this time on"), _LIMIT),
        errors=(400, 404),
    ),
    # -- checking a message before it is sent (gateway/preflight/) --
    Endpoint(
        "POST",
        "/api/check",
        "What the gateway would do with a message or template (the dealer's policy, nothing "
        "stored): verdict, and each finding with why, how to fix it and where it is. Also "
        "served to the dealer's status-link token (Authorization: Bearer <token>, ?dealer=).",
        "check",
        handlers.check_message,
        ref("Check"),
        query=(
            Param(
                "dealer",
                "string",
                "the dealer whose policy applies",
                required=True,
                min_length=1,
            ),
            Param("subject", "string", "with a text/html body: the template's subject"),
        ),
        body=CheckBody,
        errors=(400, 404, 413, 415),
        raw_types=("message/rfc822", "text/html"),
        bounded=True,
        dealer_link=True,
    ),
)


# -- OpenAPI -----------------------------------------------------------------------------

_ERROR_TEXT = {
    400: "Bad input (the message says what is wrong).",
    401: "Missing or unknown bearer token.",
    403: "Not served to this client (http.admin_allow_remote).",
    404: "No such dealer, message or entry.",
    409: "The object is not in a state that allows this.",
    413: "The body is larger than the gateway accepts.",
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
                "required": p.required,
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
        takes_input = ep.body is not None or ep.body_csv or bool(ep.query)
        for code in sorted({401, 403, 503, *ep.errors} | ({400} if takes_input else set())):
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
            for media in ep.raw_types:
                content[media] = {"schema": {"type": "string"}}
            op["requestBody"] = {"required": True, "content": content}
        elif ep.body_csv:
            op["requestBody"] = {
                "required": True,
                "content": {"text/csv": {"schema": {"type": "string"}}},
            }
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
