"""The reports section of the PostgreSQL backend: tallies over the store, claims, opt-outs.

``ReportSection`` counts what the deliverability report and the status page show (the
sent log by day, recipient domain and state; feedback events; duplicate drops; finding
sets) with one grouped query each, and keeps the claims of report periods and the
contacts' opt-outs. The claim is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE``: two
nodes claiming at once serialize on the primary key, and the second sees the first's row.
Days are UTC; a recipient's domain is what follows its first ``@``, lower-cased, the same
expression as the SQLite backend.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from gateway.reports.records import (
    DeliveryTally,
    DropTally,
    EventTally,
    FindingTally,
    ReportClaim,
)
from gateway.storage.postgres.connection import aware
from gateway.storage.postgres.section import Section
from gateway.types import DealerId, MessageState


def _domain(column: str) -> str:
    return f"lower(substring({column} from position('@' in {column}) + 1))"


_DELIVERIES = (
    "SELECT (received_at AT TIME ZONE 'UTC')::date AS day,"
    f" {_domain('rcpt')} AS domain, state,"
    " ((state IN ('delivered', 'failed') AND attempts > 1)"
    " OR (state = 'queued' AND attempts > 0)) AS retried, count(*) AS n"
    " FROM messages WHERE dealer_id = $1 AND NOT system AND received_at >= $2"
    " AND received_at < $3 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
)
_EVENTS = (
    f"SELECT (at AT TIME ZONE 'UTC')::date AS day, {_domain('recipient')} AS domain, kind,"
    " count(*) AS n FROM feedback_events WHERE dealer_id = $1 AND at >= $2 AND at < $3"
    " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
)
_DROPS = (
    "SELECT kind, subject, count(*) AS n FROM dup_drops"
    " WHERE dealer_id = $1 AND at >= $2 AND at < $3"
    " GROUP BY kind, subject ORDER BY n DESC, kind, subject"
)
_FINDINGS = (
    "SELECT findings, state, count(*) AS n FROM messages"
    " WHERE dealer_id = $1 AND NOT system AND received_at >= $2 AND received_at < $3"
    " AND cardinality(findings) > 0 GROUP BY findings, state ORDER BY n DESC, findings, state"
)


class ReportSection(Section):
    """The protocol's reports section (see ``Storage`` for the contract)."""

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._conn() as conn:
            return list(await conn.fetch(sql, *args))

    async def delivery_tallies(
        self, dealer_id: DealerId, since: datetime, until: datetime
    ) -> list[DeliveryTally]:
        """The dealer's messages received in ``[since, until)``, by day, domain and state."""
        rows = await self._fetch(_DELIVERIES, dealer_id, aware(since), aware(until))
        return [
            DeliveryTally(r["day"], r["domain"], MessageState(r["state"]), r["retried"], r["n"])
            for r in rows
        ]

    async def event_tallies(
        self, dealer_id: DealerId, since: datetime, until: datetime
    ) -> list[EventTally]:
        """The dealer's feedback events in ``[since, until)``, by day, domain and kind."""
        rows = await self._fetch(_EVENTS, dealer_id, aware(since), aware(until))
        return [EventTally(r["day"], r["domain"], r["kind"], r["n"]) for r in rows]

    async def drop_tallies(
        self, dealer_id: DealerId, since: datetime, until: datetime
    ) -> list[DropTally]:
        """The dealer's duplicate and cap drops in ``[since, until)``, by kind and subject."""
        rows = await self._fetch(_DROPS, dealer_id, aware(since), aware(until))
        return [DropTally(r["kind"], r["subject"], r["n"]) for r in rows]

    async def finding_tallies(
        self, dealer_id: DealerId, since: datetime, until: datetime
    ) -> list[FindingTally]:
        """The dealer's messages with findings received in ``[since, until)``, by set and state."""
        rows = await self._fetch(_FINDINGS, dealer_id, aware(since), aware(until))
        return [FindingTally(tuple(r["findings"]), MessageState(r["state"]), r["n"]) for r in rows]

    async def claim_report(
        self, dealer_id: DealerId, period: str, node: str, now: datetime, lease: timedelta
    ) -> bool:
        """Take on the period's report, unless it is done or another node's claim is fresh."""
        async with self._conn() as conn:
            claimed = await conn.fetchval(
                "INSERT INTO report_periods (dealer_id, period, node, claimed_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (dealer_id, period) DO UPDATE"
                " SET node = excluded.node, claimed_at = excluded.claimed_at"
                " WHERE report_periods.outcome = '' AND report_periods.claimed_at <= $5"
                " RETURNING true",
                dealer_id,
                period,
                node,
                aware(now),
                aware(now - lease),
            )
        return bool(claimed)

    async def finish_report(
        self, dealer_id: DealerId, period: str, node: str, outcome: str, now: datetime
    ) -> bool:
        """Record the outcome of ``node``'s open claim; ``False`` if it no longer holds it."""
        if not outcome:
            raise ValueError("a finished report needs an outcome")
        changed = await self._execute(
            "UPDATE report_periods SET outcome = $1, done_at = $2"
            " WHERE dealer_id = $3 AND period = $4 AND node = $5 AND outcome = ''",
            outcome,
            aware(now),
            dealer_id,
            period,
            node,
        )
        return changed == 1

    async def get_report_claim(self, dealer_id: DealerId, period: str) -> ReportClaim | None:
        """The claim of one dealer's period, or ``None``."""
        rows = await self._fetch(
            "SELECT dealer_id, period, node, claimed_at, outcome, done_at FROM report_periods"
            " WHERE dealer_id = $1 AND period = $2",
            dealer_id,
            period,
        )
        if not rows:
            return None
        r = rows[0]
        return ReportClaim(
            r["dealer_id"], r["period"], r["node"], r["claimed_at"], r["outcome"], r["done_at"]
        )

    async def set_report_optout(
        self, dealer_id: DealerId, address: str, opted_out: bool, now: datetime
    ) -> bool:
        """Stop (or restart) the reports to one contact; whether anything changed."""
        key = address.strip().lower()
        if opted_out:
            changed = await self._execute(
                "INSERT INTO report_optouts (dealer_id, address, at) VALUES ($1, $2, $3)"
                " ON CONFLICT (dealer_id, address) DO NOTHING",
                dealer_id,
                key,
                aware(now),
            )
        else:
            changed = await self._execute(
                "DELETE FROM report_optouts WHERE dealer_id = $1 AND address = $2",
                dealer_id,
                key,
            )
        return changed > 0

    async def report_optouts(self, dealer_id: DealerId) -> frozenset[str]:
        """The dealer's contacts who asked for no more reports (lower-cased)."""
        rows = await self._fetch(
            "SELECT address FROM report_optouts WHERE dealer_id = $1", dealer_id
        )
        return frozenset(r["address"] for r in rows)
