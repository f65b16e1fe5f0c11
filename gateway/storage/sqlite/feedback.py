"""The feedback section of the SQLite backend: events, suppressions, counters, dealer state.

Owns ``FeedbackSection`` (the protocol's "feedback" section) and the statements other
sections run inside their own transactions: ``bump_counts`` (a final delivery outcome
counts on its day) and ``open_suppression``. What a suppression or a state change writes
is decided by ``gateway/reputation/rules.py``; here it is only read and written.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

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
from gateway.storage.sqlite.connection import from_us, opt_from_us, opt_us, to_us, write
from gateway.storage.sqlite.section import Section
from gateway.types import DealerId, MessageId

_SUPPRESSION_COLUMNS = (
    "id, scope, address, reason, source, created_at, expires_at, lifted_at, lifted_by, lift_reason"
)
_STATUS_COLUMNS = (
    "dealer_id, state, reason, actor, since, expires_at, counts_from, baseline, change_id"
)


def _event(row: Sequence[Any]) -> FeedbackEvent:
    return FeedbackEvent(
        dealer_id=DealerId(row[0]),
        kind=EventKind(row[1]),
        message_id=MessageId(row[2]),
        recipient=row[3],
        at=from_us(row[4]),
        detail=row[5],
        subject=row[6],
        source=row[7],
    )


def _suppression(row: Sequence[Any]) -> Suppression:
    return Suppression(
        id=int(row[0]),
        dealer_id=DealerId(row[1]) if row[1] else None,
        address=row[2],
        reason=row[3],
        source=row[4],
        created_at=from_us(row[5]),
        expires_at=opt_from_us(row[6]),
        lifted_at=opt_from_us(row[7]),
        lifted_by=row[8],
        lift_reason=row[9],
    )


def _status(row: Sequence[Any]) -> DealerStatus:
    return DealerStatus(
        dealer_id=DealerId(row[0]),
        state=DealerState(row[1]),
        reason=row[2],
        actor=Actor(row[3]),
        since=from_us(row[4]),
        expires_at=opt_from_us(row[5]),
        counts_from=opt_from_us(row[6]),
        baseline=DayCounts.from_dict(json.loads(row[7])),
        change_id=int(row[8]),
    )


def _get_status(conn: sqlite3.Connection, dealer_id: str) -> DealerStatus | None:
    row = conn.execute(
        f"SELECT {_STATUS_COLUMNS} FROM dealer_status WHERE dealer_id = ?", (dealer_id,)
    ).fetchone()
    return None if row is None else _status(row)


def bump_counts(conn: sqlite3.Connection, dealer_id: str, day: date, counts: DayCounts) -> None:
    """Add ``counts`` to the dealer's counters of ``day`` (inside the caller's transaction)."""
    conn.execute(
        "INSERT INTO dealer_days (dealer_id, day, sent, delivered, complaints, hard_bounces,"
        " soft_bounces) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dealer_id, day) DO UPDATE SET"
        " sent = sent + excluded.sent, delivered = delivered + excluded.delivered,"
        " complaints = complaints + excluded.complaints,"
        " hard_bounces = hard_bounces + excluded.hard_bounces,"
        " soft_bounces = soft_bounces + excluded.soft_bounces",
        (dealer_id, day.isoformat(), counts.sent, counts.delivered, counts.complaints,
         counts.hard_bounces, counts.soft_bounces),
    )  # fmt: skip


def open_suppression(conn: sqlite3.Connection, entry: Suppression) -> bool:
    """Add or extend ``entry`` (inside the caller's transaction); True if anything changed.

    The caller's ``BEGIN IMMEDIATE`` holds the write lock from the read to the last
    write, so what ``plan_suppression`` decided on is still what is stored.
    """
    scope, address = entry.dealer_id or "", normalise(entry.address)
    to_us(entry.created_at)
    row = conn.execute(
        f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions WHERE address = ? AND scope = ?"
        " AND lifted_at IS NULL",
        (address, scope),
    ).fetchone()
    plan = plan_suppression(None if row is None else _suppression(row), entry)
    if plan.closed is not None:
        closed = plan.closed
        conn.execute(
            "UPDATE suppressions SET lifted_at = ?, lifted_by = ?, lift_reason = ? WHERE id = ?",
            (opt_us(closed.lifted_at), closed.lifted_by, closed.lift_reason, closed.id),
        )
    if plan.opened is not None:
        new = plan.opened
        conn.execute(
            "INSERT INTO suppressions (scope, address, reason, source, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (new.dealer_id or "", new.address, new.reason, new.source, to_us(new.created_at),
             opt_us(new.expires_at)),
        )  # fmt: skip
    if plan.extended is not None:
        longer = plan.extended
        conn.execute(
            "UPDATE suppressions SET expires_at = ?, reason = ?, source = ? WHERE id = ?",
            (opt_us(longer.expires_at), longer.reason, longer.source, longer.id),
        )
    return plan.changed


class FeedbackSection(Section):
    """The protocol's feedback section (see ``Storage`` for the contract)."""

    async def record_feedback(
        self, event: FeedbackEvent, suppression: Suppression | None = None
    ) -> bool:
        """Record ``event`` once (replay key), count it and suppress, in one transaction."""
        self._check_open()
        to_us(event.at)

        def record(conn: sqlite3.Connection) -> bool:
            inserted = conn.execute(
                "INSERT INTO feedback_events (dealer_id, kind, message_id, recipient, at,"
                " detail, subject, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (message_id, kind, recipient) DO NOTHING",
                (event.dealer_id, event.kind.value, event.message_id, event.recipient,
                 to_us(event.at), event.detail, event.subject, event.source),
            ).rowcount  # fmt: skip
            if inserted != 1:
                return False
            bump_counts(conn, event.dealer_id, event.at.date(), event_counts(event.kind))
            if suppression is not None:
                open_suppression(conn, suppression)
            return True

        return await self._writer.run(write(record))

    async def count_events(
        self, dealer_id: DealerId, recipient: str, kind: EventKind, since: datetime
    ) -> int:
        """How many ``kind`` events ``recipient`` has for ``dealer_id`` since ``since``."""
        self._check_open()
        params = (dealer_id, recipient, kind.value, to_us(since))

        def count(conn: sqlite3.Connection) -> int:
            return int(
                conn.execute(
                    "SELECT count(*) FROM feedback_events WHERE dealer_id = ? AND recipient = ?"
                    " AND kind = ? AND at >= ?",
                    params,
                ).fetchone()[0]
            )

        return await self._reader.run(count)

    async def recent_events(
        self, dealer_id: DealerId, kinds: frozenset[EventKind], since: datetime, limit: int = 100
    ) -> list[FeedbackEvent]:
        """The dealer's events of ``kinds`` since ``since``, newest first."""
        self._check_open()
        wanted = sorted(k.value for k in kinds)
        if not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        params = [dealer_id, *wanted, to_us(since), max(limit, 0)]

        def select(conn: sqlite3.Connection) -> list[FeedbackEvent]:
            rows = conn.execute(
                "SELECT dealer_id, kind, message_id, recipient, at, detail, subject, source"
                f" FROM feedback_events WHERE dealer_id = ? AND kind IN ({marks}) AND at >= ?"
                " ORDER BY at DESC, id DESC LIMIT ?",
                params,
            ).fetchall()
            return [_event(r) for r in rows]

        return await self._reader.run(select)

    async def add_suppression(self, entry: Suppression) -> bool:
        """Add (or extend) a suppression; see the protocol for the rules."""
        self._check_open()
        to_us(entry.created_at)
        return await self._writer.run(write(lambda conn: open_suppression(conn, entry)))

    async def find_suppression(
        self, dealer_id: DealerId, address: str, now: datetime
    ) -> Suppression | None:
        """The active entry blocking ``address`` for ``dealer_id``, or ``None``."""
        self._check_open()
        params = (normalise(address), dealer_id, to_us(now))

        def find(conn: sqlite3.Connection) -> Suppression | None:
            row = conn.execute(
                f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions WHERE address = ?"
                " AND scope IN (?, '') AND lifted_at IS NULL"
                " AND (expires_at IS NULL OR expires_at > ?)"
                " ORDER BY scope = '' LIMIT 1",
                params,
            ).fetchone()
            return None if row is None else _suppression(row)

        return await self._reader.run(find)

    async def lift_suppression(
        self, dealer_id: DealerId | None, address: str, by: str, reason: str, now: datetime
    ) -> bool:
        """Close the open entry of one list and address, recording who and why."""
        return await self._update(
            "UPDATE suppressions SET lifted_at = ?, lifted_by = ?, lift_reason = ?"
            " WHERE address = ? AND scope = ? AND lifted_at IS NULL",
            (to_us(now), by, reason, normalise(address), dealer_id or ""),
        )

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
        self._check_open()
        where = ["id > ?"]
        params: list[Any] = [after_id]
        if global_only:
            where.append("scope = ''")
        elif dealer_id is not None:
            where.append("scope = ?")
            params.append(dealer_id)
        if active_at is not None:
            where.append("lifted_at IS NULL AND (expires_at IS NULL OR expires_at > ?)")
            params.append(to_us(active_at))
        params.append(max(limit, 0))
        sql = (
            f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions WHERE {' AND '.join(where)}"
            " ORDER BY id LIMIT ?"
        )

        def select(conn: sqlite3.Connection) -> list[Suppression]:
            return [_suppression(r) for r in conn.execute(sql, params)]

        return await self._reader.run(select)

    async def count_suppressions(self, now: datetime) -> dict[str, int]:
        """Active entries per list (dealer id, or ``*`` for the global list)."""
        self._check_open()
        now_us = to_us(now)

        def count(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT scope, count(*) FROM suppressions WHERE lifted_at IS NULL"
                " AND (expires_at IS NULL OR expires_at > ?) GROUP BY scope",
                (now_us,),
            ).fetchall()
            return {(r[0] or GLOBAL): int(r[1]) for r in rows}

        return await self._reader.run(count)

    async def add_counts(self, dealer_id: DealerId, day: date, counts: DayCounts) -> None:
        """Add ``counts`` to the dealer's counters of ``day``."""
        self._check_open()

        def add(conn: sqlite3.Connection) -> None:
            bump_counts(conn, dealer_id, day, counts)

        await self._writer.run(write(add))

    async def daily_counts(
        self, dealer_id: DealerId, since: date, until: date
    ) -> list[DailyCounts]:
        """The dealer's counter rows from ``since`` to ``until`` inclusive, oldest first."""
        self._check_open()
        params = (dealer_id, since.isoformat(), until.isoformat())

        def select(conn: sqlite3.Connection) -> list[DailyCounts]:
            rows = conn.execute(
                "SELECT day, sent, delivered, complaints, hard_bounces, soft_bounces"
                " FROM dealer_days WHERE dealer_id = ? AND day >= ? AND day <= ? ORDER BY day",
                params,
            ).fetchall()
            return [
                DailyCounts(dealer_id, date.fromisoformat(r[0]), DayCounts(*r[1:])) for r in rows
            ]

        return await self._reader.run(select)

    async def get_dealer_status(self, dealer_id: DealerId) -> DealerStatus | None:
        """The dealer's current state, or ``None`` (active, nothing recorded)."""
        self._check_open()

        def get(conn: sqlite3.Connection) -> DealerStatus | None:
            return _get_status(conn, dealer_id)

        return await self._reader.run(get)

    async def list_dealer_statuses(self) -> list[DealerStatus]:
        """Every dealer with a recorded state."""
        self._check_open()

        def select(conn: sqlite3.Connection) -> list[DealerStatus]:
            rows = conn.execute(
                f"SELECT {_STATUS_COLUMNS} FROM dealer_status ORDER BY dealer_id"
            ).fetchall()
            return [_status(r) for r in rows]

        return await self._reader.run(select)

    async def change_dealer_state(
        self, change: StateChange, baseline: DayCounts | None = None
    ) -> StateChange | None:
        """Compare-and-set the dealer's state (``plan_transition``); keep it in history."""
        self._check_open()
        to_us(change.at)

        def apply(conn: sqlite3.Connection) -> StateChange | None:
            planned = plan_transition(_get_status(conn, change.dealer_id), change, baseline)
            if planned is None:
                return None
            row = planned.change
            cursor = conn.execute(
                "INSERT INTO dealer_history (dealer_id, state, previous, reason, actor, by_name,"
                " at, expires_at, evidence, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.dealer_id, row.state.value, row.previous.value, row.reason,
                 row.actor.value, row.by, to_us(row.at), opt_us(row.expires_at),
                 json.dumps(row.evidence.as_dict()), row.note),
            )  # fmt: skip
            done = planned.numbered(int(cursor.lastrowid or 0))
            status = done.status
            conn.execute(
                f"INSERT OR REPLACE INTO dealer_status ({_STATUS_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (status.dealer_id, status.state.value, status.reason, status.actor.value,
                 to_us(status.since), opt_us(status.expires_at), opt_us(status.counts_from),
                 json.dumps(status.baseline.as_dict()), status.change_id),
            )  # fmt: skip
            return done.change

        return await self._writer.run(write(apply))

    async def dealer_history(self, dealer_id: DealerId, limit: int = 50) -> list[StateChange]:
        """The dealer's transitions, newest first."""
        self._check_open()

        def select(conn: sqlite3.Connection) -> list[StateChange]:
            rows = conn.execute(
                "SELECT id, dealer_id, state, previous, reason, actor, by_name, at, expires_at,"
                " evidence, note FROM dealer_history WHERE dealer_id = ? ORDER BY id DESC"
                " LIMIT ?",
                (dealer_id, max(limit, 0)),
            ).fetchall()
            return [
                StateChange(
                    dealer_id=DealerId(r[1]),
                    state=DealerState(r[2]),
                    previous=DealerState(r[3]),
                    reason=r[4],
                    actor=Actor(r[5]),
                    by=r[6],
                    at=from_us(r[7]),
                    expires_at=None if r[8] is None else from_us(r[8]),
                    evidence=Evidence.from_dict(json.loads(r[9])),
                    id=int(r[0]),
                    note=r[10],
                )
                for r in rows
            ]

        return await self._reader.run(select)
