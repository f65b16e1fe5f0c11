"""PostgreSQL backend: one queue shared by several gateway nodes.

Owns ``PostgresStorage`` (see ``storage/base.py`` for the contract it honours).

Theory of operation
-------------------
* Durability: every pooled connection starts with ``synchronous_commit=on`` as a startup
  parameter, so a commit returns only once its WAL record is flushed (PostgreSQL docs
  §20.5.1, "synchronous_commit"), whatever the server or role default says. Startup
  parameters are also what ``RESET ALL`` returns to when the pool recycles a connection.
* Claims: ``SELECT … FOR UPDATE SKIP LOCKED`` (PostgreSQL docs, "The Locking Clause") lets
  nodes claim concurrently without waiting on each other's rows; under READ COMMITTED a
  locked row is re-checked against the WHERE clause after the lock is obtained, so a row
  another node has just leased is dropped. The lease itself (``lease_owner``,
  ``lease_until``) outlives the transaction: a node that dies keeps its messages only
  until ``lease_until``, after which any node can claim them.
* Fencing: ``complete``/``defer``/``release`` update only ``WHERE lease_owner = node``.
* Corruption: the claim query computes ``sha256(data) = sha256`` in the server (built-in
  since PostgreSQL 11), so the check costs no transfer, and a mismatch is quarantined.
* Bounded waits (reliability F16): a session holding a lock on one of our tables (a
  ``LOCK TABLE``, a long migration, a stuck transaction) must not hold a submission past
  its SMTP timeouts. Every pooled connection starts with ``lock_timeout`` (``LOCK_TIMEOUT``)
  so a statement waiting for a lock fails after a few seconds, and with
  ``statement_timeout`` equal to the client's ``COMMAND_TIMEOUT`` so the server abandons a
  statement the client has given up on (even when the client's cancel request is lost).
  Both are startup parameters, like ``synchronous_commit``, so ``RESET ALL`` keeps them.
  Migrations lift both for their own transaction: they may wait for another node's run.
* Errors: no asyncpg exception leaves this module; connection-level failures, lock and
  statement timeouts become ``StorageUnavailable``, anything else ``StorageError``. The
  SMTP side answers both with ``451 4.3.0`` (``454 4.7.0`` at AUTH).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from gateway.consent.rules import ConsentEvent, ConsentRecord, Preference
from gateway.duplicates.fingerprints import (
    Category,
    DuplicateDrop,
    PriorSend,
    RecipientHistory,
    SendClaim,
)
from gateway.errors import GatewayError, StorageError, StorageUnavailable
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
    initial_status,
)
from gateway.storage.migrate import apply_postgres
from gateway.storage.postgres import consent as postgres_consent
from gateway.types import (
    Credential,
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

CONNECT_TIMEOUT = 10.0  # seconds to establish one connection
ACQUIRE_TIMEOUT = 10.0  # seconds to wait for a free pooled connection
COMMAND_TIMEOUT = 60.0  # seconds for one statement (a large enqueue included)
# Seconds a statement waits for a lock another session holds. Our own transactions hold
# row locks for milliseconds, so 5 s means something outside the gateway holds it; the
# submission then gets 451 4.3.0 well inside the CRM's DATA timeout (RFC 5321 §4.5.3.2.6).
LOCK_TIMEOUT = 5.0

# Hash bodies off the event loop above this many bytes (hashlib releases the GIL).
_HASH_IN_THREAD = 256 * 1024

# Errors meaning "the server cannot be used right now": SQLSTATE class 08 (connection
# exception), class 57 (operator intervention: shutdown, cannot connect now, and 57014
# query_canceled, which statement_timeout raises), 53300 (too many connections) and 55P03
# (lock_not_available, which lock_timeout raises: the same case as SQLite's SQLITE_BUSY).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.LockNotAvailableError,
)

# Startup parameters of every pooled connection (see "Bounded waits" above).
_SERVER_SETTINGS = {
    "synchronous_commit": "on",
    "application_name": "mailgate",
    "lock_timeout": f"{int(LOCK_TIMEOUT * 1000)}ms",
    "statement_timeout": f"{int(COMMAND_TIMEOUT * 1000)}ms",
}

_COLUMNS = (
    "id, dealer_id, mail_from, rcpt, data, received_at, state, attempts, next_attempt_at,"
    " last_error, findings, note, system, updated_at, size"
)
_LISTED = _COLUMNS.replace("data,", "''::bytea AS data,")

_INSERT = (
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


@contextmanager
def _errors(unavailable: bool = False) -> Iterator[None]:
    """Translate asyncpg and socket errors; ``unavailable`` makes every failure one."""
    try:
        yield
    except GatewayError:
        raise
    except _UNAVAILABLE as exc:
        raise StorageUnavailable(f"postgres: {type(exc).__name__}: {exc}") from exc
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        error = StorageUnavailable if unavailable else StorageError
        raise error(f"postgres: {type(exc).__name__}: {exc}") from exc


def _aware(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"naive datetime {when!r}: the store needs timezone-aware times")
    return when


def _count(status: str) -> int:
    """Rows affected, from a command tag such as ``UPDATE 1`` or ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])


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


