"""The queue section of the PostgreSQL backend: enqueue, claim, lease, complete, defer, hold.

Owns ``QueueSection`` (the protocol's "queue" section) and the message rows an enqueue
inserts (``INSERT``, ``message_rows``), which the send-log section's claimed enqueue
reuses.

Theory of operation
-------------------
* Claims: ``SELECT … FOR UPDATE SKIP LOCKED`` (PostgreSQL docs, "The Locking Clause") lets
  nodes claim concurrently without waiting on each other's rows; under READ COMMITTED a
  locked row is re-checked against the WHERE clause after the lock is obtained, so a row
  another node has just leased is dropped. The lease itself (``lease_owner``,
  ``lease_until``) outlives the transaction: a node that dies keeps its messages only
  until ``lease_until``, after which any node can claim them.
* Fencing: ``complete``/``defer``/``release`` update only ``WHERE lease_owner = node``.
* Corruption: the claim query computes ``sha256(data) = sha256`` in the server (built-in
  since PostgreSQL 11), so the check costs no transfer, and a mismatch is quarantined.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from gateway.reputation.records import DayCounts
from gateway.storage.postgres.connection import aware
from gateway.storage.postgres.feedback import bump_counts
from gateway.storage.postgres.section import Section
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

# Hash bodies off the event loop above this many bytes (hashlib releases the GIL).
_HASH_IN_THREAD = 256 * 1024

_COLUMNS = (
    "id, dealer_id, mail_from, rcpt, data, received_at, state, attempts, next_attempt_at,"
    " last_error, findings, note, system, updated_at, size"
)
_LISTED = _COLUMNS.replace("data,", "''::bytea AS data,")

INSERT = (
    "INSERT INTO messages (id, dealer_id, mail_from, rcpt, data, sha256, size, received_at,"
    " state, attempts, next_attempt_at, last_error, findings, note, system, updated_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, '', $11, $12, $13, $8)"
)

_SELECT_DUE = (
    f"SELECT {_COLUMNS}, sha256(data) = sha256 AS intact FROM messages"
    " WHERE state = 'queued' AND next_attempt_at <= $1"
    " AND (lease_until IS NULL OR lease_until <= $1)"
    " AND (system OR dealer_id <> ALL($2::text[]))"
    " ORDER BY next_attempt_at, received_at, id LIMIT $3"
    " FOR UPDATE SKIP LOCKED"
)


def _message(row: Any) -> QueuedMessage:
    return QueuedMessage(
        id=MessageId(row["id"]),
        dealer_id=DealerId(row["dealer_id"]),
        mail_from=row["mail_from"],
        rcpt=row["rcpt"],
        data=bytes(row["data"]),
        received_at=row["received_at"],
        state=MessageState(row["state"]),
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        findings=tuple(row["findings"]),
        note=row["note"],
        system=row["system"],
        updated_at=row["updated_at"],
        size=row["size"],
    )


def _digests(bodies: Sequence[bytes]) -> list[bytes]:
    return [hashlib.sha256(body).digest() for body in bodies]


async def message_rows(messages: Sequence[NewMessage]) -> list[tuple[Any, ...]]:
    """The ``INSERT`` rows of ``messages``; ``ValueError`` for one no new message can be."""
    batch = list(messages)
    for message in batch:
        aware(message.received_at)
        if message.state not in (MessageState.QUEUED, MessageState.HELD):
            raise ValueError(f"{message.id}: a new message is QUEUED or HELD, not {message.state}")
    if not batch:
        return []
    bodies = [m.data for m in batch]
    if sum(map(len, bodies)) > _HASH_IN_THREAD:
        digests = await asyncio.to_thread(_digests, bodies)
    else:
        digests = _digests(bodies)
    rows = [
        (
            m.id,
            m.dealer_id,
            m.mail_from,
            m.rcpt,
            m.data,
            digest,
            len(m.data),
            m.received_at,
            m.state.value,
            m.received_at if m.state is MessageState.QUEUED else None,
            list(m.findings),
            m.note,
            m.system,
        )
        for m, digest in zip(batch, digests, strict=True)
    ]
    return rows


class QueueSection(Section):
    """The protocol's queue section (see ``Storage`` for the contract)."""

    async def enqueue(self, messages: Sequence[NewMessage]) -> None:
        """Store ``messages`` in one synchronous-commit transaction, all or nothing."""
        rows = await message_rows(messages)
        if not rows:
            return
        async with self._conn() as conn, conn.transaction():
            await conn.executemany(INSERT, rows)

    async def claim(
        self,
        node: str,
        limit: int,
        now: datetime,
        lease: timedelta,
        exclude_dealers: frozenset[DealerId] = frozenset(),
    ) -> list[QueuedMessage]:
        """Lease up to ``limit`` due messages to ``node``; quarantine corrupt ones."""
        if lease <= timedelta(0):
            raise ValueError("lease must be positive")
        if limit <= 0:
            return []
        now = aware(now)
        excluded = sorted(exclude_dealers)
        claimed: list[QueuedMessage] = []
        async with self._conn() as conn, conn.transaction():
            while len(claimed) < limit:
                rows = await conn.fetch(_SELECT_DUE, now, excluded, limit - len(claimed))
                good = [r for r in rows if r["intact"]]
                bad = [r for r in rows if not r["intact"]]
                for row in bad:
                    log.error(
                        "message %s dealer %s: stored body does not match its SHA-256; quarantined",
                        row["id"],
                        row["dealer_id"],
                    )
                if bad:
                    await conn.execute(
                        "UPDATE messages SET state = 'quarantined', next_attempt_at = NULL,"
                        " lease_owner = NULL, lease_until = NULL, updated_at = $2,"
                        " last_error = 'quarantined: stored body does not match its"
                        " SHA-256 checksum' WHERE id = ANY($1::text[])",
                        [r["id"] for r in bad],
                        now,
                    )
                if good:
                    await conn.execute(
                        "UPDATE messages SET lease_owner = $2, lease_until = $3"
                        " WHERE id = ANY($1::text[])",
                        [r["id"] for r in good],
                        node,
                        now + lease,
                    )
                claimed.extend(_message(r) for r in good)
                # Only a quarantine leaves room worth looking again for.
                if not bad:
                    break
        return claimed

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
        delivered = outcome.kind is OutcomeKind.DELIVERED
        state = MessageState.DELIVERED if delivered else MessageState.FAILED
        async with self._conn() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE messages SET state = $3, attempts = attempts + 1, last_error = $4,"
                " next_attempt_at = NULL, lease_owner = NULL, lease_until = NULL,"
                " updated_at = $5, data = CASE WHEN $6 THEN ''::bytea ELSE data END"
                " WHERE id = $1 AND state = 'queued' AND lease_owner = $2"
                " RETURNING dealer_id, system",
                message_id,
                node,
                state.value,
                outcome.summary(),
                aware(now),
                delivered,
            )
            if row is None:
                return False
            # The dealer's daily counters move with the outcome (the rates' volume).
            if not row["system"]:
                counts = DayCounts(sent=1, delivered=int(delivered))
                await bump_counts(conn, row["dealer_id"], now.date(), counts)
        return True

    async def defer(
        self,
        message_id: MessageId,
        node: str,
        outcome: RcptOutcome,
        next_attempt_at: datetime,
        now: datetime,
    ) -> bool:
        """Count an attempt and schedule the next one if ``node`` still holds the lease."""
        updated = await self._execute(
            "UPDATE messages SET attempts = attempts + 1, last_error = $3, next_attempt_at = $4,"
            " lease_owner = NULL, lease_until = NULL, updated_at = $5"
            " WHERE id = $1 AND state = 'queued' AND lease_owner = $2",
            message_id,
            node,
            outcome.summary(),
            aware(next_attempt_at),
            aware(now),
        )
        return updated == 1

    async def release(self, message_id: MessageId, node: str) -> bool:
        """Drop ``node``'s lease without counting an attempt."""
        updated = await self._execute(
            "UPDATE messages SET lease_owner = NULL, lease_until = NULL"
            " WHERE id = $1 AND state = 'queued' AND lease_owner = $2",
            message_id,
            node,
        )
        return updated == 1

    async def release_owned(self, node: str) -> int:
        """Drop every lease ``node`` holds (it restarted); return how many were dropped."""
        return await self._execute(
            "UPDATE messages SET lease_owner = NULL, lease_until = NULL"
            " WHERE lease_owner = $1 AND state = 'queued'",
            node,
        )

    async def hold(self, message_id: MessageId, note: str, now: datetime) -> bool:
        """Move a ``QUEUED`` message to ``HELD``; a lease on it is revoked (fenced off)."""
        updated = await self._execute(
            "UPDATE messages SET state = 'held', note = $2, next_attempt_at = NULL,"
            " lease_owner = NULL, lease_until = NULL, updated_at = $3"
            " WHERE id = $1 AND state = 'queued'",
            message_id,
            note,
            aware(now),
        )
        return updated == 1

    async def requeue(self, message_id: MessageId, now: datetime) -> bool:
        """Make a ``HELD``/``FAILED``/``QUEUED`` message that still has its body due now.

        ``attempts`` is kept. A lease on a ``QUEUED`` message is left alone, so a message
        being sent right now is not handed to a second node.
        """
        updated = await self._execute(
            "UPDATE messages SET state = 'queued', next_attempt_at = $2, updated_at = $2"
            " WHERE id = $1 AND state IN ('held', 'failed', 'queued')"
            " AND octet_length(data) = size",
            message_id,
            aware(now),
        )
        return updated == 1

    async def get(self, message_id: MessageId) -> QueuedMessage | None:
        """Return one message with its body (empty once delivered), or ``None``."""
        async with self._conn() as conn:
            row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM messages WHERE id = $1", message_id)
        return None if row is None else _message(row)

    async def list_messages(
        self,
        state: MessageState | None = None,
        dealer_id: DealerId | None = None,
        limit: int = 100,
    ) -> list[QueuedMessage]:
        """List messages newest first, without bodies."""
        where: list[str] = []
        args: list[Any] = []
        if state is not None:
            args.append(state.value)
            where.append(f"state = ${len(args)}")
        if dealer_id is not None:
            args.append(dealer_id)
            where.append(f"dealer_id = ${len(args)}")
        args.append(max(limit, 0))
        sql = f"SELECT {_LISTED} FROM messages"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY received_at DESC, id DESC LIMIT ${len(args)}"
        async with self._conn() as conn:
            rows = await conn.fetch(sql, *args)
        return [_message(r) for r in rows]

    async def delete(self, message_id: MessageId) -> bool:
        """Remove a message for good; a holder of its lease will find it gone."""
        return await self._execute("DELETE FROM messages WHERE id = $1", message_id) == 1

    async def stats(self) -> QueueStats:
        """Return counts per state, the oldest ``QUEUED`` time, and ``QUEUED``+``HELD`` bytes."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT state, count(*) AS n, min(received_at) AS oldest,"
                " sum(size)::bigint AS bytes FROM messages GROUP BY state"
            )
        counts = {MessageState(r["state"]): int(r["n"]) for r in rows}
        oldest = next((r["oldest"] for r in rows if r["state"] == "queued"), None)
        waiting = sum(int(r["bytes"]) for r in rows if r["state"] in ("queued", "held"))
        return QueueStats(counts=counts, oldest_queued_at=oldest, queued_bytes=waiting)

    async def expire_finished(self, before: datetime) -> int:
        """Delete ``DELIVERED``/``FAILED`` rows last updated before ``before``; return how many."""
        return await self._execute(
            "DELETE FROM messages WHERE state IN ('delivered', 'failed') AND updated_at < $1",
            aware(before),
        )
