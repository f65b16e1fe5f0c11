"""One handler per admin API endpoint: the parsed request in, an ``AdminOps`` call, JSON out.

A handler gets the request already parsed and validated (``Call``: path and query values
typed by the endpoint's ``Param``s, the body as its model, the token's name) and returns
what ``admin/views.py`` renders, or a ``Response`` of its own (a CSV stream, a 422). It
decides nothing itself: every rule lives in ``AdminOps`` (``admin/ops.py``), so the offline
commands that call the same operations behave the same. The handler's name (without a
leading underscore) is the endpoint's OpenAPI ``operationId``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.responses import JSONResponse, StreamingResponse

from gateway.admin import views
from gateway.admin.bodies import (
    ConsentEventBody,
    DealerChangeBody,
    ImportBody,
    LiftBody,
    ReasonBody,
    SuppressBody,
    SuspendBody,
)
from gateway.admin.ops import MAX_IMPORT, AdminOps, InvalidRequest
from gateway.clock import parse_duration
from gateway.consent.csvformat import RowError, parse_row
from gateway.consent.ops import ConsentOps, explanation_json
from gateway.consent.rules import Preference
from gateway.mail.addresslists import CsvFormatError, RowProblem
from gateway.reputation.csvformat import CSV_FIELDS, import_rows, suppression_row
from gateway.reputation.records import EventKind
from gateway.types import MessageState


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

_M = TypeVar("_M", bound=BaseModel)


def _body(call: Call, model: type[_M]) -> _M:
    assert isinstance(call.body, model)
    return call.body


# -- health and policies -----------------------------------------------------------------


async def health(ops: AdminOps, _call: Call) -> Any:
    """``GET /api/health``."""
    return views.health_json(await ops.health())


async def reload_policies(ops: AdminOps, call: Call) -> Any:
    """``POST /api/policies/reload``: 200 when applied, 422 (same shape) when refused."""
    result = await ops.reload(call.by())
    return JSONResponse(views.reload_json(result), status_code=200 if result.ok else 422)


# -- dealers -----------------------------------------------------------------------------


async def list_dealers(ops: AdminOps, _call: Call) -> Any:
    """``GET /api/dealers``."""
    return {"dealers": [views.dealer_json(r) for r in await ops.dealers()]}


async def show_dealer(ops: AdminOps, call: Call) -> Any:
    """``GET /api/dealers/{dealer}``."""
    report = await ops.dealer(call.path["dealer"], history=call.query["history"])
    return views.dealer_json(report, detail=True)


async def suspend_dealer(ops: AdminOps, call: Call) -> Any:
    """``POST /api/dealers/{dealer}/suspend``."""
    body = _body(call, SuspendBody)
    duration: timedelta | None = None
    if body.duration:
        try:
            duration = parse_duration(body.duration)
        except ValueError as exc:
            raise InvalidRequest(f"for: {exc}") from None
    change = await ops.suspend(call.path["dealer"], body.reason, call.by(), duration, body.note)
    return views.change_json(change)


async def resume_dealer(ops: AdminOps, call: Call) -> Any:
    """``POST /api/dealers/{dealer}/resume``."""
    body = _body(call, DealerChangeBody)
    change = await ops.resume(call.path["dealer"], body.reason, call.by(), body.note)
    return views.change_json(change)


async def dealer_events(ops: AdminOps, call: Call) -> Any:
    """``GET /api/dealers/{dealer}/events``."""
    kinds = frozenset(EventKind(k) for k in [call.query["kind"]] if k)
    events, changes = await ops.events(
        call.path["dealer"], kinds, call.query["since"], call.query["limit"]
    )
    return {
        "dealer": call.path["dealer"],
        "events": [views.event_json(e) for e in events],
        "transitions": [views.change_json(c) for c in changes],
    }


async def dealer_status_link(ops: AdminOps, call: Call) -> Any:
    """``GET /api/dealers/{dealer}/status-link``."""
    return {"dealer": call.path["dealer"], "url": ops.status_link(call.path["dealer"])}


async def dealer_daily(ops: AdminOps, call: Call) -> Any:
    """``GET /api/dealers/{dealer}/daily``."""
    rows = await ops.daily(call.path["dealer"], call.query["days"])
    return {"dealer": call.path["dealer"], "days": [views.day_json(r) for r in rows]}


# -- suppressions ------------------------------------------------------------------------


async def search_suppressions(ops: AdminOps, call: Call) -> Any:
    """``GET /api/suppressions``."""
    entries = await ops.suppressions(
        call.query["list"],
        query=call.query["q"] or "",
        include_inactive=call.query["all"],
        after=call.query["after"],
        limit=call.query["limit"],
    )
    return {
        "entries": [views.suppression_json(e) for e in entries],
        "next_after": entries[-1].id if len(entries) == call.query["limit"] else None,
    }


async def add_suppressions(ops: AdminOps, call: Call) -> Any:
    """``POST /api/suppressions``."""
    body = _body(call, SuppressBody)
    expires = body.expires_at
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    outcomes = await ops.suppress(body.list, body.addresses, body.reason, call.by(), expires)
    return {"results": [views.outcome_json(o) for o in outcomes]}


async def lift_suppression(ops: AdminOps, call: Call) -> Any:
    """``DELETE /api/suppressions``."""
    body = _body(call, LiftBody)
    address = await ops.lift(body.list, body.address, body.reason, call.by())
    return {"address": address, "list": body.list, "lifted": True}


async def import_suppressions(ops: AdminOps, call: Call) -> Any:
    """``POST /api/suppressions/import``: a JSON body, or a CSV body with ``?list=``."""
    if call.body is None:  # text/csv
        list_name = call.query["list"]
        reason = call.query["reason"] or "imported"
        try:
            text = call.raw_body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidRequest("the CSV body must be UTF-8") from None
        try:
            entries = list(import_rows(text))
        except CsvFormatError as exc:
            raise InvalidRequest(f"CSV header: {exc}") from None
        if len(entries) > MAX_IMPORT:
            raise InvalidRequest(f"at most {MAX_IMPORT} rows per request; send batches")
        rows = [e for e in entries if not isinstance(e, RowProblem)]
        unreadable = len(entries) - len(rows)  # counted as invalid, like bad addresses
        source = f"import:api:{call.actor}"
    else:
        body = _body(call, ImportBody)
        list_name, reason = body.list, body.reason
        rows = [(e.address, e.reason) for e in body.entries]
        unreadable = 0
        source = f"import:{body.source or 'api'}"
    result = await ops.import_entries(list_name, rows, reason, source)
    return views.import_json(replace(result, invalid=result.invalid + unreadable))


async def export_suppressions(ops: AdminOps, call: Call) -> Any:
    """``GET /api/suppressions/export``: CSV, streamed a page at a time."""
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


# -- held and queued messages ------------------------------------------------------------


async def list_held(ops: AdminOps, call: Call) -> Any:
    """``GET /api/held``."""
    rows = await ops.messages(MessageState.HELD, call.query["dealer"], call.query["limit"])
    return {"messages": [views.message_json(m) for m in rows]}


async def show_held(ops: AdminOps, call: Call) -> Any:
    """``GET /api/held/{id}``."""
    return views.message_json(await ops.message(call.path["id"], held=True), detail=True)


async def release_held(ops: AdminOps, call: Call) -> Any:
    """``POST /api/held/{id}/release``."""
    return views.message_json(await ops.release(call.path["id"], call.by()))


async def delete_held(ops: AdminOps, call: Call) -> Any:
    """``DELETE /api/held/{id}``."""
    body = _body(call, ReasonBody)
    message = await ops.delete(call.path["id"], body.reason, call.by(), held=True)
    return views.deleted_json(message)


async def list_queue(ops: AdminOps, call: Call) -> Any:
    """``GET /api/queue``."""
    state = MessageState(call.query["state"]) if call.query["state"] else None
    rows = await ops.messages(state, call.query["dealer"], call.query["limit"])
    return {"messages": [views.message_json(m) for m in rows]}


async def show_message(ops: AdminOps, call: Call) -> Any:
    """``GET /api/queue/{id}``."""
    return views.message_json(await ops.message(call.path["id"]), detail=True)


async def retry_message(ops: AdminOps, call: Call) -> Any:
    """``POST /api/queue/{id}/retry``."""
    return views.message_json(await ops.retry(call.path["id"], call.by()))


async def delete_message(ops: AdminOps, call: Call) -> Any:
    """``DELETE /api/queue/{id}``."""
    body = _body(call, ReasonBody)
    return views.deleted_json(await ops.delete(call.path["id"], body.reason, call.by()))


# -- consent (the rules: gateway/consent/rules.py; the store: gateway/consent/ops.py) ----


async def show_consent(ops: AdminOps, call: Call) -> Any:
    """``GET /api/dealers/{dealer}/consent/{address}``."""
    dealer = ops.dealer_policy(call.path["dealer"])
    shown = await ConsentOps(ops.storage, ops.clock).explain(dealer, call.path["address"])
    return explanation_json(shown)


async def record_consent(ops: AdminOps, call: Call) -> Any:
    """``POST /api/dealers/{dealer}/consent``: one row of ``consent import``, idempotent."""
    dealer = ops.dealer_policy(call.path["dealer"])
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
