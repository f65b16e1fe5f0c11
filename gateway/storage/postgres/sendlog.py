"""The send-log section of the PostgreSQL backend: duplicate fingerprints, claims, caps.

Owns ``SendLogSection`` (the protocol's "duplicates and frequency caps" section). Claims
are checked and recorded in the same transaction that stores the messages (see
``Storage.enqueue_claimed``).
"""

from __future__ import annotations

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
from gateway.storage.postgres.connection import aware, count
from gateway.storage.postgres.consent import insert_consent
from gateway.storage.postgres.queue import INSERT, message_rows
from gateway.storage.postgres.section import Section
from gateway.types import DealerId, MessageId, NewMessage


class _ClaimLost(Exception):
    """A duplicate claim failed inside ``enqueue_claimed``; rolls the transaction back."""


async def _claim(conn: Any, claim: SendClaim) -> bool:
    if claim.expected_version is not None and not claim.compare_version:
        await conn.execute(
            "INSERT INTO dup_recipients (rkey, version, updated_at) VALUES ($1, 1, $2)"
            " ON CONFLICT (rkey) DO UPDATE SET version = dup_recipients.version + 1,"
            " updated_at = EXCLUDED.updated_at",
            claim.recipient,
            aware(claim.sent_at),
        )
    elif claim.expected_version is not None:
        if claim.expected_version == 0:
            status = await conn.execute(
                "INSERT INTO dup_recipients (rkey, version, updated_at) VALUES ($1, 1, $2)"
                " ON CONFLICT (rkey) DO NOTHING",
                claim.recipient,
                aware(claim.sent_at),
            )
        else:
            status = await conn.execute(
                "UPDATE dup_recipients SET version = version + 1, updated_at = $3"
                " WHERE rkey = $1 AND version = $2",
                claim.recipient,
                claim.expected_version,
                aware(claim.sent_at),
            )
        if count(status) != 1:
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
            aware(claim.sent_at),
            claim.signature,
            claim.category.value,
            aware(claim.exact_since),
        )
        if won is None and not claim.exact_yields:
            return False
    return True


class SendLogSection(Section):
    """The protocol's duplicates section (see ``Storage`` for the contract)."""

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
                aware(since),
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
        consent: ConsentWrites = EMPTY_WRITES,
    ) -> bool:
        """Claim, record and enqueue in one durable transaction; False if a claim is lost.

        Claims go in key order, so two transactions over the same recipients take their
        row locks in the same order and cannot deadlock. A competing transaction on the
        same recipient makes this one wait for its commit; then the version (or the
        unique key) no longer matches and the claim is lost.
        """
        rows = await message_rows(messages)
        if not rows and not claims and not drops and consent is EMPTY_WRITES:
            return True
        try:
            async with self._conn() as conn, conn.transaction():
                for claim in sorted(claims, key=lambda c: (c.recipient, c.fingerprint)):
                    if not await _claim(conn, claim):
                        raise _ClaimLost
                if drops:
                    await conn.executemany(
                        "INSERT INTO dup_drops (dealer_id, recipient, submission_id, kind, code,"
                        " action, earlier, detail, at, subject) VALUES ($1, $2, $3, $4, $5, $6,"
                        " $7, $8, $9, $10)",
                        [
                            (d.dealer_id, d.recipient, d.submission_id, d.kind, d.code,
                             d.action, d.earlier, d.detail, aware(d.at), d.subject)
                            for d in drops
                        ],
                    )  # fmt: skip
                await insert_consent(conn, consent)
                if rows:
                    await conn.executemany(INSERT, rows)
        except _ClaimLost:
            return False
        return True

    async def list_duplicate_drops(
        self, dealer_id: DealerId | None = None, limit: int = 100
    ) -> list[DuplicateDrop]:
        """List recorded duplicate drops and refusals, newest first."""
        sql = (
            "SELECT dealer_id, recipient, submission_id, kind, code, action, earlier, detail,"
            " at, subject FROM dup_drops"
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
                subject=r["subject"],
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
                removed += count(await conn.execute(sql, aware(before), batch))
        return removed