def _credential(row: Any) -> Credential:
    return Credential(
        username=row["username"],
        dealer_id=DealerId(row["dealer_id"]),
        password_hash=row["password_hash"],
        created_at=row["created_at"],
    )


def _digests(bodies: Sequence[bytes]) -> list[bytes]:
    return [hashlib.sha256(body).digest() for body in bodies]


class PostgresStorage:
    """``Storage`` on a PostgreSQL database. Build it with ``await PostgresStorage.open(url)``."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, min_size: int = 1, max_size: int = 10) -> PostgresStorage:
        """Connect a pool of ``min_size``..``max_size`` connections to ``url`` and migrate.

        Raises ``StorageUnavailable`` if the server cannot be reached or refuses us.
        """
        with _errors(unavailable=True):
            pool = await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                server_settings=_SERVER_SETTINGS,
            )
        try:
            with _errors():
                async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                    applied = await apply_postgres(conn)
        except BaseException:
            pool.terminate()
            raise
        if applied:
            log.info("postgres: applied migrations %s", applied)
        return cls(pool)

    async def close(self) -> None:
        """Close the pool, waiting briefly for borrowed connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            async with asyncio.timeout(ACQUIRE_TIMEOUT):
                await self._pool.close()
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            self._pool.terminate()

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Any]:
        if self._closed:
            raise StorageError("postgres: the store is closed")
        with _errors():
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                yield conn

    async def _execute(self, sql: str, *args: Any) -> int:
        async with self._conn() as conn:
            return _count(await conn.execute(sql, *args))

    async def ping(self) -> None:
        """Raise ``StorageError`` unless the server answers ``SELECT 1``."""
        async with self._conn() as conn:
            await conn.fetchval("SELECT 1")

    # -- queue ---------------------------------------------------------------------------

    async def enqueue(self, messages: Sequence[NewMessage]) -> None:
        """Store ``messages`` in one synchronous-commit transaction, all or nothing."""
        rows = await self._message_rows(messages)
        if not rows:
            return
        async with self._conn() as conn, conn.transaction():
            await conn.executemany(_INSERT, rows)

    async def _message_rows(self, messages: Sequence[NewMessage]) -> list[tuple[Any, ...]]:
        batch = list(messages)
        for message in batch:
            _aware(message.received_at)
            if message.state not in (MessageState.QUEUED, MessageState.HELD):
                raise ValueError(
                    f"{message.id}: a new message is QUEUED or HELD, not {message.state}"
                )
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
        now = _aware(now)
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
                _aware(now),
                delivered,
            )
            if row is None:
                return False
            # The dealer's daily counters move with the outcome (the rates' volume).
            if not row["system"]:
                counts = DayCounts(sent=1, delivered=int(delivered))
                await _pg_add_counts(conn, row["dealer_id"], now.date(), counts)
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
            _aware(next_attempt_at),
            _aware(now),
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
            _aware(now),
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
            _aware(now),
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
            _aware(before),
        )

    # -- credentials ---------------------------------------------------------------------

    async def get_credential(self, username: str) -> Credential | None:
        """Return the credential for ``username``, or ``None``."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT username, dealer_id, password_hash, created_at FROM credentials"
                " WHERE username = $1",
                username,
            )
        return None if row is None else _credential(row)

    async def set_credential(self, credential: Credential) -> None:
        """Create or replace the credential for ``credential.username``."""
        await self._execute(
            "INSERT INTO credentials (username, dealer_id, password_hash, created_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (username) DO UPDATE SET"
            " dealer_id = EXCLUDED.dealer_id, password_hash = EXCLUDED.password_hash,"
            " created_at = EXCLUDED.created_at",
            credential.username,
            credential.dealer_id,
            credential.password_hash,
            _aware(credential.created_at),
        )

    async def delete_credential(self, username: str) -> bool:
        """Remove a credential; return whether it existed."""
        return await self._execute("DELETE FROM credentials WHERE username = $1", username) == 1

    async def list_credentials(self, dealer_id: DealerId | None = None) -> list[Credential]:
        """List credentials by username, optionally for one dealer."""
        sql = "SELECT username, dealer_id, password_hash, created_at FROM credentials"
        args: tuple[Any, ...] = ()
        if dealer_id is not None:
            sql += " WHERE dealer_id = $1"
            args = (dealer_id,)
        async with self._conn() as conn:
            rows = await conn.fetch(sql + " ORDER BY username", *args)
        return [_credential(r) for r in rows]

    # -- duplicates and frequency caps (Storage protocol, "duplicates" section) ----------

    async def recipient_histories(
        self, keys: Sequence[bytes], since: datetime
    ) -> dict[bytes, RecipientHistory]:
        """Return each key's version and its sends since ``since``, newest first."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        async with self._conn() as conn:
            # Version first (see the protocol): under READ COMMITTED each statement has its
            # own snapshot, and this order makes a send committed in between harmless.
            versions = {
                bytes(r["rkey"]): int(r["version"])
                for r in await conn.fetch(
                    "SELECT rkey, version FROM dup_recipients WHERE rkey = ANY($1::bytea[])",
                    wanted,
                )
            }
            rows = await conn.fetch(
                "SELECT rkey, message_id, sent_at, fingerprint, signature, category"
                " FROM dup_sends WHERE rkey = ANY($1::bytea[]) AND sent_at >= $2"
                " ORDER BY sent_at DESC",
                wanted,
                _aware(since),
            )
        sends: dict[bytes, list[PriorSend]] = {key: [] for key in wanted}
        for row in rows:
            sends[bytes(row["rkey"])].append(
                PriorSend(
                    message_id=MessageId(row["message_id"]),
                    sent_at=row["sent_at"],
                    fingerprint=bytes(row["fingerprint"]),
                    signature=bytes(row["signature"]),
                    category=Category(row["category"]),
                )
            )
        return {
            key: RecipientHistory(key, versions.get(key, 0), tuple(sends[key])) for key in wanted
        }

    async def enqueue_claimed(
        self,
        messages: Sequence[NewMessage],
        claims: Sequence[SendClaim],
        drops: Sequence[DuplicateDrop] = (),
    ) -> bool:
        """Claim, record and enqueue in one durable transaction; False if a claim is lost.

        Claims go in key order, so two transactions over the same recipients take their
        row locks in the same order and cannot deadlock. A competing transaction on the
        same recipient makes this one wait for its commit; then the version (or the
        unique key) no longer matches and the claim is lost.
        """
        rows = await self._message_rows(messages)
        if not rows and not claims and not drops:
            return True
        try:
            async with self._conn() as conn, conn.transaction():
                for claim in sorted(claims, key=lambda c: (c.recipient, c.fingerprint)):
                    if not await _claim(conn, claim):
                        raise _ClaimLost
                if drops:
                    await conn.executemany(
                        "INSERT INTO dup_drops (dealer_id, recipient, submission_id, kind, code,"
                        " action, earlier, detail, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
                        " $9)",
                        [
                            (d.dealer_id, d.recipient, d.submission_id, d.kind, d.code,
                             d.action, d.earlier, d.detail, _aware(d.at))
                            for d in drops
                        ],
                    )  # fmt: skip
                if rows:
                    await conn.executemany(_INSERT, rows)
        except _ClaimLost:
            return False
        return True

    async def list_duplicate_drops(
        self, dealer_id: DealerId | None = None, limit: int = 100
    ) -> list[DuplicateDrop]:
        """List recorded duplicate drops and refusals, newest first."""
        sql = (
            "SELECT dealer_id, recipient, submission_id, kind, code, action, earlier, detail,"
            " at FROM dup_drops"
        )
        args: list[Any] = []
        if dealer_id is not None:
            args.append(dealer_id)
            sql += " WHERE dealer_id = $1"
        args.append(max(limit, 0))
        sql += f" ORDER BY at DESC, id DESC LIMIT ${len(args)}"
        async with self._conn() as conn:
            rows = await conn.fetch(sql, *args)
        return [
            DuplicateDrop(
                dealer_id=DealerId(r["dealer_id"]),
                recipient=r["recipient"],
                submission_id=r["submission_id"],
                kind=r["kind"],
                code=r["code"],
                action=r["action"],
                earlier=r["earlier"],
                detail=r["detail"],
                at=r["at"],
            )
            for r in rows
        ]

    async def expire_duplicates(
        self, sends_before: datetime, drops_before: datetime, batch: int = 5000
    ) -> int:
        """Delete at most ``batch`` expired rows of each duplicate table; return how many."""
        removed = 0
        async with self._conn() as conn:
            # Each statement is its own short transaction; ctid = ANY(ARRAY(...)) is a TID
            # scan over just the rows the index found.
            for sql, before in (
                (
                    "DELETE FROM dup_sends WHERE ctid = ANY(ARRAY(SELECT ctid FROM dup_sends"
                    " WHERE sent_at < $1 ORDER BY sent_at LIMIT $2))",
                    sends_before,
                ),
                (
                    "DELETE FROM dup_recipients WHERE ctid = ANY(ARRAY(SELECT ctid FROM"
                    " dup_recipients WHERE updated_at < $1 ORDER BY updated_at LIMIT $2))",
                    sends_before,
                ),
                (
                    "DELETE FROM dup_drops WHERE ctid = ANY(ARRAY(SELECT ctid FROM dup_drops"
                    " WHERE at < $1 ORDER BY at LIMIT $2))",
                    drops_before,
                ),
            ):
                removed += _count(await conn.execute(sql, _aware(before), batch))
        return removed

    # -- end of duplicates ---------------------------------------------------------------

    # -- feedback, suppression and dealer state (Storage protocol, "feedback" section) ---

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
                _aware(event.at), event.detail, event.subject, event.source,
            )  # fmt: skip
            if not inserted:
                return False
            await _pg_add_counts(conn, event.dealer_id, event.at.date(), event_counts(event.kind))
            if suppression is not None:
                await _pg_add_suppression(conn, suppression)
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
                _aware(since),
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
                _aware(since),
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
            return await _pg_add_suppression(conn, entry)

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
                _aware(now),
            )
        return None if row is None else _pg_suppression(row)

    async def lift_suppression(
        self, dealer_id: DealerId | None, address: str, by: str, reason: str, now: datetime
    ) -> bool:
        """Close the open entry of one list and address, recording who and why."""
        updated = await self._execute(
            "UPDATE suppressions SET lifted_at = $1, lifted_by = $2, lift_reason = $3"
            " WHERE address = $4 AND scope = $5 AND lifted_at IS NULL",
            _aware(now),
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
            args.append(_aware(active_at))
            where.append(f"lifted_at IS NULL AND (expires_at IS NULL OR expires_at > ${len(args)})")
        args.append(max(limit, 0))
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions WHERE {' AND '.join(where)}"
                f" ORDER BY id LIMIT ${len(args)}",
                *args,
            )
        return [_pg_suppression(r) for r in rows]

    async def count_suppressions(self, now: datetime) -> dict[str, int]:
        """Active entries per list (dealer id, or ``*`` for the global list)."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT scope, count(*) AS n FROM suppressions WHERE lifted_at IS NULL"
                " AND (expires_at IS NULL OR expires_at > $1) GROUP BY scope",
                _aware(now),
            )
        return {(r["scope"] or GLOBAL): int(r["n"]) for r in rows}

    async def add_counts(self, dealer_id: DealerId, day: date, counts: DayCounts) -> None:
        """Add ``counts`` to the dealer's counters of ``day``."""
        async with self._conn() as conn:
            await _pg_add_counts(conn, dealer_id, day, counts)

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
        return None if row is None else _pg_status(row)

    async def list_dealer_statuses(self) -> list[DealerStatus]:
        """Every dealer with a recorded state."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_STATUS_COLUMNS} FROM dealer_status ORDER BY dealer_id"
            )
        return [_pg_status(r) for r in rows]

    async def change_dealer_state(
        self, change: StateChange, baseline: DayCounts | None = None
    ) -> StateChange | None:
        """Compare-and-set the dealer's state; record the transition in its history."""
        _aware(change.at)
        try:
            async with self._conn() as conn, conn.transaction():
                row = await conn.fetchrow(
                    f"SELECT {_STATUS_COLUMNS} FROM dealer_status WHERE dealer_id = $1 FOR UPDATE",
                    change.dealer_id,
                )
                current = (
                    _pg_status(row)
                    if row is not None
                    else initial_status(change.dealer_id, change.at)
                )
                if current.state is not change.previous:
                    return None
                change_id = await conn.fetchval(
                    "INSERT INTO dealer_history (dealer_id, state, previous, reason, actor,"
                    " by_name, at, expires_at, evidence)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                    change.dealer_id, change.state.value, change.previous.value, change.reason,
                    change.actor.value, change.by, change.at, change.expires_at,
                    json.dumps(change.evidence.as_dict()),
                )  # fmt: skip
                recorded = replace(change, id=int(change_id))
                status = current.after(recorded, baseline)
                values = (
                    status.dealer_id, status.state.value, status.reason, status.actor.value,
                    status.since, status.expires_at, status.counts_from,
                    json.dumps(status.baseline.as_dict()), status.change_id,
                )  # fmt: skip
                if row is None:
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
        return recorded

    async def dealer_history(self, dealer_id: DealerId, limit: int = 50) -> list[StateChange]:
        """The dealer's transitions, newest first."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT id, dealer_id, state, previous, reason, actor, by_name, at, expires_at,"
                " evidence FROM dealer_history WHERE dealer_id = $1 ORDER BY id DESC LIMIT $2",
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
            )
            for r in rows
        ]

    # -- end of feedback -----------------------------------------------------------------

    # -- consent (Storage protocol, "consent" section; storage/postgres_consent.py) ------

    async def record_consent(
        self,
        events: Sequence[ConsentEvent],
        preferences: Sequence[Preference] = (),
        now: datetime | None = None,
    ) -> int:
        """Record events and preferences in one transaction; rows new or changed."""
        stamp = _aware(now or datetime.now(UTC))
        if not events and not preferences:
            return 0
        async with self._conn() as conn, conn.transaction():
            return await postgres_consent.record(conn, events, preferences, stamp)

    async def consent_records(
        self, dealer_id: DealerId, addresses: Sequence[str]
    ) -> dict[str, ConsentRecord]:
        """Each address (as given) with its record."""
        async with self._conn() as conn:
            return await postgres_consent.records(conn, dealer_id, list(addresses))

    async def consent_page(
        self, dealer_id: DealerId, after: str = "", limit: int = 1000
    ) -> list[tuple[str, ConsentRecord]]:
        """The dealer's recipients after ``after`` in address order, with their records."""
        async with self._conn() as conn:
            return await postgres_consent.page(conn, dealer_id, after, limit)

    # -- end of consent ------------------------------------------------------------------


