"""The consent section of the PostgreSQL backend (``PostgresStorage.record_consent`` and friends).

Coroutines over one asyncpg connection; ``ConsentSection`` wraps them. A batch is
written with one ``INSERT … SELECT FROM unnest(…)`` per table: one round trip and one
statement for thousands of rows, which is what makes a million-row import take minutes.
``insert_consent`` writes a submission's ledger entries and refusals inside the enqueue's
transaction (``enqueue_claimed``), with the messages they are about.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.consent.ledger import ConsentRefusal, ConsentWrites, LedgerEntry
from gateway.consent.rules import (
    ConsentEvent,
    ConsentRecord,
    Interaction,
    Preference,
    Topic,
    collapse,
    normalise_address,
)
from gateway.storage.postgres.connection import aware, count
from gateway.storage.postgres.section import Section
from gateway.types import DealerId, MessageId

_EVENT_COLUMNS = (
    "dealer_id, address, kind, occurred_on, ref, last_payment, source, proof, recorded_at"
)
_PREF_COLUMNS = "dealer_id, address, channel, topic, at, granted, source, recorded_at"

_UPSERT_EVENTS = (
    f"INSERT INTO consent_events AS c ({_EVENT_COLUMNS})"
    " SELECT d, a, k, o, r, p, s, pr, $9 FROM unnest($1::text[], $2::text[], $3::text[],"
    " $4::date[], $5::text[], $6::date[], $7::text[], $8::text[]) AS t(d, a, k, o, r, p, s, pr)"
    " ON CONFLICT (dealer_id, address, kind, occurred_on, ref) DO UPDATE SET"
    " last_payment = CASE WHEN coalesce(excluded.last_payment > c.last_payment,"
    " excluded.last_payment IS NOT NULL) THEN excluded.last_payment ELSE c.last_payment END,"
    " source = CASE WHEN c.source = '' THEN excluded.source ELSE c.source END,"
    " proof = CASE WHEN c.proof = '' THEN excluded.proof ELSE c.proof END"
    " WHERE coalesce(excluded.last_payment > c.last_payment, excluded.last_payment IS NOT NULL)"
    " OR (c.source = '' AND excluded.source <> '') OR (c.proof = '' AND excluded.proof <> '')"
)
_UPSERT_PREFS = (
    f"INSERT INTO consent_preferences AS c ({_PREF_COLUMNS})"
    " SELECT DISTINCT ON (d, a, ch, t, w) d, a, ch, t, w, g, s, $8"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],"
    " $6::boolean[], $7::text[]) AS u(d, a, ch, t, w, g, s) ORDER BY d, a, ch, t, w, g"
    " ON CONFLICT (dealer_id, address, channel, topic, at) DO UPDATE SET granted = false"
    " WHERE c.granted AND NOT excluded.granted"
)


async def record(
    conn: Any,
    events: Sequence[ConsentEvent],
    preferences: Sequence[Preference],
    now: datetime,
) -> int:
    """Upsert ``events`` and ``preferences`` (inside the caller's transaction)."""
    changed = 0
    if events:
        rows = collapse(events)
        status = await conn.execute(
            _UPSERT_EVENTS,
            [e.dealer_id for e in rows],
            [normalise_address(e.address) for e in rows],
            [e.kind.value for e in rows],
            [e.on for e in rows],
            [e.ref for e in rows],
            [e.last_payment for e in rows],
            [e.source for e in rows],
            [e.proof for e in rows],
            now,
        )
        changed += count(status)
    if preferences:
        status = await conn.execute(
            _UPSERT_PREFS,
            [p.dealer_id for p in preferences],
            [normalise_address(p.address) for p in preferences],
            [p.channel for p in preferences],
            [p.topic.value for p in preferences],
            [p.at for p in preferences],
            [p.granted for p in preferences],
            [p.source for p in preferences],
            now,
        )
        changed += count(status)
    return changed


def _event(row: Any) -> ConsentEvent:
    return ConsentEvent(
        dealer_id=DealerId(row["dealer_id"]),
        address=row["address"],
        kind=Interaction(row["kind"]),
        on=row["occurred_on"],
        ref=row["ref"],
        last_payment=row["last_payment"],
        source=row["source"],
        proof=row["proof"],
    )


def _preference(row: Any) -> Preference:
    return Preference(
        dealer_id=DealerId(row["dealer_id"]),
        address=row["address"],
        channel=row["channel"],
        topic=Topic(row["topic"]),
        at=row["at"],
        granted=row["granted"],
        source=row["source"],
    )


async def _by_address(conn: Any, dealer_id: str, wanted: list[str]) -> dict[str, ConsentRecord]:
    events: dict[str, list[ConsentEvent]] = {}
    prefs: dict[str, list[Preference]] = {}
    for row in await conn.fetch(
        f"SELECT {_EVENT_COLUMNS} FROM consent_events"
        " WHERE dealer_id = $1 AND address = ANY($2::text[])",
        dealer_id,
        wanted,
    ):
        events.setdefault(row["address"], []).append(_event(row))
    for row in await conn.fetch(
        f"SELECT {_PREF_COLUMNS} FROM consent_preferences"
        " WHERE dealer_id = $1 AND address = ANY($2::text[])",
        dealer_id,
        wanted,
    ):
        prefs.setdefault(row["address"], []).append(_preference(row))
    return {
        address: ConsentRecord(tuple(events.get(address, ())), tuple(prefs.get(address, ())))
        for address in wanted
    }


async def records(conn: Any, dealer_id: str, addresses: Sequence[str]) -> dict[str, ConsentRecord]:
    """Each address as given, with the record of its normalised form."""
    keys = {address: normalise_address(address) for address in addresses}
    found = await _by_address(conn, dealer_id, sorted(set(keys.values())))
    return {address: found[key] for address, key in keys.items()}


async def page(
    conn: Any, dealer_id: str, after: str, limit: int
) -> list[tuple[str, ConsentRecord]]:
    """The dealer's next ``limit`` recipients after ``after``, in address order."""
    rows = await conn.fetch(
        "SELECT address FROM (SELECT DISTINCT address FROM consent_events"
        " WHERE dealer_id = $1 AND address > $2 ORDER BY address LIMIT $3) e"
        " UNION SELECT address FROM (SELECT DISTINCT address FROM consent_preferences"
        " WHERE dealer_id = $1 AND address > $2 ORDER BY address LIMIT $3) p"
        " ORDER BY address LIMIT $3",
        dealer_id,
        after,
        max(limit, 0),
    )
    wanted = [row["address"] for row in rows]
    found = await _by_address(conn, dealer_id, wanted)
    return [(address, found[address]) for address in wanted]


_LEDGER_COLUMNS = (
    "message_id, submission_id, dealer_id, recipient, at, category, topic, rules, law, preset,"
    " time_zone, basis, reason, eligible, event_kind, event_on, last_payment, ref, source, proof,"
    " window_length, window_ends, statement_at, label"
)
_REFUSAL_COLUMNS = "dealer_id, recipient, submission_id, code, action, detail, went_on, dsn, at"


async def insert_consent(conn: Any, writes: ConsentWrites) -> None:
    """Write ledger entries and refusals (inside the caller's transaction)."""
    if writes.entries:
        await conn.executemany(
            f"INSERT INTO consent_ledger ({_LEDGER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7,"
            " $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)",
            [
                (
                    e.message_id, e.submission_id, e.dealer_id, e.recipient, aware(e.at),
                    e.category, e.topic, e.rules, e.law, e.preset, e.time_zone, e.basis,
                    e.reason, e.eligible, e.event_kind, e.event_on, e.last_payment, e.ref,
                    e.source, e.proof, e.window, e.window_ends,
                    aware(e.statement_at) if e.statement_at is not None else None,
                    e.label,
                )
                for e in writes.entries
            ],
        )  # fmt: skip
    if writes.refusals:
        await conn.executemany(
            f"INSERT INTO consent_refusals ({_REFUSAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6,"
            " $7, $8, $9)",
            [
                (r.dealer_id, r.recipient, r.submission_id, r.code, r.action, r.detail,
                 r.message_went_on, r.dsn, aware(r.at))
                for r in writes.refusals
            ],
        )  # fmt: skip


def _entry(row: Any) -> LedgerEntry:
    return LedgerEntry(
        message_id=MessageId(row["message_id"]),
        submission_id=row["submission_id"],
        dealer_id=DealerId(row["dealer_id"]),
        recipient=row["recipient"],
        at=row["at"],
        category=row["category"],
        topic=row["topic"],
        rules=row["rules"],
        law=row["law"],
        preset=row["preset"],
        time_zone=row["time_zone"],
        basis=row["basis"],
        reason=row["reason"],
        eligible=row["eligible"],
        event_kind=row["event_kind"],
        event_on=row["event_on"],
        last_payment=row["last_payment"],
        ref=row["ref"],
        source=row["source"],
        proof=row["proof"],
        window=row["window_length"],
        window_ends=row["window_ends"],
        statement_at=row["statement_at"],
        label=row["label"],
    )


async def ledger(
    conn: Any,
    dealer_id: str,
    recipient: str | None,
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[LedgerEntry]:
    """The dealer's ledger entries in (time, message id) order, after ``after``."""
    sql = f"SELECT {_LEDGER_COLUMNS} FROM consent_ledger WHERE dealer_id = $1"
    args: list[Any] = [dealer_id]
    if recipient is not None:
        args.append(normalise_address(recipient))
        sql += f" AND recipient = ${len(args)}"
    if since is not None:
        args.append(aware(since))
        sql += f" AND at >= ${len(args)}"
    if until is not None:
        args.append(aware(until))
        sql += f" AND at < ${len(args)}"
    if after is not None:
        args.extend([aware(after[0]), after[1]])
        sql += f" AND (at, message_id) > (${len(args) - 1}, ${len(args)})"
    args.append(max(limit, 0))
    sql += f" ORDER BY at, message_id LIMIT ${len(args)}"
    return [_entry(row) for row in await conn.fetch(sql, *args)]


async def refusals(
    conn: Any, dealer_id: str, since: datetime | None, limit: int
) -> list[ConsentRefusal]:
    """The dealer's consent refusals, newest first."""
    sql = f"SELECT {_REFUSAL_COLUMNS} FROM consent_refusals WHERE dealer_id = $1"
    args: list[Any] = [dealer_id]
    if since is not None:
        args.append(aware(since))
        sql += " AND at >= $2"
    args.append(max(limit, 0))
    sql += f" ORDER BY at DESC, id DESC LIMIT ${len(args)}"
    return [
        ConsentRefusal(
            dealer_id=DealerId(r["dealer_id"]),
            recipient=r["recipient"],
            submission_id=r["submission_id"],
            code=r["code"],
            action=r["action"],
            detail=r["detail"],
            message_went_on=r["went_on"],
            dsn=r["dsn"],
            at=r["at"],
        )
        for r in await conn.fetch(sql, *args)
    ]


async def withdrawals(
    conn: Any, dealer_id: str, after: datetime | None, limit: int
) -> list[tuple[datetime, ConsentEvent]]:
    """The dealer's consent-withdrawn events recorded after ``after``, oldest first."""
    rows = await conn.fetch(
        f"SELECT {_EVENT_COLUMNS} FROM consent_events WHERE dealer_id = $1"
        " AND kind = 'consent-withdrawn' AND ($2::timestamptz IS NULL OR recorded_at > $2)"
        " ORDER BY recorded_at, address LIMIT $3",
        dealer_id,
        aware(after) if after is not None else None,
        max(limit, 0),
    )
    return [(row["recorded_at"], _event(row)) for row in rows]


async def erase(
    conn: Any, dealer_id: str, address: str, key: str, now: datetime, by: str, reason: str
) -> dict[str, int]:
    """Remove what names ``address`` for the dealer; keep ``erased:<key>`` where it must stay.

    Inside the caller's transaction; the same steps as the SQLite backend's ``erase``.
    """
    hashed = f"erased:{key}"
    done: dict[str, int] = {}
    steps = (
        ("consent_events", "DELETE FROM consent_events WHERE dealer_id = $1 AND address = $2",
         (dealer_id, address)),
        ("consent_preferences",
         "DELETE FROM consent_preferences WHERE dealer_id = $1 AND address = $2",
         (dealer_id, address)),
        ("consent_ledger", "UPDATE consent_ledger SET recipient = $3 WHERE dealer_id = $1"
         " AND recipient = $2", (dealer_id, address, hashed)),
        ("consent_refusals", "UPDATE consent_refusals SET recipient = $3 WHERE dealer_id = $1"
         " AND lower(recipient) = $2", (dealer_id, address, hashed)),
        ("feedback_events", "UPDATE feedback_events SET recipient = $3, subject = ''"
         " WHERE dealer_id = $1 AND lower(recipient) = $2", (dealer_id, address, hashed)),
        ("dup_drops", "UPDATE dup_drops SET recipient = $3 WHERE dealer_id = $1"
         " AND lower(recipient) = $2", (dealer_id, address, hashed)),
        ("messages", "DELETE FROM messages WHERE dealer_id = $1 AND lower(rcpt) = $2"
         " AND state IN ('delivered', 'failed')", (dealer_id, address)),
        ("suppressions", "UPDATE suppressions s SET address = $3 WHERE scope = $1"
         " AND address = $2 AND NOT (s.lifted_at IS NULL AND EXISTS (SELECT 1 FROM"
         " suppressions o WHERE o.scope = $1 AND o.address = $3 AND o.lifted_at IS NULL))",
         (dealer_id, address, hashed)),
    )  # fmt: skip
    for name, sql, args in steps:
        done[name] = count(await conn.execute(sql, *args))
    await conn.execute(
        "DELETE FROM suppressions WHERE scope = $1 AND address = $2", dealer_id, address
    )
    exists = await conn.fetchval(
        "SELECT 1 FROM suppressions WHERE scope = $1 AND address = $2 AND lifted_at IS NULL",
        dealer_id,
        hashed,
    )
    if exists is None:
        await conn.execute(
            "INSERT INTO suppressions (scope, address, reason, source, created_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            dealer_id,
            hashed,
            "erasure request (GDPR Art. 17)",
            f"erasure by {by}",
            aware(now),
        )
    await conn.execute(
        "INSERT INTO consent_erased (dealer_id, key, erased_at, erased_by, reason)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (dealer_id, key) DO NOTHING",
        dealer_id,
        key,
        aware(now),
        by,
        reason,
    )
    return done


class ConsentSection(Section):
    """The protocol's consent section (see ``Storage`` for the contract)."""

    async def record_consent(
        self,
        events: Sequence[ConsentEvent],
        preferences: Sequence[Preference] = (),
        now: datetime | None = None,
    ) -> int:
        """Record events and preferences in one transaction; rows new or changed."""
        stamp = aware(now or datetime.now(UTC))
        if not events and not preferences:
            return 0
        async with self._conn() as conn, conn.transaction():
            return await record(conn, events, preferences, stamp)

    async def consent_records(
        self, dealer_id: DealerId, addresses: Sequence[str]
    ) -> dict[str, ConsentRecord]:
        """Each address (as given) with its record."""
        async with self._conn() as conn:
            return await records(conn, dealer_id, list(addresses))

    async def consent_page(
        self, dealer_id: DealerId, after: str = "", limit: int = 1000
    ) -> list[tuple[str, ConsentRecord]]:
        """The dealer's recipients after ``after`` in address order, with their records."""
        async with self._conn() as conn:
            return await page(conn, dealer_id, after, limit)

    async def consent_ledger(
        self,
        dealer_id: DealerId,
        recipient: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = 1000,
    ) -> list[LedgerEntry]:
        """The dealer's ledger entries (one recipient's, or a period's), oldest first."""
        async with self._conn() as conn:
            return await ledger(conn, dealer_id, recipient, since, until, after, limit)

    async def consent_refusals(
        self, dealer_id: DealerId, since: datetime | None = None, limit: int = 100
    ) -> list[ConsentRefusal]:
        """Recipients left out for want of consent, newest first."""
        async with self._conn() as conn:
            return await refusals(conn, dealer_id, since, limit)

    async def consent_withdrawals(
        self, dealer_id: DealerId, after: datetime | None = None, limit: int = 1000
    ) -> list[tuple[datetime, ConsentEvent]]:
        """Withdrawals recorded after ``after``, oldest first, with when they were recorded."""
        async with self._conn() as conn:
            return await withdrawals(conn, dealer_id, after, limit)

    async def consent_sync_state(self, dealer_id: DealerId) -> tuple[int, datetime | None]:
        """How far the push to the dealer's CRM has got: suppression id, withdrawal time."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT suppression_after, withdrawals_after FROM consent_sync"
                " WHERE dealer_id = $1",
                dealer_id,
            )
        if row is None:
            return 0, None
        return int(row["suppression_after"]), row["withdrawals_after"]

    async def set_consent_sync_state(
        self,
        dealer_id: DealerId,
        suppression_after: int,
        withdrawals_after: datetime | None,
        pushed: int,
        error: str,
        now: datetime,
    ) -> None:
        """Record a push (its new position and count) or a failed one (``error``)."""
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO consent_sync (dealer_id, suppression_after, withdrawals_after,"
                " pushed, last_error, updated_at) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (dealer_id) DO UPDATE SET"
                " suppression_after = excluded.suppression_after,"
                " withdrawals_after = excluded.withdrawals_after,"
                " pushed = consent_sync.pushed + excluded.pushed,"
                " last_error = excluded.last_error, updated_at = excluded.updated_at",
                dealer_id,
                suppression_after,
                aware(withdrawals_after) if withdrawals_after is not None else None,
                pushed,
                error,
                aware(now),
            )

    async def erase_consent(
        self, dealer_id: DealerId, address: str, key: str, now: datetime, by: str, reason: str
    ) -> dict[str, int]:
        """Erase what names ``address`` for the dealer, in one transaction (see ``erase``)."""
        async with self._conn() as conn, conn.transaction():
            return await erase(conn, dealer_id, normalise_address(address), key, now, by, reason)

    async def consent_erased(self, dealer_id: DealerId, key: str) -> bool:
        """Whether the person with keyed hash ``key`` was erased for the dealer."""
        async with self._conn() as conn:
            found = await conn.fetchval(
                "SELECT 1 FROM consent_erased WHERE dealer_id = $1 AND key = $2", dealer_id, key
            )
        return found is not None
