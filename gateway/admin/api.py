"""The admin JSON API under ``/api``: one endpoint table, its routes and its OpenAPI text.

Each endpoint is declared once in ``ENDPOINTS`` (method, path, query parameters, request
body model, response schema, handler); the Starlette routes and ``/api/openapi.json`` are
both built from that table, so the description cannot drift from what is served.

Access: every endpoint but ``/api/openapi.json`` needs ``Authorization: Bearer <token>``
(tokens from ``mailgate admin token create``, stored hashed in ``http.admin_token_file``),
and only loopback clients are served unless ``http.admin_allow_remote`` is set. Errors are
JSON ``{"error": "...", "status": N}``: 400 bad input, 401/403 access, 404 unknown, 405
wrong method, 409 wrong state, 415 wrong content type, 422 a policy set that does not
validate, 503 the store is unavailable. Nothing an operator sends produces a 5xx other
than 503.
"""

from __future__ import annotations

import builtins
import csv
import io
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gateway import __version__
from gateway.addresslists import CsvFormatError, RowProblem
from gateway.admin.ops import (
    MAX_IMPORT,
    MAX_LIMIT,
    AdminError,
    AdminOps,
    DealerReport,
    InvalidRequest,
    NotFound,
    RateReport,
)
from gateway.admin.tokens import TokenCheck
from gateway.cli.consent import RowError, parse_row
from gateway.consent.ops import ConsentOps, explanation_json
from gateway.consent.rules import Preference
from gateway.durations import parse_duration
from gateway.errors import StorageError
from gateway.findings import CATALOGUE
from gateway.metrics import Metrics
from gateway.reputation.csvformat import CSV_FIELDS, suppression_row, suppression_rows
from gateway.reputation.records import (
    DailyCounts,
    DealerStatus,
    EventKind,
    FeedbackEvent,
    StateChange,
    Suppression,
)
from gateway.types import MessageState, QueuedMessage

log = logging.getLogger("gateway.admin")

JSON_TYPE = "application/json"
_HEADER_LINES = 60


# -- request bodies (pydantic: unknown keys are errors, as everywhere at our edges) -------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReasonBody(_Body):
    """A change that needs a reason; ``by`` names the operator (default: the token)."""

    reason: str = Field(min_length=1, max_length=500)
    by: str = Field(default="", max_length=100)


class SuspendBody(ReasonBody):
    """Suspend a dealer, optionally for a time (``for``: e.g. ``72h``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    duration: str | None = Field(default=None, alias="for", max_length=20)


class SuppressBody(_Body):
    """Add addresses to one list (a dealer id, or ``*`` for the global list)."""

    list: str = Field(min_length=1, max_length=100)
    addresses: builtins.list[str] = Field(min_length=1, max_length=MAX_LIMIT)
    reason: str = Field(min_length=1, max_length=500)
    by: str = Field(default="", max_length=100)
    expires_at: datetime | None = None


class LiftBody(_Body):
    """Lift one address's active entry on one list."""

    list: str = Field(min_length=1, max_length=100)
    address: str = Field(min_length=1, max_length=320)
    reason: str = Field(min_length=1, max_length=500)
    by: str = Field(default="", max_length=100)


class ImportEntry(_Body):
    """One row of an import."""

    address: str = Field(max_length=320)
    reason: str = Field(default="", max_length=500)


class ImportBody(_Body):
    """Entries to add to one list (up to 10,000 per request)."""

    list: str = Field(min_length=1, max_length=100)
    reason: str = Field(default="imported", min_length=1, max_length=500)
    source: str = Field(default="", max_length=200)
    entries: builtins.list[ImportEntry] = Field(max_length=MAX_IMPORT)


# -- the endpoint table ------------------------------------------------------------------


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
class Call:
    """One authenticated request, parsed."""

    path: Mapping[str, str]
    query: Mapping[str, Any]
    body: BaseModel | None
    actor: str
    raw_body: bytes = b""
    content_type: str = ""

    def by(self) -> str:
        """Who acts: the body's ``by`` (with the token's name), else the token's name."""
        named = getattr(self.body, "by", "") if self.body is not None else ""
        return f"{named} (token {self.actor})" if named else self.actor


