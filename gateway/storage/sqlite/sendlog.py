"""The send-log section of the SQLite backend: duplicate fingerprints, claims, caps.

Owns ``SendLogSection`` (the protocol's "duplicates and frequency caps" section) and the
statements the group commit runs for a claimed enqueue: ``apply_claims`` and
``insert_drops``. Claims are checked and recorded in the same transaction that stores the
messages (see ``Storage.enqueue_claimed``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.consent.ledger import EMPTY_WRITES, ConsentWrites
from gateway.duplicates.fingerprints import (
    Category,
    DuplicateDrop,
    PriorSend,
    RecipientHistory,
    SendClaim,
)
from gateway.storage.sqlite.commit import Batch
from gateway.storage.sqlite.connection import from_us, to_us, write
from gateway.storage.sqlite.queue import check_enqueue
from gateway.storage.sqlite.section import Section
from gateway.types import DealerId, MessageId, NewMessage


def apply_claims(conn: sqlite3.Connection, claims: Sequence[SendClaim]) -> bool:
    """Check and record ``claims``; False as soon as one is lost (the caller rolls back).

    The writer connection runs one transaction at a time under ``BEGIN IMMEDIATE``, so
    these reads and writes are serialized with every other node's on the same file.
    """
    for claim in sorted(claims, key=lambda c: (c.recipient, c.fingerprint)):
        sent_us = to_us(claim.sent_at)
        if claim.expected_version is not None and not claim.compare_version:
            conn.execute(
                "INSERT INTO dup_recipients (rkey, version, updated_at) VALUES (?, 1, ?)"
                " ON CONFLICT (rkey) DO UPDATE SET version = version + 1,"
                " updated_at = excluded.updated_at",
                (claim.recipient, sent_us),
            )
        elif claim.expected_version is not None:
            if claim.expected_version == 0:
                changed = conn.execute(
                    "INSERT INTO dup_recipients (rkey, version, updated_at) VALUES (?, 1, ?)"
                    " ON CONFLICT (rkey) DO NOTHING",
                    (claim.recipient, sent_us),
                ).rowcount
            else:
                changed = conn.execute(
                    "UPDATE dup_recipients SET version = version + 1, updated_at = ?"
                    " WHERE rkey = ? AND version = ?",
                    (sent_us, claim.recipient, claim.expected_version),
                ).rowcount
            if changed != 1:
                return False
        if claim.claim_exact:
            row = conn.execute(
                "INSERT INTO dup_sends (rkey, fingerprint, message_id, sent_at, signature,"
                " category) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (rkey, fingerprint) DO UPDATE SET message_id = excluded.message_id,"
                " sent_at = excluded.sent_at, signature = excluded.signature,"
                " category = excluded.category WHERE dup_sends.sent_at < ? RETURNING 1",
                (
                    claim.recipient,
                    claim.fingerprint,
                    claim.message_id,
                    sent_us,
                    claim.signature,
                    claim.category.value,
                    to_us(claim.exact_since),
                ),
            ).fetchone()
            if row is None and not claim.exact_yields:
                return False
    return True


def insert_drops(conn: sqlite3.Connection, drops: Sequence[DuplicateDrop]) -> None:
    """Record duplicate drops and refusals (inside the caller's transaction)."""
    conn.executemany(
        "INSERT INTO dup_drops (dealer_id, recipient, submission_id, kind, code, action,"
        " earlier, detail, at, subject) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (d.dealer_id, d.recipient, d.submission_id, d.kind, d.code, d.action, d.earlier,
             d.detail, to_us(d.at), d.subject)
            for d in drops
        ],
    )  # fmt: skip


def _drop(row: Sequence[Any]) -> DuplicateDrop:
    return DuplicateDrop(
        dealer_id=DealerId(row[0]),
        recipient=row[1],
        submission_id=row[2],
        kind=row[3],
        code=row[4],
        action=row[5],
        earlier=row[6],
        detail=row[7],
        at=from_us(row[8]),
        subject=row[9],
    )


