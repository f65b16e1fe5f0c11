"""One handler per admin API endpoint: the parsed request in, an ``AdminOps`` call, JSON out.

A handler gets the request already parsed and validated (``Call``: path and query values
typed by the endpoint's ``Param``s, the body as its model, the token's name) and returns
what ``admin/views.py`` renders, or a ``Response`` of its own (a CSV stream, a 422). It
decides nothing itself: every rule lives in ``AdminOps`` (``admin/ops.py``), so the offline
commands that call the same operations behave the same. The handler's name (without a
leading underscore) is the endpoint's OpenAPI ``operationId``.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.responses import JSONResponse, StreamingResponse

from gateway.admin import views
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
from gateway.admin.ops import BLANK, MAX_IMPORT, AdminOps, InvalidRequest, NotFound
from gateway.clock import parse_duration
from gateway.consent.crm import STATEMENT_FIELDS, statement_json
from gateway.consent.csvformat import RowContext, RowError, parse_row
from gateway.consent.ops import ConsentOps, explanation_json
from gateway.consent.reports import (
    LEDGER_FIELDS,
    STANDING_FIELDS,
    csv_text,
    ledger_json,
    refusal_json,
    standing_json,
)
from gateway.consent.rules import Preference
from gateway.mail.addresslists import CsvFormatError, RowProblem
from gateway.preflight.core import Submission
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
    dealer: str = ""  # set when a dealer's status link, not an admin token, authorised it

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
    """``POST /api/suppressions/import``: entries in a JSON body."""
    body = _body(call, ImportBody)
    rows = [(e.address, e.reason) for e in body.entries]
    source = f"import:{body.source or 'api'}"
    return views.import_json(await ops.import_entries(body.list, rows, body.reason, source))


async def import_suppressions_csv(ops: AdminOps, call: Call) -> Any:
    """``POST /api/suppressions/import/csv?list=``: the rows of a CSV body."""
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
    reason = (call.query["reason"] or "").strip(BLANK) or "imported"
    source = f"import:api:{call.actor}"
    result = await ops.import_entries(call.query["list"], rows, reason, source)
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
        context = RowContext(ops.clock.now(), dealer.dealer_id, {dealer.dealer_id: dealer.consent})
        item = parse_row(body.model_dump(), context)
    except RowError as exc:
        raise InvalidRequest(str(exc)) from None
    consent = ConsentOps(ops.storage, ops.clock)
    if isinstance(item, Preference):
        changed = await consent.record((), (item,))
    else:
        changed = await consent.record((item,))
    shown = await consent.explain(dealer, item.address)
    return {"recorded": bool(changed), "standing": explanation_json(shown)}


def _within(call: Call) -> timedelta:
    try:
        within = parse_duration(call.query["within"])
    except (ValueError, OverflowError):
        raise InvalidRequest(
            f"within: {call.query['within']!r} is not a duration (30d, 8w)"
        ) from None
    if within < timedelta(0) or within > timedelta(days=3660):
        raise InvalidRequest("within: between 0 days and 10 years")
    return within


def _json_stream(key: str, pages: AsyncIterator[list[dict[str, Any]]]) -> StreamingResponse:
    """``{"<key>": [...]}`` written a page at a time (an export may hold millions)."""

    async def body() -> AsyncIterator[str]:
        yield f'{{"{key}": ['
        first = True
        async for page in pages:
            for item in page:
                yield ("" if first else ",\n") + json.dumps(item)
                first = False
        yield "]}\n"

    return StreamingResponse(body(), media_type="application/json")


def _csv_stream(fields: tuple[str, ...], pages: AsyncIterator[list[dict[str, Any]]]) -> Any:
    async def body() -> AsyncIterator[str]:
        header = True
        async for page in pages:
            for chunk in csv_text(fields, page, header):
                yield chunk
            header = False
        if header:
            yield "".join(csv_text(fields, ()))

    return StreamingResponse(body(), media_type="text/csv; charset=utf-8")


async def _standings(
    ops: AdminOps, call: Call, expiring: bool
) -> AsyncIterator[list[dict[str, Any]]]:
    dealer = ops.dealer_policy(call.path["dealer"])
    consent = ConsentOps(ops.storage, ops.clock)
    pages = consent.expiring(dealer, _within(call)) if expiring else consent.locked(dealer)
    async for page in pages:
        yield [standing_json(s) for s in page]


async def consent_expiring(ops: AdminOps, call: Call) -> Any:
    """``GET /api/dealers/{dealer}/consent-expiring``: consent that ends within ``within``."""
    _within(call)
    ops.dealer_policy(call.path["dealer"])  # 400/404 before the stream starts
    return _json_stream("recipients", _standings(ops, call, True))


async def consent_expiring_csv(ops: AdminOps, call: Call) -> Any:
    """``GET /api/dealers/{dealer}/consent-expiring.csv``."""
    _within(call)
    ops.dealer_policy(call.path["dealer"])
    return _csv_stream(STANDING_FIELDS, _standings(ops, call, True))


async def consent_locked(ops: AdminOps, call: Call) -> Any:
    """``GET /api/dealers/{dealer}/consent-locked``: who may not be mailed, and why."""
    ops.dealer_policy(call.path["dealer"])
    return _json_stream("recipients", _standings(ops, call, False))


async def consent_locked_csv(ops: AdminOps, call: Call) -> Any:
    """``GET /api/dealers/{dealer}/consent-locked.csv``."""
    ops.dealer_policy(call.path["dealer"])
    return _csv_stream(STANDING_FIELDS, _standings(ops, call, False))


async def _ledger(ops: AdminOps, call: Call) -> AsyncIterator[list[dict[str, Any]]]:
    dealer = ops.dealer_policy(call.path["dealer"])
    address = call.query["address"] or None
    pages = ConsentOps(ops.storage, ops.clock).evidence(
        dealer, address, call.query["since"], call.query["until"]
    )
    async for page in pages:
        yield [ledger_json(e) for e in page]


async def consent_evidence(ops: AdminOps, call: Call) -> Any:
    """``GET /api/dealers/{dealer}/consent-evidence``: the basis of each commercial message."""
    ops.dealer_policy(call.path["dealer"])
    return _json_stream("entries", _ledger(ops, call))


async def consent_evidence_csv(ops: AdminOps, call: Call) -> Any:
    """``GET /api/dealers/{dealer}/consent-evidence.csv``."""
    ops.dealer_policy(call.path["dealer"])
    return _csv_stream(LEDGER_FIELDS, _ledger(ops, call))


async def consent_refusals(ops: AdminOps, call: Call) -> Any:
    """``GET /api/dealers/{dealer}/consent-refusals``: recipients left out for want of consent."""
    dealer = ops.dealer_policy(call.path["dealer"])
    found = await ConsentOps(ops.storage, ops.clock).refusals(
        dealer, call.query["since"], call.query["limit"]
    )
    return {"refusals": [refusal_json(r) for r in found]}


async def _statements(ops: AdminOps, call: Call) -> AsyncIterator[list[dict[str, Any]]]:
    dealer = ops.dealer_policy(call.path["dealer"])
    vocabulary = dealer.consent.crm_vocabulary
    pages = ConsentOps(ops.storage, ops.clock).statements(dealer, call.query["since"])
    async for page in pages:
        yield [statement_json(s, vocabulary) for s in page]


async def consent_statements(ops: AdminOps, call: Call) -> Any:
    """``GET /api/dealers/{dealer}/consent-statements``: unsubscribes, complaints, withdrawals."""
    ops.dealer_policy(call.path["dealer"])
    return _json_stream("statements", _statements(ops, call))


async def consent_statements_csv(ops: AdminOps, call: Call) -> Any:
    """``GET /api/dealers/{dealer}/consent-statements.csv``, in the CRM's words."""
    ops.dealer_policy(call.path["dealer"])
    return _csv_stream(STATEMENT_FIELDS, _statements(ops, call))