Handler = Callable[[AdminOps, Call], Awaitable[Any]]


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
        """A stable name for the operation."""
        return self.handler.__name__.removeprefix("_")


# -- serialisation -----------------------------------------------------------------------


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def change_json(change: StateChange) -> dict[str, Any]:
    """A state transition."""
    return {
        "id": change.id,
        "dealer": change.dealer_id,
        "state": change.state.value,
        "previous": change.previous.value,
        "reason": change.reason,
        "actor": change.actor.value,
        "by": change.by,
        "at": _time(change.at),
        "expires_at": _time(change.expires_at),
        "evidence": change.evidence.as_dict(),
    }


def status_json(status: DealerStatus | None) -> dict[str, Any]:
    """A dealer's current state."""
    if status is None:
        return {"state": "active", "reason": "", "actor": None, "since": None, "expires_at": None}
    return {
        "state": status.state.value,
        "reason": status.reason,
        "actor": status.actor.value,
        "since": _time(status.since),
        "expires_at": _time(status.expires_at),
    }


def rate_json(report: RateReport) -> dict[str, Any]:
    """One rate against its thresholds."""
    window = report.window
    return {
        "rate": report.rate,
        "events": window.events(report.metric),
        "volume": window.volume(report.metric),
        "warn_rate": report.thresholds.warn_rate,
        "suspend_rate": report.thresholds.suspend_rate,
        "min_volume": report.thresholds.min_volume,
        "since": window.since.isoformat(),
        "until": window.until.isoformat(),
        "level": report.level,
    }


def counts_json(row: DailyCounts | None) -> dict[str, int]:
    """A day's counters (zeros when there is no row)."""
    from gateway.reputation.records import DayCounts

    return (row.counts if row else DayCounts()).as_dict()


def dealer_json(report: DealerReport, detail: bool = False) -> dict[str, Any]:
    """A dealer, its state and its rates (with ``detail``: policy facts and history)."""
    out: dict[str, Any] = {
        "id": report.policy.dealer_id,
        "name": report.policy.name,
        **status_json(report.status),
        "suspended": report.state.value == "suspended",
        "rates": {"complaints": rate_json(report.complaints), "bounces": rate_json(report.bounces)},
        "today": counts_json(report.today),
    }
    if detail:
        policy = report.policy
        out["policy"] = {
            "source": policy.source,
            "auth_users": sorted(policy.auth_users),
            "from_domains": sorted(policy.from_domains),
            "contacts": list(policy.contacts),
            "on_suspended": policy.on_suspended,
            "dkim": [
                {"domain": d.domain, "selector": d.selector, "algorithm": d.algorithm}
                for d in policy.dkim
            ],
        }
        out["history"] = [change_json(c) for c in report.history]
    return out


def suppression_json(entry: Suppression) -> dict[str, Any]:
    """A suppression entry."""
    return {
        "id": entry.id,
        "list": entry.scope,
        "address": entry.address,
        "reason": entry.reason,
        "source": entry.source,
        "created_at": _time(entry.created_at),
        "expires_at": _time(entry.expires_at),
        "lifted_at": _time(entry.lifted_at),
        "lifted_by": entry.lifted_by,
        "lift_reason": entry.lift_reason,
    }


def event_json(event: FeedbackEvent) -> dict[str, Any]:
    """A feedback event."""
    return {
        "kind": event.kind.value,
        "message_id": event.message_id,
        "recipient": event.recipient,
        "at": _time(event.at),
        "detail": event.detail,
        "subject": event.subject,
        "source": event.source,
    }


def finding_json(code: str) -> dict[str, str]:
    """A finding code with what it means and what to do."""
    kind = CATALOGUE.get(code)
    return {
        "code": code,
        "summary": kind.summary if kind else "",
        "advice": kind.advice if kind else "",
    }


