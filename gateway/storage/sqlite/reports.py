"""The reports section of the SQLite backend: tallies over the store, report claims, opt-outs.

``ReportSection`` counts what the deliverability report and the status page show (the
sent log by day, recipient domain and state; feedback events; duplicate drops; finding
sets) with one grouped query each over the indexes the queue and feedback sections keep
(``messages_dealer_received``, ``feedback_events_dealer``, ``dup_drops_dealer_at``), and
keeps the claims of report periods and the contacts' opt-outs. A recipient's domain is
what follows its first ``@``, lower-cased, the same expression as the PostgreSQL backend.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime, timedelta
from typing import Any

from gateway.reports.records import (
    DeliveryTally,
    DropTally,
    EventTally,
    FindingTally,
    ReportClaim,
)
from gateway.storage.sqlite.connection import from_us, opt_from_us, to_us, write
from gateway.storage.sqlite.section import Section
from gateway.types import DealerId, MessageState

_DAY_US = 86_400_000_000
_EPOCH = date(1970, 1, 1)


def _day(value: int) -> date:
    return _EPOCH + timedelta(days=value)


def _domain(column: str) -> str:
    return f"lower(substr({column}, instr({column}, '@') + 1))"


_DELIVERIES = (
    f"SELECT received_at / {_DAY_US} AS day, {_domain('rcpt')} AS domain, state,"
    " CASE WHEN (state IN ('delivered', 'failed') AND attempts > 1)"
    " OR (state = 'queued' AND attempts > 0) THEN 1 ELSE 0 END AS retried, count(*)"
    " FROM messages WHERE dealer_id = ? AND system = 0 AND received_at >= ? AND received_at < ?"
    " GROUP BY day, domain, state, retried ORDER BY day, domain, state, retried"
)
_EVENTS = (
    f"SELECT at / {_DAY_US} AS day, {_domain('recipient')} AS domain, kind, count(*)"
    " FROM feedback_events WHERE dealer_id = ? AND at >= ? AND at < ?"
    " GROUP BY day, domain, kind ORDER BY day, domain, kind"
)
_DROPS = (
    "SELECT kind, subject, count(*) FROM dup_drops WHERE dealer_id = ? AND at >= ? AND at < ?"
    " GROUP BY kind, subject ORDER BY count(*) DESC, kind, subject"
)
_FINDINGS = (
    "SELECT findings, state, count(*) FROM messages"
    " WHERE dealer_id = ? AND system = 0 AND received_at >= ? AND received_at < ?"
    " AND findings != '[]' GROUP BY findings, state ORDER BY count(*) DESC, findings, state"
)


class ReportSection(Section):
    """The protocol's reports section (see ``Storage`` for the contract)."""

    async def _select(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        self._check_open()

        def select(conn: sqlite3.Connection) -> list[Any]:
            return list(conn.execute(sql, params))

        return await self._reader.run(select)

    async def delivery_tallies(
        self, dealer_id: DealerId, since: datetime, until: datetime
    ) -> list[DeliveryTally]:
        """The dealer's messages received in ``[since, until)``, by day, domain and state."""
        rows = await self._select(_DELIVERIES, (dealer_id, to_us(since), to_us(until)))
        return [DeliveryTally(_day(r[0]), r[1], MessageState(r[2]), bool(r[3]), r[4]) for r in rows]

    async def event_tallies(
        self, dealer_id: DealerId, since: datetime, until: datetime
    ) -> list[EventTally]:
        """The dealer's feedback events in ``[since, until)``, by day, domain and kind."""
        rows = await self._select(_EVENTS, (dealer_id, to_us(since), to_us(until)))
        return [EventTally(_day(r[0]), r[1], r[2], r[3]) for r in rows]

    async def drop_tallies(
        self, dealer_id: DealerId, since: datetime, until: datetime
    ) -> list[DropTally]:
        """The dealer's duplicate and cap drops in ``[since, until)``, by kind and subject."""
        rows = await self._select(_DROPS, (dealer_id, to_us(since), to_us(until)))
        return [DropTally(r[0], r[1], r[2]) for r in rows]

    async def finding_tallies(
        self, dealer_id: DealerId, since: datetime, until: datetime
    ) -> list[FindingTally]:
        """The dealer's messages with findings received in ``[since, until)``, by set and state."""
        rows = await self._select(_FINDINGS, (dealer_id, to_us(since), to_us(until)))
        return [FindingTally(tuple(json.loads(r[0])), MessageState(r[1]), r[2]) for r in rows]

    async def claim_report(
        self, dealer_id: DealerId, period: str, node: str, now: datetime, lease: timedelta
    ) -> bool:
        """Take on the period's report, unless it is done or another node's claim is fresh."""
        return await self._update(
            "INSERT INTO report_periods (dealer_id, period, node, claimed_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (dealer_id, period) DO UPDATE"
            " SET node = excluded.node, claimed_at = excluded.claimed_at"
            " WHERE report_periods.outcome = '' AND report_periods.claimed_at <= ?",
            (dealer_id, period, node, to_us(now), to_us(now - lease)),
        )

    async def finish_report(
        self, dealer_id: DealerId, period: str, node: str, outcome: str, now: datetime
    ) -> bool:
        """Record the outcome of ``node``'s open claim; ``False`` if it no longer holds it."""
        if not outcome:
            raise ValueError("a finished report needs an outcome")
        return await self._update(
            "UPDATE report_periods SET outcome = ?, done_at = ?"
            " WHERE dealer_id = ? AND period = ? AND node = ? AND outcome = ''",
            (outcome, to_us(now), dealer_id, period, node),
        )

    async def get_report_claim(self, dealer_id: DealerId, period: str) -> ReportClaim | None:
        """The claim of one dealer's period, or ``None``."""
        rows = await self._select(
            "SELECT dealer_id, period, node, claimed_at, outcome, done_at FROM report_periods"
            " WHERE dealer_id = ? AND period = ?",
            (dealer_id, period),
        )
        if not rows:
            return None
        r = rows[0]
        return ReportClaim(r[0], r[1], r[2], from_us(r[3]), r[4], opt_from_us(r[5]))

    async def set_report_optout(
        self, dealer_id: DealerId, address: str, opted_out: bool, now: datetime
    ) -> bool:
        """Stop (or restart) the reports to one contact; whether anything changed."""
        key = address.strip().lower()
        if opted_out:
            return await self._update(
                "INSERT INTO report_optouts (dealer_id, address, at) VALUES (?, ?, ?)"
                " ON CONFLICT (dealer_id, address) DO NOTHING",
                (dealer_id, key, to_us(now)),
            )
        self._check_open()

        def delete(conn: sqlite3.Connection) -> bool:
            return (
                conn.execute(
                    "DELETE FROM report_optouts WHERE dealer_id = ? AND address = ?",
                    (dealer_id, key),
                ).rowcount
                > 0
            )

        return await self._writer.run(write(delete))

    async def report_optouts(self, dealer_id: DealerId) -> frozenset[str]:
        """The dealer's contacts who asked for no more reports (lower-cased)."""
        rows = await self._select(
            "SELECT address FROM report_optouts WHERE dealer_id = ?", (dealer_id,)
        )
        return frozenset(r[0] for r in rows)
