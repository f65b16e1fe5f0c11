"""Schemathesis hooks for the API contract test: rules a JSON Schema cannot state.

A consent event is not dated after tomorrow (B9) and a finance sale's last payment is not
before the sale: the handler refuses both with a 400 naming the field, and
``tests/unit/test_consent_rows.py`` tests those refusals. A schema can compare a value with
neither the clock nor a sibling field, so a generator reading the description alone would
call such a body valid. For the cases it means to be valid (and only those) this hook moves
the dates into the range the handler takes; every other check, and every case meant to be
refused, is left as generated.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import schemathesis
from schemathesis import Case, GenerationMode, HookContext

CONSENT_PATH = "/api/dealers/{dealer}/consent"


def _moment(text: object) -> datetime | None:
    """``text`` as an aware time (a bare day is its UTC midnight), or None if it is not one."""
    if not isinstance(text, str):
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


@schemathesis.hook
def map_case(context: HookContext, case: Case) -> Case:
    positive = case.meta is None or case.meta.generation.mode is GenerationMode.POSITIVE
    if not positive or case.operation.path != CONSENT_PATH or not isinstance(case.body, dict):
        return case
    body = dict(case.body)
    # Yesterday in UTC is before "tomorrow" in every dealer's time zone.
    latest = datetime.now(UTC) - timedelta(days=1)
    on = _moment(body.get("date"))
    if on is not None and on > latest:
        body["date"] = latest.date().isoformat()
        on = _moment(body["date"])
    paid = _moment(body.get("last_payment"))
    if paid is not None and on is not None:
        if paid > latest:
            paid = latest
        body["last_payment"] = max(paid.date(), on.date()).isoformat()
    case.body = body
    return case