def message_json(message: QueuedMessage, detail: bool = False) -> dict[str, Any]:
    """A stored message (with ``detail``: findings explained and the header)."""
    out: dict[str, Any] = {
        "id": message.id,
        "dealer": message.dealer_id,
        "state": message.state.value,
        "mail_from": message.mail_from,
        "rcpt": message.rcpt,
        "received_at": _time(message.received_at),
        "updated_at": _time(message.updated_at),
        "attempts": message.attempts,
        "next_attempt_at": _time(message.next_attempt_at),
        "last_error": message.last_error,
        "findings": list(message.findings),
        "note": message.note,
        "size": message.size,
        "system": message.system,
    }
    if detail:
        out["findings_explained"] = [finding_json(code) for code in message.findings]
        head = message.data.split(b"\r\n\r\n", 1)[0].splitlines()
        out["header"] = [line.decode("utf-8", "replace") for line in head[:_HEADER_LINES]]
        out["header_truncated"] = len(head) > _HEADER_LINES
    return out


# -- handlers ----------------------------------------------------------------------------


_M = TypeVar("_M", bound=BaseModel)


def _body(call: Call, model: type[_M]) -> _M:
    assert isinstance(call.body, model)
    return call.body


async def _health(ops: AdminOps, _call: Call) -> Any:
    health = await ops.health()
    stats = health.stats
    return {
        "ok": health.ok,
        "node": health.node,
        "version": __version__,
        "storage": health.storage_error or "ok",
        "spool_full": health.spool_full,
        "dealers": health.dealers,
        "queue": {s.value: stats.count(s) for s in MessageState} if stats else {},
        "oldest_queued_at": _time(stats.oldest_queued_at) if stats else None,
        "queued_bytes": stats.queued_bytes if stats else 0,
    }


async def _list_dealers(ops: AdminOps, _call: Call) -> Any:
    return {"dealers": [dealer_json(r) for r in await ops.dealers()]}


async def _show_dealer(ops: AdminOps, call: Call) -> Any:
    report = await ops.dealer(call.path["dealer"], history=call.query["history"])
    return dealer_json(report, detail=True)


async def _suspend_dealer(ops: AdminOps, call: Call) -> Any:
    body = _body(call, SuspendBody)
    duration: timedelta | None = None
    if body.duration:
        try:
            duration = parse_duration(body.duration)
        except ValueError as exc:
            raise InvalidRequest(f"for: {exc}") from None
    change = await ops.suspend(call.path["dealer"], body.reason, call.by(), duration)
    return change_json(change)


async def _resume_dealer(ops: AdminOps, call: Call) -> Any:
    body = _body(call, ReasonBody)
    return change_json(await ops.resume(call.path["dealer"], body.reason, call.by()))


async def _dealer_events(ops: AdminOps, call: Call) -> Any:
    kinds = frozenset(EventKind(k) for k in [call.query["kind"]] if k)
    events, changes = await ops.events(
        call.path["dealer"], kinds, call.query["since"], call.query["limit"]
    )
    return {
        "dealer": call.path["dealer"],
        "events": [event_json(e) for e in events],
        "transitions": [change_json(c) for c in changes],
    }


async def _dealer_status_link(ops: AdminOps, call: Call) -> Any:
    return {"dealer": call.path["dealer"], "url": ops.status_link(call.path["dealer"])}


async def _dealer_daily(ops: AdminOps, call: Call) -> Any:
    rows = await ops.daily(call.path["dealer"], call.query["days"])
    return {
        "dealer": call.path["dealer"],
        "days": [{"day": r.day.isoformat(), **r.counts.as_dict()} for r in rows],
    }


async def _search_suppressions(ops: AdminOps, call: Call) -> Any:
    entries = await ops.suppressions(
        call.query["list"],
        query=call.query["q"] or "",
        include_inactive=call.query["all"],
        after=call.query["after"],
        limit=call.query["limit"],
    )
    return {
        "entries": [suppression_json(e) for e in entries],
        "next_after": entries[-1].id if len(entries) == call.query["limit"] else None,
    }


async def _add_suppressions(ops: AdminOps, call: Call) -> Any:
    body = _body(call, SuppressBody)
    expires = body.expires_at
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    outcomes = await ops.suppress(body.list, body.addresses, body.reason, call.by(), expires)
    return {"results": [{"address": o.address, "result": o.result} for o in outcomes]}


async def _lift_suppression(ops: AdminOps, call: Call) -> Any:
    body = _body(call, LiftBody)
    address = await ops.lift(body.list, body.address, body.reason, call.by())
    return {"address": address, "list": body.list, "lifted": True}