# -- checking a message before it is sent (gateway/preflight/) --------------------------


def check_submission(
    content_type: str, raw: bytes, subject: str, body: CheckBody | None
) -> Submission:
    """The message of a check request: a raw body, or one of the JSON body's forms.

    ``message/rfc822`` (any other type without a ``body``): ``raw`` is the message;
    ``text/html``: ``raw`` is a template, with ``subject``. Raises ``InvalidRequest``.
    """
    if body is None:
        if content_type == "text/html":
            try:
                html = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest("a text/html body must be UTF-8") from None
            return Submission(html=html, subject=subject)
        return Submission(raw=raw)
    given = [name for name in ("eml", "eml_base64", "html") if getattr(body, name) is not None]
    if len(given) != 1:
        raise InvalidRequest("give exactly one of eml, eml_base64 and html")
    if body.html is not None:
        return Submission(html=body.html, subject=body.subject, with_text=body.with_text)
    if body.eml is not None:
        return Submission(raw=body.eml.encode("utf-8", "replace"))
    try:
        return Submission(raw=base64.b64decode(body.eml_base64 or "", validate=True))
    except (binascii.Error, ValueError):
        raise InvalidRequest("eml_base64: not base64") from None


async def check_message(ops: AdminOps, call: Call) -> Any:
    """``POST /api/check``: what the gateway would do with a message; nothing is stored."""
    dealer_id = call.dealer or call.query["dealer"] or ""
    if not dealer_id:
        raise InvalidRequest("give the dealer whose policy applies: ?dealer=<id>")
    dealer = ops.dealer_policy(dealer_id)
    if ops.preflight is None:
        raise NotFound("checks are not available on this gateway")
    body = _body(call, CheckBody) if call.body is not None else None
    submission = check_submission(call.content_type, call.raw_body, call.query["subject"] or "",
                                  body)  # fmt: skip
    return views.checked_json(await ops.preflight.check(dealer, submission))
