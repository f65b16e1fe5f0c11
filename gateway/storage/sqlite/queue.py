"""The queue section of the SQLite backend: enqueue, claim, lease, complete, defer, hold.

Owns ``QueueSection`` (the protocol's "queue" section) and the message statements the
group commit runs (``INSERT``, ``insert_params``, ``check_enqueue``). A claim takes a lease
(owner + expiry) on the writer connection; a dead node's lease simply expires.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from gateway.reputation.records import DayCounts
from gateway.storage.sqlite.commit import Batch
from gateway.storage.sqlite.connection import from_us, to_us, write
from gateway.storage.sqlite.feedback import bump_counts
from gateway.storage.sqlite.section import Section
from gateway.types import (
    DealerId,
    MessageId,
    MessageState,
    NewMessage,
    OutcomeKind,
    QueuedMessage,
    QueueStats,
    RcptOutcome,
)

log = logging.getLogger("gateway.storage")

_COLUMNS = (
    "id, dealer_id, mail_from, rcpt, {data}, received_at, state, attempts, next_attempt_at,"
    " last_error, findings, note, system, updated_at, size"
)
_WITH_DATA = _COLUMNS.format(data="data")
_WITHOUT_DATA = _COLUMNS.format(data="x'' AS data")

INSERT = (
    "INSERT INTO messages (id, dealer_id, mail_from, rcpt, data, sha256, size, received_at,"
    " state, attempts, next_attempt_at, last_error, findings, note, system, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, '', ?, ?, ?, ?)"
)

# Due: QUEUED, next attempt reached, no live lease. A dead node's lease simply expires.
_SELECT_DUE = (
    f"SELECT {_WITH_DATA}, sha256 FROM messages"
    " WHERE state = 'queued' AND next_attempt_at <= :now"
    " AND (lease_until IS NULL OR lease_until <= :now)"
    " AND (system = 1 OR dealer_id NOT IN (SELECT value FROM json_each(:excluded)))"
    " ORDER BY next_attempt_at, received_at, id LIMIT :limit"
)


def _message(row: Sequence[Any]) -> QueuedMessage:
    return QueuedMessage(
        id=MessageId(row[0]),
        dealer_id=DealerId(row[1]),
        mail_from=row[2],
        rcpt=row[3],
        data=bytes(row[4]),
        received_at=from_us(row[5]),
        state=MessageState(row[6]),
        attempts=row[7],
        next_attempt_at=None if row[8] is None else from_us(row[8]),
        last_error=row[9],
        findings=tuple(json.loads(row[10])),
        note=row[11],
        system=bool(row[12]),
        updated_at=from_us(row[13]),
        size=row[14],
    )


def insert_params(message: NewMessage) -> tuple[Any, ...]:
    """The ``INSERT`` parameters of one new message."""
    received = to_us(message.received_at)
    due = received if message.state is MessageState.QUEUED else None
    return (
        message.id,
        message.dealer_id,
        message.mail_from,
        message.rcpt,
        message.data,
        hashlib.sha256(message.data).digest(),
        len(message.data),
        received,
        message.state.value,
        due,
        json.dumps(list(message.findings)),
        message.note,
        int(message.system),
        received,
    )


def check_enqueue(messages: Sequence[NewMessage]) -> None:
    """Refuse (``ValueError``) a naive time or a state a new message cannot have."""
    for message in messages:
        to_us(message.received_at)
        if message.state not in (MessageState.QUEUED, MessageState.HELD):
            raise ValueError(f"{message.id}: a new message is QUEUED or HELD, not {message.state}")


def _final_counts(state: MessageState) -> DayCounts:
    """What a final outcome adds to the dealer's day: sent, and delivered if it was."""
    return DayCounts(sent=1, delivered=int(state is MessageState.DELIVERED))


