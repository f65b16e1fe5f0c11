"""The JSON form of every record the admin API answers with (and the offline commands print).

One function per record, plain data in and JSON-ready dicts out; the shapes are the
``components/schemas`` of ``/api/openapi.json`` (``admin/schemas.py``). Times are ISO 8601
with their offset, or ``null``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway import __version__
from gateway.admin.ops import DealerReport, Health, ImportResult, RateReport, SuppressOutcome
from gateway.findings import CATALOGUE
from gateway.policy.store import ReloadResult
from gateway.reputation.records import (
    DailyCounts,
    DayCounts,
    DealerStatus,
    FeedbackEvent,
    StateChange,
    Suppression,
)
from gateway.types import MessageState, QueuedMessage

HEADER_LINES = 60  # header lines shown with a message; the rest are counted, not shown


def time_json(moment: datetime | None) -> str | None:
    """``moment`` in ISO 8601, or ``None``."""
    return moment.isoformat() if moment else None


def health_json(health: Health) -> dict[str, Any]:
    """The gateway's view of itself."""
    stats = health.stats
    return {
        "ok": health.ok,
        "node": health.node,
        "version": __version__,
        "storage": health.storage_error or "ok",
        "spool_full": health.spool_full,
        "dealers": health.dealers,
        "queue": {s.value: stats.count(s) for s in MessageState} if stats else {},
        "oldest_queued_at": time_json(stats.oldest_queued_at) if stats else None,
        "queued_bytes": stats.queued_bytes if stats else 0,
    }


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
        "note": change.note,
        "at": time_json(change.at),
        "expires_at": time_json(change.expires_at),
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
        "since": time_json(status.since),
        "expires_at": time_json(status.expires_at),
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
    return (row.counts if row else DayCounts()).as_dict()


def day_json(row: DailyCounts) -> dict[str, Any]:
    """One day's counters with the day."""
    return {"day": row.day.isoformat(), **row.counts.as_dict()}


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
        "created_at": time_json(entry.created_at),
        "expires_at": time_json(entry.expires_at),
        "lifted_at": time_json(entry.lifted_at),
        "lifted_by": entry.lifted_by,
        "lift_reason": entry.lift_reason,
    }


def outcome_json(outcome: SuppressOutcome) -> dict[str, str]:
    """What adding one address did."""
    return {"address": outcome.address, "result": outcome.result}


def import_json(result: ImportResult) -> dict[str, int]:
    """The counts of an import."""
    return {"added": result.added, "skipped": result.skipped, "invalid": result.invalid}


def event_json(event: FeedbackEvent) -> dict[str, Any]:
    """A feedback event."""
    return {
        "kind": event.kind.value,
        "message_id": event.message_id,
        "recipient": event.recipient,
        "at": time_json(event.at),
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
        "received_at": time_json(message.received_at),
        "updated_at": time_json(message.updated_at),
        "attempts": message.attempts,
        "next_attempt_at": time_json(message.next_attempt_at),
        "last_error": message.last_error,
        "findings": list(message.findings),
        "note": message.note,
        "size": message.size,
        "system": message.system,
    }
    if detail:
        out["findings_explained"] = [finding_json(code) for code in message.findings]
        head = message.data.split(b"\r\n\r\n", 1)[0].splitlines()
        out["header"] = [line.decode("utf-8", "replace") for line in head[:HEADER_LINES]]
        out["header_truncated"] = len(head) > HEADER_LINES
    return out


def deleted_json(message: QueuedMessage) -> dict[str, Any]:
    """A message deleted for good."""
    return {"id": message.id, "deleted": True}


def reload_json(result: ReloadResult) -> dict[str, Any]:
    """What a policy reload did (the problems when the set was refused)."""
    return {
        "ok": result.ok,
        "dealers": sorted(result.policy_set.dealers),
        "problems": [str(p) for p in result.problems],
    }