# -- duplicates helpers (module level) ----------------------------------------------------


class _ClaimLost(Exception):
    """A duplicate claim failed inside ``enqueue_claimed``; rolls the transaction back."""


async def _claim(conn: Any, claim: SendClaim) -> bool:
    if claim.expected_version is not None:
        if claim.expected_version == 0:
            status = await conn.execute(
                "INSERT INTO dup_recipients (rkey, version, updated_at) VALUES ($1, 1, $2)"
                " ON CONFLICT (rkey) DO NOTHING",
                claim.recipient,
                _aware(claim.sent_at),
            )
        else:
            status = await conn.execute(
                "UPDATE dup_recipients SET version = version + 1, updated_at = $3"
                " WHERE rkey = $1 AND version = $2",
                claim.recipient,
                claim.expected_version,
                _aware(claim.sent_at),
            )
        if _count(status) != 1:
            return False
    if claim.claim_exact:
        won = await conn.fetchval(
            "INSERT INTO dup_sends (rkey, fingerprint, message_id, sent_at, signature, category)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (rkey, fingerprint) DO UPDATE SET"
            " message_id = EXCLUDED.message_id, sent_at = EXCLUDED.sent_at,"
            " signature = EXCLUDED.signature, category = EXCLUDED.category"
            " WHERE dup_sends.sent_at < $7 RETURNING true",
            claim.recipient,
            claim.fingerprint,
            claim.message_id,
            _aware(claim.sent_at),
            claim.signature,
            claim.category.value,
            _aware(claim.exact_since),
        )
        if won is None:
            return False
    return True