class SendLogSection(Section):
    """The protocol's duplicates section (see ``Storage`` for the contract)."""

    async def recipient_histories(
        self, keys: Sequence[bytes], since: datetime
    ) -> dict[bytes, RecipientHistory]:
        """Return each key's version and its sends since ``since``, newest first."""
        self._check_open()
        wanted = list(dict.fromkeys(keys))
        since_us = to_us(since)
        if not wanted:
            return {}

        def read(conn: sqlite3.Connection) -> dict[bytes, RecipientHistory]:
            marks = ", ".join("?" * len(wanted))
            # One read transaction: both statements see the same snapshot (WAL).
            conn.execute("BEGIN")
            try:
                versions = dict(
                    conn.execute(
                        f"SELECT rkey, version FROM dup_recipients WHERE rkey IN ({marks})",
                        wanted,
                    ).fetchall()
                )
                rows = conn.execute(
                    "SELECT rkey, message_id, sent_at, fingerprint, signature, category"
                    f" FROM dup_sends WHERE rkey IN ({marks}) AND sent_at >= ?"
                    " ORDER BY sent_at DESC",
                    [*wanted, since_us],
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            sends: dict[bytes, list[PriorSend]] = {key: [] for key in wanted}
            for row in rows:
                sends[bytes(row[0])].append(
                    PriorSend(
                        message_id=MessageId(row[1]),
                        sent_at=from_us(row[2]),
                        fingerprint=bytes(row[3]),
                        signature=bytes(row[4]),
                        category=Category(row[5]),
                    )
                )
            return {
                key: RecipientHistory(key, int(versions.get(key, 0)), tuple(sends[key]))
                for key in wanted
            }

        return await self._reader.run(read)

    async def enqueue_claimed(
        self,
        messages: Sequence[NewMessage],
        claims: Sequence[SendClaim],
        drops: Sequence[DuplicateDrop] = (),
        consent: ConsentWrites = EMPTY_WRITES,
    ) -> bool:
        """Claim, record and enqueue in one durable transaction; False if a claim is lost."""
        self._check_open()
        batch = list(messages)
        check_enqueue(batch)
        if not batch and not claims and not drops and consent is EMPTY_WRITES:
            return True
        return await self._commits.submit(Batch(batch, tuple(claims), tuple(drops), consent))

    async def list_duplicate_drops(
        self, dealer_id: DealerId | None = None, limit: int = 100
    ) -> list[DuplicateDrop]:
        """List recorded duplicate drops and refusals, newest first."""
        self._check_open()
        sql = (
            "SELECT dealer_id, recipient, submission_id, kind, code, action, earlier, detail,"
            " at, subject FROM dup_drops"
        )
        params: list[Any] = []
        if dealer_id is not None:
            sql += " WHERE dealer_id = ?"
            params.append(dealer_id)
        sql += " ORDER BY at DESC, id DESC LIMIT ?"
        params.append(max(limit, 0))

        def select(conn: sqlite3.Connection) -> list[DuplicateDrop]:
            return [_drop(r) for r in conn.execute(sql, params)]

        return await self._reader.run(select)

    async def expire_duplicates(
        self, sends_before: datetime, drops_before: datetime, batch: int = 5000
    ) -> int:
        """Delete at most ``batch`` expired rows of each duplicate table; return how many."""
        self._check_open()
        sends_us, drops_us = to_us(sends_before), to_us(drops_before)

        def expire(conn: sqlite3.Connection) -> int:
            removed = conn.execute(
                "DELETE FROM dup_sends WHERE (rkey, fingerprint) IN (SELECT rkey, fingerprint"
                " FROM dup_sends WHERE sent_at < ? ORDER BY sent_at LIMIT ?)",
                (sends_us, batch),
            ).rowcount
            removed += conn.execute(
                "DELETE FROM dup_recipients WHERE rkey IN (SELECT rkey FROM dup_recipients"
                " WHERE updated_at < ? ORDER BY updated_at LIMIT ?)",
                (sends_us, batch),
            ).rowcount
            removed += conn.execute(
                "DELETE FROM dup_drops WHERE id IN (SELECT id FROM dup_drops WHERE at < ?"
                " ORDER BY at LIMIT ?)",
                (drops_us, batch),
            ).rowcount
            return removed

        return await self._writer.run(write(expire))
