"""The feedback section of the PostgreSQL backend: events, suppressions, counters, dealer state.

Owns ``FeedbackSection`` (the protocol's "feedback" section) and the statements other
sections run inside their own transactions: ``bump_counts`` (a final delivery outcome
counts on its day) and ``open_suppression``. What a suppression or a state change writes
is decided by ``gateway/reputation/rules.py``; here it is only read and written.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from gateway.errors import StorageUnavailable
from gateway.mail.addresses import normalise
from gateway.reputation.records import (
    GLOBAL,
    Actor,
    DailyCounts,
    DayCounts,
    DealerState,
    DealerStatus,
    EventKind,
    Evidence,
    FeedbackEvent,
    StateChange,
    Suppression,
    event_counts,
)
from gateway.reputation.rules import plan_suppression, plan_transition
from gateway.storage.postgres.connection import aware
from gateway.storage.postgres.section import Section
from gateway.types import DealerId, MessageId

_SUPPRESSION_COLUMNS = (
    "id, scope, address, reason, source, created_at, expires_at, lifted_at, lifted_by, lift_reason"
)
_STATUS_COLUMNS = (
    "dealer_id, state, reason, actor, since, expires_at, counts_from, baseline, change_id"
)


# Reads of the open suppression entry before giving up. A retry follows an insert lost to
# another node's new open entry, which the next read sees and locks; losing three times
# needs that entry lifted and yet another opened in between, twice over.
_SUPPRESSION_TRIES = 3


class _StateMoved(Exception):
    """Another node recorded the dealer's first state at the same time; roll back."""