# -- end of duplicates helpers ------------------------------------------------------------


# -- feedback helpers (module level) --------------------------------------------------------

_SUPPRESSION_COLUMNS = (
    "id, scope, address, reason, source, created_at, expires_at, lifted_at, lifted_by, lift_reason"
)
_STATUS_COLUMNS = (
    "dealer_id, state, reason, actor, since, expires_at, counts_from, baseline, change_id"
)


class _StateMoved(Exception):
    """Another node recorded the dealer's first state at the same time; roll back."""


def _pg_suppression(row: Any) -> Suppression:
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


def _pg_status(row: Any) -> DealerStatus:
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


async def _pg_add_counts(conn: Any, dealer_id: str, day: date, counts: DayCounts) -> None:
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


async def _pg_add_suppression(conn: Any, entry: Suppression) -> bool:
    scope, address = entry.dealer_id or "", normalise(entry.address)
    now = _aware(entry.created_at)
    # An entry that has run out still holds the one open slot: close it as expired.
    await conn.execute(
        "UPDATE suppressions SET lifted_at = expires_at, lifted_by = 'expiry',"
        " lift_reason = 'expired' WHERE address = $1 AND scope = $2 AND lifted_at IS NULL"
        " AND expires_at IS NOT NULL AND expires_at <= $3",
        address,
        scope,
        now,
    )
    added = await conn.fetchval(
        "INSERT INTO suppressions (scope, address, reason, source, created_at, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (address, scope) WHERE lifted_at IS NULL DO NOTHING RETURNING true",
        scope, address, entry.reason, entry.source, now, entry.expires_at,
    )  # fmt: skip
    if added:
        return True
    # A temporary entry is extended when the new one lasts longer (or for ever).
    extended = await conn.fetchval(
        "UPDATE suppressions SET expires_at = $3, reason = $4, source = $5"
        " WHERE address = $1 AND scope = $2 AND lifted_at IS NULL AND expires_at IS NOT NULL"
        " AND ($3::timestamptz IS NULL OR expires_at < $3) RETURNING true",
        address, scope, entry.expires_at, entry.reason, entry.source,
    )  # fmt: skip
    return bool(extended)


# -- end of feedback helpers ----------------------------------------------------------------