class QueueSection(Section):
    """The protocol's queue section (see ``Storage`` for the contract)."""

    async def enqueue(self, messages: Sequence[NewMessage]) -> None:
        """Store ``messages`` durably, all or nothing; return after the commit."""
        self._check_open()
        batch = list(messages)
        check_enqueue(batch)
        if not batch:
            return
        await self._commits.submit(Batch(batch))

    async def claim(
        self,
        node: str,
        limit: int,
        now: datetime,
        lease: timedelta,
        exclude_dealers: frozenset[DealerId] = frozenset(),
    ) -> list[QueuedMessage]:
        """Lease up to ``limit`` due messages to ``node``; quarantine corrupt ones."""
        self._check_open()
        if lease <= timedelta(0):
            raise ValueError("lease must be positive")
        if limit <= 0:
            return []
        now_us = to_us(now)
        until_us = to_us(now + lease)
        excluded = json.dumps(sorted(exclude_dealers))

        def claim(conn: sqlite3.Connection) -> list[QueuedMessage]:
            claimed: list[QueuedMessage] = []
            while len(claimed) < limit:
                rows = conn.execute(
                    _SELECT_DUE,
                    {"now": now_us, "excluded": excluded, "limit": limit - len(claimed)},
                ).fetchall()
                intact = [hashlib.sha256(r[4]).digest() == r[15] for r in rows]  # once each
                good = [r for r, ok in zip(rows, intact, strict=True) if ok]
                bad = [r for r, ok in zip(rows, intact, strict=True) if not ok]
                for row in bad:
                    log.error(
                        "message %s dealer %s: stored body does not match its SHA-256; quarantined",
                        row[0],
                        row[1],
                    )
                conn.executemany(
                    "UPDATE messages SET state = 'quarantined', next_attempt_at = NULL,"
                    " lease_owner = NULL, lease_until = NULL, updated_at = ?, last_error = ?"
                    " WHERE id = ?",
                    [
                        (
                            now_us,
                            "quarantined: stored body does not match its SHA-256 checksum",
                            r[0],
                        )
                        for r in bad
                    ],
                )
                conn.executemany(
                    "UPDATE messages SET lease_owner = ?, lease_until = ? WHERE id = ?",
                    [(node, until_us, r[0]) for r in good],
                )
                claimed.extend(_message(r) for r in good)
                # Only a quarantine leaves room worth looking again for.
                if not bad:
                    break
            return claimed

        # Joins the group commit with the enqueues and outcomes (commit.py): a worker that
        # frees up claims one message, and one fsync per claim would be one per message.
        return await self._commits.run(claim)

    async def complete(
        self, message_id: MessageId, node: str, outcome: RcptOutcome, now: datetime
    ) -> bool:
        """Record the final outcome if ``node`` still holds the lease.

        A delivered message loses its body (the row stays as the sent log); a failed one
        keeps it so that an operator can ``requeue`` it. A dealer's message is counted in
        its daily counters in the same transaction.
        """
        if outcome.kind is OutcomeKind.DEFERRED:
            raise ValueError("complete() takes a final outcome; use defer() for DEFERRED")
        state = (
            MessageState.DELIVERED if outcome.kind is OutcomeKind.DELIVERED else MessageState.FAILED
        )
        self._check_open()
        params = (
            state.value,
            outcome.summary(),
            to_us(now),
            state is MessageState.DELIVERED,
            message_id,
            node,
        )

        def complete(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "UPDATE messages SET state = ?, attempts = attempts + 1, last_error = ?,"
                " next_attempt_at = NULL, lease_owner = NULL, lease_until = NULL, updated_at = ?,"
                " data = CASE WHEN ? THEN x'' ELSE data END"
                " WHERE id = ? AND state = 'queued' AND lease_owner = ?"
                " RETURNING dealer_id, system",
                params,
            ).fetchone()
            if row is None:
                return False
            if not row[1]:
                bump_counts(conn, row[0], now.date(), _final_counts(state))
            return True

        # Joins the group commit: outcomes of concurrent deliveries share one fsync.
        return await self._commits.run(complete)

    async def defer(
        self,
        message_id: MessageId,
        node: str,
        outcome: RcptOutcome,
        next_attempt_at: datetime,
        now: datetime,
    ) -> bool:
        """Count an attempt and schedule the next one if ``node`` still holds the lease."""
        self._check_open()
        params = (outcome.summary(), to_us(next_attempt_at), to_us(now), message_id, node)

        def defer(conn: sqlite3.Connection) -> bool:
            return (
                conn.execute(
                    "UPDATE messages SET attempts = attempts + 1, last_error = ?,"
                    " next_attempt_at = ?, lease_owner = NULL, lease_until = NULL,"
                    " updated_at = ? WHERE id = ? AND state = 'queued' AND lease_owner = ?",
                    params,
                ).rowcount
                == 1
            )

        return await self._commits.run(defer)

    async def release(self, message_id: MessageId, node: str) -> bool:
        """Drop ``node``'s lease without counting an attempt."""
        return await self._update(
            "UPDATE messages SET lease_owner = NULL, lease_until = NULL"
            " WHERE id = ? AND state = 'queued' AND lease_owner = ?",
            (message_id, node),
        )

    async def release_owned(self, node: str) -> int:
        """Drop every lease ``node`` holds (it restarted); return how many were dropped."""
        self._check_open()

        def release(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE messages SET lease_owner = NULL, lease_until = NULL"
                " WHERE lease_owner = ? AND state = 'queued'",
                (node,),
            ).rowcount

        return await self._writer.run(write(release))

    async def hold(self, message_id: MessageId, note: str, now: datetime) -> bool:
        """Move a ``QUEUED`` message to ``HELD``; a lease on it is revoked (fenced off)."""
        return await self._update(
            "UPDATE messages SET state = 'held', note = ?, next_attempt_at = NULL,"
            " lease_owner = NULL, lease_until = NULL, updated_at = ?"
            " WHERE id = ? AND state = 'queued'",
            (note, to_us(now), message_id),
        )

    async def requeue(self, message_id: MessageId, now: datetime) -> bool:
        """Make a ``HELD``/``FAILED``/``QUEUED`` message that still has its body due now.

        ``attempts`` is kept. A lease on a ``QUEUED`` message is left alone, so a message
        being sent right now is not handed to a second node.
        """
        now_us = to_us(now)
        return await self._update(
            "UPDATE messages SET state = 'queued', next_attempt_at = ?, updated_at = ?"
            " WHERE id = ? AND state IN ('held', 'failed', 'queued') AND length(data) = size",
            (now_us, now_us, message_id),
        )

    async def get(self, message_id: MessageId) -> QueuedMessage | None:
        """Return one message with its body (empty once delivered), or ``None``."""
        self._check_open()

        def get(conn: sqlite3.Connection) -> QueuedMessage | None:
            row = conn.execute(
                f"SELECT {_WITH_DATA} FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            return None if row is None else _message(row)

        return await self._reader.run(get)

    async def list_messages(
        self,
        state: MessageState | None = None,
        dealer_id: DealerId | None = None,
        limit: int = 100,
    ) -> list[QueuedMessage]:
        """List messages newest first, without bodies."""
        self._check_open()
        where: list[str] = []
        params: list[Any] = []
        if state is not None:
            where.append("state = ?")
            params.append(state.value)
        if dealer_id is not None:
            where.append("dealer_id = ?")
            params.append(dealer_id)
        sql = f"SELECT {_WITHOUT_DATA} FROM messages"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY received_at DESC, id DESC LIMIT ?"
        params.append(max(limit, 0))

        def select(conn: sqlite3.Connection) -> list[QueuedMessage]:
            return [_message(r) for r in conn.execute(sql, params)]

        return await self._reader.run(select)

    async def delete(self, message_id: MessageId) -> bool:
        """Remove a message for good; a holder of its lease will find it gone."""
        return await self._update("DELETE FROM messages WHERE id = ?", (message_id,))

    async def stats(self) -> QueueStats:
        """Return counts per state, the oldest ``QUEUED`` time, and ``QUEUED``+``HELD`` bytes."""
        self._check_open()

        def stats(conn: sqlite3.Connection) -> QueueStats:
            rows = conn.execute(
                "SELECT state, count(*), min(received_at), sum(size) FROM messages GROUP BY state"
            ).fetchall()
            counts = {MessageState(r[0]): r[1] for r in rows}
            oldest = next((r[2] for r in rows if r[0] == MessageState.QUEUED.value), None)
            waiting = sum(r[3] for r in rows if r[0] in ("queued", "held"))
            return QueueStats(
                counts=counts,
                oldest_queued_at=None if oldest is None else from_us(oldest),
                queued_bytes=waiting,
            )

        return await self._reader.run(stats)

    async def expire_finished(self, before: datetime) -> int:
        """Delete ``DELIVERED``/``FAILED`` rows last updated before ``before``; return how many."""
        self._check_open()
        before_us = to_us(before)

        def expire(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM messages WHERE state IN ('delivered', 'failed') AND updated_at < ?",
                (before_us,),
            ).rowcount

        return await self._writer.run(write(expire))