async def _import_suppressions(ops: AdminOps, call: Call) -> Any:
    unreadable = 0  # rows the CSV reader refused: counted as invalid, like bad addresses
    if call.body is None:  # text/csv
        list_name = call.query["list"]
        reason = call.query["reason"] or "imported"
        entries = csv_rows(call.raw_body)
        rows = [e for e in entries if not isinstance(e, RowProblem)]
        unreadable = len(entries) - len(rows)
        source = f"import:api:{call.actor}"
    else:
        body = _body(call, ImportBody)
        list_name, reason = body.list, body.reason
        rows = [(e.address, e.reason) for e in body.entries]
        source = f"import:{body.source or 'api'}"
    result = await ops.import_entries(list_name, rows, reason, source)
    invalid = result.invalid + unreadable
    return {"added": result.added, "skipped": result.skipped, "invalid": invalid}


def csv_rows(data: bytes) -> list[tuple[str, str] | RowProblem]:
    """``(address, reason)`` rows of a CSV body (``suppression_rows``), or their problems."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidRequest("the CSV body must be UTF-8") from None
    try:
        rows = list(suppression_rows(text))
    except CsvFormatError as exc:
        raise InvalidRequest(f"CSV header: {exc}") from None
    if len(rows) > MAX_IMPORT:
        raise InvalidRequest(f"at most {MAX_IMPORT} rows per request; send batches")
    return rows


async def _export_suppressions(ops: AdminOps, call: Call) -> Any:
    list_name = call.query["list"]
    if list_name:
        ops.suppression_list(list_name)  # 400/404 now, before the stream starts
    pages = ops.export(list_name, call.query["all"])

    async def body() -> AsyncIterator[str]:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_FIELDS)
        async for page in pages:
            for e in page:
                writer.writerow(suppression_row(e))
            yield out.getvalue()
            out.seek(0)
            out.truncate()
        yield out.getvalue()

    return StreamingResponse(body(), media_type="text/csv; charset=utf-8")


async def _list_held(ops: AdminOps, call: Call) -> Any:
    rows = await ops.messages(MessageState.HELD, call.query["dealer"], call.query["limit"])
    return {"messages": [message_json(m) for m in rows]}


async def _show_held(ops: AdminOps, call: Call) -> Any:
    return message_json(await ops.message(call.path["id"], held=True), detail=True)


async def _release_held(ops: AdminOps, call: Call) -> Any:
    return message_json(await ops.release(call.path["id"], call.by()))


async def _delete_held(ops: AdminOps, call: Call) -> Any:
    body = _body(call, ReasonBody)
    message = await ops.delete(call.path["id"], body.reason, call.by(), held=True)
    return {"id": message.id, "deleted": True}


async def _list_queue(ops: AdminOps, call: Call) -> Any:
    state = MessageState(call.query["state"]) if call.query["state"] else None
    rows = await ops.messages(state, call.query["dealer"], call.query["limit"])
    return {"messages": [message_json(m) for m in rows]}


async def _show_message(ops: AdminOps, call: Call) -> Any:
    return message_json(await ops.message(call.path["id"]), detail=True)


async def _retry_message(ops: AdminOps, call: Call) -> Any:
    return message_json(await ops.retry(call.path["id"], call.by()))


async def _delete_message(ops: AdminOps, call: Call) -> Any:
    body = _body(call, ReasonBody)
    message = await ops.delete(call.path["id"], body.reason, call.by())
    return {"id": message.id, "deleted": True}


async def _reload_policies(ops: AdminOps, call: Call) -> Any:
    result = await ops.reload(call.by())
    payload = {
        "ok": result.ok,
        "dealers": sorted(result.policy_set.dealers),
        "problems": [str(p) for p in result.problems],
    }
    return JSONResponse(payload, status_code=200 if result.ok else 422)


# -- schemas (hand-written for responses; request bodies come from the models) -----------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_INT = {"type": "integer"}
_TIME = {"type": ["string", "null"], "format": "date-time"}


def _obj(props: Mapping[str, Any], required: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": dict(props)}
    if required:
        schema["required"] = list(props)
    return schema


_COUNTS = _obj(
    {k: _INT for k in ("sent", "delivered", "complaints", "hard_bounces", "soft_bounces")}
)
_STATES = ["active", "warned", "suspended", "resumed"]
RESPONSE_SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": _STR, "status": _INT}),
    "Counts": _COUNTS,
    "Rate": _obj(
        {
            "rate": {"type": "number"},
            "events": _INT,
            "volume": _INT,
            "warn_rate": {"type": "number"},
            "suspend_rate": {"type": "number"},
            "min_volume": _INT,
            "since": {"type": "string", "format": "date"},
            "until": {"type": "string", "format": "date"},
            "level": {"type": "string", "enum": ["ok", "warn", "suspend", "low-volume"]},
        }
    ),
    "Dealer": _obj(
        {
            "id": _STR,
            "name": _STR,
            "state": {"type": "string", "enum": _STATES},
            "reason": _STR,
            "actor": {"type": ["string", "null"]},
            "since": _TIME,
            "expires_at": _TIME,
            "suspended": {"type": "boolean"},
            "rates": _obj({"complaints": _ref("Rate"), "bounces": _ref("Rate")}),
            "today": _ref("Counts"),
        }
    ),
    "StateChange": _obj(
        {
            "id": _INT,
            "dealer": _STR,
            "state": {"type": "string", "enum": _STATES},
            "previous": {"type": "string", "enum": _STATES},
            "reason": _STR,
            "actor": {"type": "string", "enum": ["auto", "admin"]},
            "by": _STR,
            "at": _TIME,
            "expires_at": _TIME,
            "evidence": {"type": "object"},
        }
    ),
    "Suppression": _obj(
        {
            "id": _INT,
            "list": _STR,
            "address": _STR,
            "reason": _STR,
            "source": _STR,
            "created_at": _TIME,
            "expires_at": _TIME,
            "lifted_at": _TIME,
            "lifted_by": _STR,
            "lift_reason": _STR,
        }
    ),
    "Event": _obj(
        {
            "kind": {"type": "string", "enum": [k.value for k in EventKind]},
            "message_id": _STR,
            "recipient": _STR,
            "at": _TIME,
            "detail": _STR,
            "subject": _STR,
            "source": _STR,
        }
    ),
    "Message": _obj(
        {
            "id": _STR,
            "dealer": _STR,
            "state": {"type": "string", "enum": [s.value for s in MessageState]},
            "mail_from": _STR,
            "rcpt": _STR,
            "received_at": _TIME,
            "updated_at": _TIME,
            "attempts": _INT,
            "next_attempt_at": _TIME,
            "last_error": _STR,
            "findings": {"type": "array", "items": _STR},
            "note": _STR,
            "size": _INT,
            "system": {"type": "boolean"},
        }
    ),
    "Deleted": _obj({"id": _STR, "deleted": {"type": "boolean"}}),
}
RESPONSE_SCHEMAS["DealerDetail"] = {
    "allOf": [
        _ref("Dealer"),
        _obj(
            {
                "policy": _obj(
                    {
                        "source": _STR,
                        "auth_users": {"type": "array", "items": _STR},
                        "from_domains": {"type": "array", "items": _STR},
                        "contacts": {"type": "array", "items": _STR},
                        "on_suspended": _STR,
                        "dkim": {
                            "type": "array",
                            "items": _obj({"domain": _STR, "selector": _STR, "algorithm": _STR}),
                        },
                    }
                ),
                "history": {"type": "array", "items": _ref("StateChange")},
            }
        ),
    ]
}
RESPONSE_SCHEMAS["MessageDetail"] = {
    "allOf": [
        _ref("Message"),
        _obj(
            {
                "findings_explained": {
                    "type": "array",
                    "items": _obj({"code": _STR, "summary": _STR, "advice": _STR}),
                },
                "header": {"type": "array", "items": _STR},
                "header_truncated": {"type": "boolean"},
            }
        ),
    ]
}
_MESSAGES = _obj({"messages": {"type": "array", "items": _ref("Message")}})
_LIMIT = Param("limit", "integer", "how many at most", 100, 1, MAX_LIMIT)
_DEALER_Q = Param("dealer", "string", "only this dealer's messages")
_LIST_Q = Param("list", "string", "a dealer id, or * for the global list")


# -- consent (gateway/consent/rules.py, gateway/consent/ops.py) ----------------------------------


class ConsentEventBody(_Body):
    """One interaction or opt-in, as a row of ``mailgate consent import`` (same fields)."""

    address: str = Field(min_length=3, max_length=320)
    event: str = Field(min_length=1, max_length=40)
    date: str = Field(min_length=10, max_length=40)
    last_payment: str = Field(default="", max_length=40)
    reference: str = Field(default="", max_length=200)
    source: str = Field(default="", max_length=200)
    proof: str = Field(default="", max_length=500)
    topic: str = Field(default="", max_length=40)
    channel: str = Field(default="email", max_length=20)


def _consent_dealer(ops: AdminOps, dealer_id: str) -> Any:
    dealer = ops.policies.current.dealer(dealer_id)
    if dealer is None:
        raise NotFound(f"no dealer {dealer_id!r}")
    return dealer


async def _show_consent(ops: AdminOps, call: Call) -> Any:
    dealer = _consent_dealer(ops, call.path["dealer"])
    shown = await ConsentOps(ops.storage, ops.clock).explain(dealer, call.path["address"])
    return explanation_json(shown)


async def _record_consent(ops: AdminOps, call: Call) -> Any:
    dealer = _consent_dealer(ops, call.path["dealer"])
    body = _body(call, ConsentEventBody)
    try:
        item = parse_row(body.model_dump(), dealer.dealer_id, None)
    except RowError as exc:
        raise InvalidRequest(str(exc)) from None
    consent = ConsentOps(ops.storage, ops.clock)
    if isinstance(item, Preference):
        changed = await consent.record((), (item,))
    else:
        changed = await consent.record((item,))
    shown = await consent.explain(dealer, item.address)
    return {"recorded": bool(changed), "standing": explanation_json(shown)}


# -- end of consent --------------------------------------------------------------------------


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/api/health",
        "The gateway's health: store, spool, queue counts.",
        "health",
        _health,
        _obj(
            {
                "ok": {"type": "boolean"},
                "node": _STR,
                "version": _STR,
                "storage": _STR,
                "spool_full": {"type": "boolean"},
                "dealers": _INT,
                "queue": {"type": "object", "additionalProperties": _INT},
                "oldest_queued_at": _TIME,
                "queued_bytes": _INT,
            }
        ),
    ),
    Endpoint(
        "GET",
        "/api/dealers",
        "Every dealer with its state and rates against thresholds.",
        "dealers",
        _list_dealers,
        _obj({"dealers": {"type": "array", "items": _ref("Dealer")}}),
    ),
    Endpoint(
        "GET",
        "/api/dealers/{dealer}",
        "One dealer: state and why, rates against thresholds, today's counters, history.",
        "dealers",
        _show_dealer,
        _ref("DealerDetail"),
        query=(Param("history", "integer", "state transitions to include", 20, 0, MAX_LIMIT),),
        errors=(404,),
    ),
    Endpoint(
        "POST",
        "/api/dealers/{dealer}/suspend",
        "Suspend a dealer: MAIL FROM is refused and its queued mail waits.",
        "dealers",
        _suspend_dealer,
        _ref("StateChange"),
        body=SuspendBody,
        errors=(400, 404, 409),
    ),
    Endpoint(
        "POST",
        "/api/dealers/{dealer}/resume",
        "End a dealer's suspension; its queued mail goes out and counting restarts.",
        "dealers",
        _resume_dealer,
        _ref("StateChange"),
        body=ReasonBody,
        errors=(400, 404, 409),
    ),
    Endpoint(
        "GET",
        "/api/dealers/{dealer}/events",
        "A dealer's complaints and bounces, and its state transitions, newest first.",
        "dealers",
        _dealer_events,
        _obj(
            {
                "dealer": _STR,
                "events": {"type": "array", "items": _ref("Event")},
                "transitions": {"type": "array", "items": _ref("StateChange")},
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
        _dealer_daily,
        _obj(
            {
                "dealer": _STR,
                "days": {
                    "type": "array",
                    "items": {
                        "allOf": [
                            _ref("Counts"),
                            _obj({"day": {"type": "string", "format": "date"}}),
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
        _dealer_status_link,
        _obj({"dealer": _STR, "url": _STR}),
        errors=(404,),
    ),
    Endpoint(
        "GET",
        "/api/suppressions",
        "Search suppression entries (id order, paged by 'after').",
        "suppressions",
        _search_suppressions,
        _obj(
            {
                "entries": {"type": "array", "items": _ref("Suppression")},
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
        _add_suppressions,
        _obj(
            {
                "results": {
                    "type": "array",
                    "items": _obj(
                        {
                            "address": _STR,
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
        _lift_suppression,
        _obj({"address": _STR, "list": _STR, "lifted": {"type": "boolean"}}),
        body=LiftBody,
        errors=(400, 404),
    ),
    Endpoint(
        "POST",
        "/api/suppressions/import",
        "Add many entries to one list: JSON, or a CSV body with ?list= (address[,reason]).",
        "suppressions",
        _import_suppressions,
        _obj({"added": _INT, "skipped": _INT, "invalid": _INT}),
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
        _export_suppressions,
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
        _list_held,
        _MESSAGES,
        query=(_DEALER_Q, _LIMIT),
        errors=(400, 404),
    ),
    Endpoint(
        "GET",
        "/api/held/{id}",
        "One held message: why, what to do, its header.",
        "held",
        _show_held,
        _ref("MessageDetail"),
        errors=(404,),
    ),
    Endpoint(
        "POST",
        "/api/held/{id}/release",
        "Deliver a held message now.",
        "held",
        _release_held,
        _ref("Message"),
        errors=(404, 409),
    ),
    Endpoint(
        "DELETE",
        "/api/held/{id}",
        "Delete a held message for good (logged with the reason).",
        "held",
        _delete_held,
        _ref("Deleted"),
        body=ReasonBody,
        errors=(400, 404),
    ),
    Endpoint(
        "GET",
        "/api/queue",
        "Stored messages, newest first.",
        "queue",
        _list_queue,
        _MESSAGES,
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
        _show_message,
        _ref("MessageDetail"),
        errors=(404,),
    ),
    Endpoint(
        "POST",
        "/api/queue/{id}/retry",
        "Try a queued or failed message again now.",
        "queue",
        _retry_message,
        _ref("Message"),
        errors=(404, 409),
    ),
    Endpoint(
        "DELETE",
        "/api/queue/{id}",
        "Delete a message for good (logged with the reason).",
        "queue",
        _delete_message,
        _ref("Deleted"),
        body=ReasonBody,
        errors=(400, 404),
    ),
    Endpoint(
        "POST",
        "/api/policies/reload",
        "Validate the policy directory and apply it only if all of it is valid (else 422).",
        "policies",
        _reload_policies,
        _obj(
            {
                "ok": {"type": "boolean"},
                "dealers": {"type": "array", "items": _STR},
                "problems": {"type": "array", "items": _STR},
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
        _show_consent,
        {"type": "object"},
        errors=(404,),
    ),
    Endpoint(
        "POST",
        "/api/dealers/{dealer}/consent",
        "Record one interaction or opt-in for an address (idempotent); returns its standing.",
        "consent",
        _record_consent,
        _obj({"recorded": {"type": "boolean"}, "standing": {"type": "object"}}),
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
            for name in _path_names(ep.path)
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
                "content": {JSON_TYPE: {"schema": _ref("Error")}},
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
            content: dict[str, Any] = {JSON_TYPE: {"schema": _ref(ep.body.__name__)}}
            if ep.body_csv:
                content["text/csv"] = {"schema": {"type": "string"}}
            op["requestBody"] = {"required": True, "content": content}
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Mailgate admin API",
            "version": __version__,
            "description": __doc__,
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


# -- routes ------------------------------------------------------------------------------


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The JSON error answer."""
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@dataclass
class AdminApi:
    """The routes of the admin API over ``ops``."""

    ops: AdminOps
    tokens: TokenCheck
    allow_remote: bool = False
    metrics: Metrics | None = None
    _spec: dict[str, Any] = field(default_factory=openapi)

    def _count(self, status: int) -> None:
        if self.metrics is None:
            return
        if status < 400:
            result = "ok"
        elif status in (401, 403):
            result = "unauthorized"
        elif status >= 500:
            result = "unavailable"
        else:
            result = "client-error"
        self.metrics.admin_requests.labels(result).inc()

    def routes(self) -> list[BaseRoute]:
        """One route per path, then a JSON 404 for every other ``/api`` path."""
        by_path: dict[str, dict[str, Endpoint]] = {}
        for ep in ENDPOINTS:
            by_path.setdefault(ep.path, {})[ep.method] = ep
        routes: list[BaseRoute] = [Route("/api/openapi.json", self._openapi, methods=["GET"])]
        for path, methods in by_path.items():
            routes.append(Route(path, self._dispatcher(methods), methods=_ALL_METHODS))
        routes.append(Route("/api", self._unknown, methods=_ALL_METHODS))
        routes.append(Route("/api/{rest:path}", self._unknown, methods=_ALL_METHODS))
        return routes

    async def _openapi(self, _request: Request) -> Response:
        return JSONResponse(self._spec)

    async def _unknown(self, request: Request) -> Response:
        denied = await self._access(request)
        if denied is not None:
            self._count(denied.status_code)
            return denied
        self._count(404)
        return error(404, f"no such endpoint: {request.url.path} (see GET /api/openapi.json)")

    async def _access(self, request: Request) -> JSONResponse | None:
        """Refuse remote clients and missing or unknown tokens."""
        host = request.client.host if request.client else None
        if not self.allow_remote and not _loopback(host):
            return error(
                403,
                "the admin API answers loopback clients only; run the command on the gateway "
                "host or set http.admin_allow_remote = true",
            )
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="mailgate"'}
        if scheme.lower() != "bearer" or not token.strip():
            if not self.tokens.configured:
                return error(
                    401, "no admin tokens exist yet: run `mailgate admin token create`", challenge
                )
            return error(
                401,
                "send Authorization: Bearer <token> (set MAILGATE_ADMIN_TOKEN for the CLI; "
                "create one with `mailgate admin token create`)",
                challenge,
            )
        name = await self.tokens.check(token.strip())
        if name is None:
            return error(401, "unknown or revoked token", challenge)
        request.state.actor = name
        return None

    def _dispatcher(
        self, methods: Mapping[str, Endpoint]
    ) -> Callable[[Request], Awaitable[Response]]:
        allowed = ", ".join(sorted(methods))

        async def dispatch(request: Request) -> Response:
            response = await answer(request)
            self._count(response.status_code)
            return response

        async def answer(request: Request) -> Response:
            denied = await self._access(request)
            if denied is not None:
                return denied
            ep = methods.get(request.method)
            if ep is None:
                return error(
                    405, f"{request.method} is not allowed here; use {allowed}", {"Allow": allowed}
                )
            try:
                call = await self._parse(request, ep)
                result = await ep.handler(self.ops, call)
            except AdminError as exc:
                return error(exc.status, str(exc))
            except StorageError as exc:
                log.warning("admin API %s %s: store error: %s", ep.method, ep.path, exc)
                return error(503, f"the store is unavailable ({exc}); retry in a moment")
            if isinstance(result, Response):
                return result
            return JSONResponse(result, status_code=ep.status)

        return dispatch

    async def _parse(self, request: Request, ep: Endpoint) -> Call:
        query = {p.name: p.parse(request.query_params.get(p.name)) for p in ep.query}
        raw = await request.body()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body: BaseModel | None = None
        if ep.body is not None:
            if ep.body_csv and content_type == "text/csv":
                pass
            elif content_type not in ("", JSON_TYPE):
                raise _Unsupported(f"send the body as {JSON_TYPE}")
            else:
                body = _validate(ep.body, raw)
        elif raw.strip() and raw.strip() not in (b"{}", b"null"):
            raise InvalidRequest("this endpoint takes no request body")
        return Call(
            path=dict(request.path_params),
            query=query,
            body=body,
            actor=str(getattr(request.state, "actor", "")),
            raw_body=raw,
            content_type=content_type,
        )


class _Unsupported(AdminError):
    status = 415


_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def _validate(model: type[BaseModel], raw: bytes) -> BaseModel:
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "body"
            problems.append(f"{where}: {err['msg']}")
        raise InvalidRequest("; ".join(problems)) from None