def _suppression(row: Any) -> Suppression:
    return Suppression(
        id=int(row["id"]),
        dealer_id=DealerId(row["scope"]) if row["scope"] else None,
        address=row["address"],
        reason=row["reason"],
        source=row["source"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        lifted_at=row["lifted_at"],
        lifted_by=row["lifted_by"],
        lift_reason=row["lift_reason"],
    )


def _status(row: Any) -> DealerStatus:
    return DealerStatus(
        dealer_id=DealerId(row["dealer_id"]),
        state=DealerState(row["state"]),
        reason=row["reason"],
        actor=Actor(row["actor"]),
        since=row["since"],
        expires_at=row["expires_at"],
        counts_from=row["counts_from"],
        baseline=DayCounts.from_dict(json.loads(row["baseline"])),
        change_id=int(row["change_id"]),
    )


async def bump_counts(conn: Any, dealer_id: str, day: date, counts: DayCounts) -> None:
    """Add ``counts`` to the dealer's counters of ``day`` (in the caller's transaction)."""
    await conn.execute(
        "INSERT INTO dealer_days (dealer_id, day, sent, delivered, complaints, hard_bounces,"
        " soft_bounces) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (dealer_id, day) DO"
        " UPDATE SET sent = dealer_days.sent + EXCLUDED.sent,"
        " delivered = dealer_days.delivered + EXCLUDED.delivered,"
        " complaints = dealer_days.complaints + EXCLUDED.complaints,"
        " hard_bounces = dealer_days.hard_bounces + EXCLUDED.hard_bounces,"
        " soft_bounces = dealer_days.soft_bounces + EXCLUDED.soft_bounces",
        dealer_id, day, counts.sent, counts.delivered, counts.complaints, counts.hard_bounces,
        counts.soft_bounces,
    )  # fmt: skip


async def open_suppression(conn: Any, entry: Suppression) -> bool:
    """Add or extend ``entry`` (in the caller's transaction); True if anything changed.

    The open entry is read ``FOR UPDATE``, so no other transaction changes it between
    ``plan_suppression`` and the writes. When there is none, two nodes may both plan to
    open one: the partial unique index lets one insert win, and the other (its insert
    waited for the winner's commit) reads again and plans against the winner's entry.
    """
    scope, address = entry.dealer_id or "", normalise(entry.address)
    aware(entry.created_at)
    for _ in range(_SUPPRESSION_TRIES):
        row = await conn.fetchrow(
            f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions"
            " WHERE address = $1 AND scope = $2 AND lifted_at IS NULL FOR UPDATE",
            address,
            scope,
        )
        plan = plan_suppression(None if row is None else _suppression(row), entry)
        if plan.closed is not None:
            closed = plan.closed
            await conn.execute(
                "UPDATE suppressions SET lifted_at = $2, lifted_by = $3, lift_reason = $4"
                " WHERE id = $1",
                closed.id, closed.lifted_at, closed.lifted_by, closed.lift_reason,
            )  # fmt: skip
        if plan.opened is not None:
            new = plan.opened
            won = await conn.fetchval(
                "INSERT INTO suppressions (scope, address, reason, source, created_at,"
                " expires_at) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (address, scope) WHERE lifted_at IS NULL DO NOTHING RETURNING true",
                new.dealer_id or "", new.address, new.reason, new.source, new.created_at,
                new.expires_at,
            )  # fmt: skip
            if not won:
                continue
        if plan.extended is not None:
            longer = plan.extended
            await conn.execute(
                "UPDATE suppressions SET expires_at = $2, reason = $3, source = $4 WHERE id = $1",
                longer.id, longer.expires_at, longer.reason, longer.source,
            )  # fmt: skip
        return plan.changed
    raise StorageUnavailable(
        f"postgres: the suppression of {address} ({entry.scope}) kept changing; try again"
    )


class FeedbackSection(Section):
    """The protocol's feedback section (see ``Storage`` for the contract)."""

    async def record_feedback(
        self, event: FeedbackEvent, suppression: Suppression | None = None
    ) -> bool:
        """Record ``event`` once (replay key), count it and suppress, in one transaction."""
        async with self._conn() as conn, conn.transaction():
            inserted = await conn.fetchval(
                "INSERT INTO feedback_events (dealer_id, kind, message_id, recipient, at,"
                " detail, subject, source) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                " ON CONFLICT (message_id, kind, recipient) DO NOTHING RETURNING true",
                event.dealer_id, event.kind.value, event.message_id, event.recipient,
                aware(event.at), event.detail, event.subject, event.source,
            )  # fmt: skip
            if not inserted:
                return False
            await bump_counts(conn, event.dealer_id, event.at.date(), event_counts(event.kind))
            if suppression is not None:
                await open_suppression(conn, suppression)
        return True

    async def count_events(
        self, dealer_id: DealerId, recipient: str, kind: EventKind, since: datetime
    ) -> int:
        """How many ``kind`` events ``recipient`` has for ``dealer_id`` since ``since``."""
        async with self._conn() as conn:
            value = await conn.fetchval(
                "SELECT count(*) FROM feedback_events WHERE dealer_id = $1 AND recipient = $2"
                " AND kind = $3 AND at >= $4",
                dealer_id,
                recipient,
                kind.value,
                aware(since),
            )
        return int(value)

    async def recent_events(
        self, dealer_id: DealerId, kinds: frozenset[EventKind], since: datetime, limit: int = 100
    ) -> list[FeedbackEvent]:
        """The dealer's events of ``kinds`` since ``since``, newest first."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT dealer_id, kind, message_id, recipient, at, detail, subject, source"
                " FROM feedback_events WHERE dealer_id = $1 AND kind = ANY($2::text[])"
                " AND at >= $3 ORDER BY at DESC, id DESC LIMIT $4",
                dealer_id,
                sorted(k.value for k in kinds),
                aware(since),
                max(limit, 0),
            )
        return [
            FeedbackEvent(
                dealer_id=DealerId(r["dealer_id"]),
                kind=EventKind(r["kind"]),
                message_id=MessageId(r["message_id"]),
                recipient=r["recipient"],
                at=r["at"],
                detail=r["detail"],
                subject=r["subject"],
                source=r["source"],
            )
            for r in rows
        ]

    async def add_suppression(self, entry: Suppression) -> bool:
        """Add (or extend) a suppression; see the protocol for the rules."""
        async with self._conn() as conn, conn.transaction():
            return await open_suppression(conn, entry)

    async def find_suppression(
        self, dealer_id: DealerId, address: str, now: datetime
    ) -> Suppression | None:
        """The active entry blocking ``address`` for ``dealer_id``, or ``None``."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions WHERE address = $1"
                " AND scope IN ($2, '') AND lifted_at IS NULL"
                " AND (expires_at IS NULL OR expires_at > $3)"
                " ORDER BY scope = '' LIMIT 1",
                normalise(address),
                dealer_id,
                aware(now),
            )
        return None if row is None else _suppression(row)

    async def lift_suppression(
        self, dealer_id: DealerId | None, address: str, by: str, reason: str, now: datetime
    ) -> bool:
        """Close the open entry of one list and address, recording who and why."""
        updated = await self._execute(
            "UPDATE suppressions SET lifted_at = $1, lifted_by = $2, lift_reason = $3"
            " WHERE address = $4 AND scope = $5 AND lifted_at IS NULL",
            aware(now),
            by,
            reason,
            normalise(address),
            dealer_id or "",
        )
        return updated >= 1

    async def list_suppressions(
        self,
        dealer_id: DealerId | None = None,
        *,
        global_only: bool = False,
        active_at: datetime | None = None,
        after_id: int = 0,
        limit: int = 1000,
    ) -> list[Suppression]:
        """Entries in id order after ``after_id``; see the protocol for the filters."""
        where = ["id > $1"]
        args: list[Any] = [after_id]
        if global_only:
            where.append("scope = ''")
        elif dealer_id is not None:
            args.append(dealer_id)
            where.append(f"scope = ${len(args)}")
        if active_at is not None:
            args.append(aware(active_at))
            where.append(f"lifted_at IS NULL AND (expires_at IS NULL OR expires_at > ${len(args)})")
        args.append(max(limit, 0))
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions WHERE {' AND '.join(where)}"
                f" ORDER BY id LIMIT ${len(args)}",
                *args,
            )
        return [_suppression(r) for r in rows]

    async def count_suppressions(self, now: datetime) -> dict[str, int]:
        """Active entries per list (dealer id, or ``*`` for the global list)."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT scope, count(*) AS n FROM suppressions WHERE lifted_at IS NULL"
                " AND (expires_at IS NULL OR expires_at > $1) GROUP BY scope",
                aware(now),
            )
        return {(r["scope"] or GLOBAL): int(r["n"]) for r in rows}

    async def add_counts(self, dealer_id: DealerId, day: date, counts: DayCounts) -> None:
        """Add ``counts`` to the dealer's counters of ``day``."""
        async with self._conn() as conn:
            await bump_counts(conn, dealer_id, day, counts)

    async def daily_counts(
        self, dealer_id: DealerId, since: date, until: date
    ) -> list[DailyCounts]:
        """The dealer's counter rows from ``since`` to ``until`` inclusive, oldest first."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT day, sent, delivered, complaints, hard_bounces, soft_bounces"
                " FROM dealer_days WHERE dealer_id = $1 AND day >= $2 AND day <= $3 ORDER BY day",
                dealer_id,
                since,
                until,
            )
        return [
            DailyCounts(
                dealer_id,
                r["day"],
                DayCounts(
                    int(r["sent"]),
                    int(r["delivered"]),
                    int(r["complaints"]),
                    int(r["hard_bounces"]),
                    int(r["soft_bounces"]),
                ),
            )
            for r in rows
        ]

    async def get_dealer_status(self, dealer_id: DealerId) -> DealerStatus | None:
        """The dealer's current state, or ``None`` (active, nothing recorded)."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {_STATUS_COLUMNS} FROM dealer_status WHERE dealer_id = $1", dealer_id
            )
        return None if row is None else _status(row)

    async def list_dealer_statuses(self) -> list[DealerStatus]:
        """Every dealer with a recorded state."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_STATUS_COLUMNS} FROM dealer_status ORDER BY dealer_id"
            )
        return [_status(r) for r in rows]

    async def change_dealer_state(
        self, change: StateChange, baseline: DayCounts | None = None
    ) -> StateChange | None:
        """Compare-and-set the dealer's state (``plan_transition``); keep it in history."""
        aware(change.at)
        try:
            async with self._conn() as conn, conn.transaction():
                row = await conn.fetchrow(
                    f"SELECT {_STATUS_COLUMNS} FROM dealer_status WHERE dealer_id = $1 FOR UPDATE",
                    change.dealer_id,
                )
                planned = plan_transition(None if row is None else _status(row), change, baseline)
                if planned is None:
                    return None
                new = planned.change
                change_id = await conn.fetchval(
                    "INSERT INTO dealer_history (dealer_id, state, previous, reason, actor,"
                    " by_name, at, expires_at, evidence, note)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                    new.dealer_id, new.state.value, new.previous.value, new.reason,
                    new.actor.value, new.by, new.at, new.expires_at,
                    json.dumps(new.evidence.as_dict()), new.note,
                )  # fmt: skip
                done = planned.numbered(int(change_id))
                status = done.status
                values = (
                    status.dealer_id, status.state.value, status.reason, status.actor.value,
                    status.since, status.expires_at, status.counts_from,
                    json.dumps(status.baseline.as_dict()), status.change_id,
                )  # fmt: skip
                if done.first:
                    # Two nodes may both have seen no row: only one insert wins.
                    won = await conn.fetchval(
                        f"INSERT INTO dealer_status ({_STATUS_COLUMNS})"
                        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                        " ON CONFLICT (dealer_id) DO NOTHING RETURNING true",
                        *values,
                    )
                    if not won:
                        raise _StateMoved
                else:
                    await conn.execute(
                        "UPDATE dealer_status SET state = $2, reason = $3, actor = $4,"
                        " since = $5, expires_at = $6, counts_from = $7, baseline = $8,"
                        " change_id = $9 WHERE dealer_id = $1",
                        *values,
                    )
        except _StateMoved:
            return None
        return done.change

    async def dealer_history(self, dealer_id: DealerId, limit: int = 50) -> list[StateChange]:
        """The dealer's transitions, newest first."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT id, dealer_id, state, previous, reason, actor, by_name, at, expires_at,"
                " evidence, note FROM dealer_history WHERE dealer_id = $1 ORDER BY id DESC"
                " LIMIT $2",
                dealer_id,
                max(limit, 0),
            )
        return [
            StateChange(
                dealer_id=DealerId(r["dealer_id"]),
                state=DealerState(r["state"]),
                previous=DealerState(r["previous"]),
                reason=r["reason"],
                actor=Actor(r["actor"]),
                by=r["by_name"],
                at=r["at"],
                expires_at=r["expires_at"],
                evidence=Evidence.from_dict(json.loads(r["evidence"])),
                id=int(r["id"]),
                note=r["note"],
            )
            for r in rows
        ]
