"""The consent section of the SQLite backend (``SqliteStorage.record_consent`` and friends).

Plain functions over one ``sqlite3.Connection``, run on the backend's writer or reader
thread; ``ConsentSection`` wraps them. Dates are ISO text (they sort as dates), times
integer microseconds since the epoch, as everywhere in the SQLite backend.
``insert_consent`` writes a submission's ledger entries and refusals inside the group
commit's transaction (``backend.insert_batches``), with the messages they are about.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, date, datetime
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
from gateway.storage.sqlite.connection import from_us, to_us, write
from gateway.storage.sqlite.section import Section
from gateway.types import DealerId, MessageId

_EVENT_COLUMNS = (
    "dealer_id, address, kind, occurred_on, ref, last_payment, source, proof, recorded_at"
)
_PREF_COLUMNS = "dealer_id, address, channel, topic, at, granted, source, recorded_at"

# The natural key decides; a later last payment, or a source or proof where there was
# none, updates the row (and counts as a change). Everything else is kept as it was.
_UPSERT_EVENT = (
    f"INSERT INTO consent_events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (dealer_id, address, kind, occurred_on, ref) DO UPDATE SET"
    " last_payment = CASE WHEN excluded.last_payment > coalesce(consent_events.last_payment, '')"
    " THEN excluded.last_payment ELSE consent_events.last_payment END,"
    " source = CASE WHEN consent_events.source = '' THEN excluded.source"
    " ELSE consent_events.source END,"
    " proof = CASE WHEN consent_events.proof = '' THEN excluded.proof"
    " ELSE consent_events.proof END"
    " WHERE excluded.last_payment > coalesce(consent_events.last_payment, '')"
    " OR (consent_events.source = '' AND excluded.source <> '')"
    " OR (consent_events.proof = '' AND excluded.proof <> '')"
)
# The same statement twice for one instant: the refusal is kept.
_UPSERT_PREF = (
    f"INSERT INTO consent_preferences ({_PREF_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (dealer_id, address, channel, topic, at) DO UPDATE SET granted = 0"
    " WHERE consent_preferences.granted = 1 AND excluded.granted = 0"
)


def record(
    conn: sqlite3.Connection,
    events: Sequence[ConsentEvent],
    preferences: Sequence[Preference],
    now: datetime,
) -> int:
    """Upsert ``events`` and ``preferences`` (inside the caller's transaction)."""
    stamp = to_us(now)
    changed = 0
    if events:
        cursor = conn.executemany(
            _UPSERT_EVENT,
            [
                (
                    e.dealer_id, normalise_address(e.address), e.kind.value, e.on.isoformat(),
                    e.ref, e.last_payment.isoformat() if e.last_payment else None, e.source,
                    e.proof, stamp,
                )
                for e in collapse(events)
            ],
        )  # fmt: skip
        changed += max(cursor.rowcount, 0)
    if preferences:
        cursor = conn.executemany(
            _UPSERT_PREF,
            [
                (
                    p.dealer_id, normalise_address(p.address), p.channel, p.topic.value,
                    to_us(p.at), int(p.granted), p.source, stamp,
                )
                for p in preferences
            ],
        )  # fmt: skip
        changed += max(cursor.rowcount, 0)
    return changed


def _event(row: Sequence[Any]) -> ConsentEvent:
    return ConsentEvent(
        dealer_id=DealerId(row[0]),
        address=row[1],
        kind=Interaction(row[2]),
        on=date.fromisoformat(row[3]),
        ref=row[4],
        last_payment=date.fromisoformat(row[5]) if row[5] else None,
        source=row[6],
        proof=row[7],
    )


def _preference(row: Sequence[Any]) -> Preference:
    return Preference(
        dealer_id=DealerId(row[0]),
        address=row[1],
        channel=row[2],
        topic=Topic(row[3]),
        at=from_us(row[4]),
        granted=bool(row[5]),
        source=row[6],
    )


def _by_address(
    conn: sqlite3.Connection, dealer_id: str, wanted: list[str]
) -> dict[str, ConsentRecord]:
    listed = json.dumps(wanted)
    events: dict[str, list[ConsentEvent]] = {}
    prefs: dict[str, list[Preference]] = {}
    for row in conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM consent_events WHERE dealer_id = ?"
        " AND address IN (SELECT value FROM json_each(?))",
        (dealer_id, listed),
    ):
        events.setdefault(row[1], []).append(_event(row))
    for row in conn.execute(
        f"SELECT {_PREF_COLUMNS} FROM consent_preferences WHERE dealer_id = ?"
        " AND address IN (SELECT value FROM json_each(?))",
        (dealer_id, listed),
    ):
        prefs.setdefault(row[1], []).append(_preference(row))
    return {
        address: ConsentRecord(tuple(events.get(address, ())), tuple(prefs.get(address, ())))
        for address in wanted
    }


def records(
    conn: sqlite3.Connection, dealer_id: str, addresses: Sequence[str]
) -> dict[str, ConsentRecord]:
    """Each address as given, with the record of its normalised form."""
    keys = {address: normalise_address(address) for address in addresses}
    found = _by_address(conn, dealer_id, sorted(set(keys.values())))
    return {address: found[key] for address, key in keys.items()}


def page(
    conn: sqlite3.Connection, dealer_id: str, after: str, limit: int
) -> list[tuple[str, ConsentRecord]]:
    """The dealer's next ``limit`` recipients after ``after``, in address order."""
    rows = conn.execute(
        "SELECT address FROM (SELECT DISTINCT address FROM consent_events"
        " WHERE dealer_id = :d AND address > :a ORDER BY address LIMIT :n)"
        " UNION SELECT address FROM (SELECT DISTINCT address FROM consent_preferences"
        " WHERE dealer_id = :d AND address > :a ORDER BY address LIMIT :n)"
        " ORDER BY address LIMIT :n",
        {"d": dealer_id, "a": after, "n": max(limit, 0)},
    ).fetchall()
    wanted = [row[0] for row in rows]
    found = _by_address(conn, dealer_id, wanted)
    return [(address, found[address]) for address in wanted]


_LEDGER_COLUMNS = (
    "message_id, submission_id, dealer_id, recipient, at, category, topic, rules, law, preset,"
    " time_zone, basis, reason, eligible, event_kind, event_on, last_payment, ref, source, proof,"
    " window_length, window_ends, statement_at, label"
)
_REFUSAL_COLUMNS = "dealer_id, recipient, submission_id, code, action, detail, went_on, dsn, at"


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day is not None else None


def insert_consent(conn: sqlite3.Connection, writes: ConsentWrites) -> None:
    """Write ledger entries and refusals (inside the caller's transaction)."""
    if writes.entries:
        conn.executemany(
            f"INSERT INTO consent_ledger ({_LEDGER_COLUMNS}) VALUES"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    e.message_id, e.submission_id, e.dealer_id, e.recipient, to_us(e.at),
                    e.category, e.topic, e.rules, e.law, e.preset, e.time_zone, e.basis,
                    e.reason, int(e.eligible), e.event_kind, _iso(e.event_on),
                    _iso(e.last_payment), e.ref, e.source, e.proof, e.window,
                    _iso(e.window_ends),
                    to_us(e.statement_at) if e.statement_at is not None else None,
                    e.label,
                )
                for e in writes.entries
            ],
        )  # fmt: skip
    if writes.refusals:
        conn.executemany(
            f"INSERT INTO consent_refusals ({_REFUSAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (r.dealer_id, r.recipient, r.submission_id, r.code, r.action, r.detail,
                 int(r.message_went_on), r.dsn, to_us(r.at))
                for r in writes.refusals
            ],
        )  # fmt: skip


def _day_or_none(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


def _entry(row: Sequence[Any]) -> LedgerEntry:
    return LedgerEntry(
        message_id=MessageId(row[0]),
        submission_id=row[1],
        dealer_id=DealerId(row[2]),
        recipient=row[3],
        at=from_us(row[4]),
        category=row[5],
        topic=row[6],
        rules=row[7],
        law=row[8],
        preset=row[9],
        time_zone=row[10],
        basis=row[11],
        reason=row[12],
        eligible=bool(row[13]),
        event_kind=row[14],
        event_on=_day_or_none(row[15]),
        last_payment=_day_or_none(row[16]),
        ref=row[17],
        source=row[18],
        proof=row[19],
        window=row[20],
        window_ends=_day_or_none(row[21]),
        statement_at=from_us(row[22]) if row[22] is not None else None,
        label=row[23],
    )


def ledger(
    conn: sqlite3.Connection,
    dealer_id: str,
    recipient: str | None,
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[LedgerEntry]:
    """The dealer's ledger entries in (time, message id) order, after ``after``."""
    sql = f"SELECT {_LEDGER_COLUMNS} FROM consent_ledger WHERE dealer_id = ?"
    params: list[Any] = [dealer_id]
    if recipient is not None:
        sql += " AND recipient = ?"
        params.append(normalise_address(recipient))
    if since is not None:
        sql += " AND at >= ?"
        params.append(to_us(since))
    if until is not None:
        sql += " AND at < ?"
        params.append(to_us(until))
    if after is not None:
        sql += " AND (at > ? OR (at = ? AND message_id > ?))"
        params.extend([to_us(after[0]), to_us(after[0]), after[1]])
    sql += " ORDER BY at, message_id LIMIT ?"
    params.append(max(limit, 0))
    return [_entry(row) for row in conn.execute(sql, params)]


def refusals(
    conn: sqlite3.Connection, dealer_id: str, since: datetime | None, limit: int
) -> list[ConsentRefusal]:
    """The dealer's consent refusals, newest first."""
    sql = f"SELECT {_REFUSAL_COLUMNS} FROM consent_refusals WHERE dealer_id = ?"
    params: list[Any] = [dealer_id]
    if since is not None:
        sql += " AND at >= ?"
        params.append(to_us(since))
    sql += " ORDER BY at DESC, id DESC LIMIT ?"
    params.append(max(limit, 0))
    return [
        ConsentRefusal(
            dealer_id=DealerId(r[0]),
            recipient=r[1],
            submission_id=r[2],
            code=r[3],
            action=r[4],
            detail=r[5],
            message_went_on=bool(r[6]),
            dsn=r[7],
            at=from_us(r[8]),
        )
        for r in conn.execute(sql, params)
    ]


def withdrawals(
    conn: sqlite3.Connection, dealer_id: str, after: datetime | None, limit: int
) -> list[tuple[datetime, ConsentEvent]]:
    """The dealer's consent-withdrawn events recorded after ``after``, oldest first."""
    rows = conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM consent_events WHERE dealer_id = ?"
        " AND kind = 'consent-withdrawn' AND recorded_at > ? ORDER BY recorded_at, address"
        " LIMIT ?",
        (dealer_id, to_us(after) if after is not None else -1, max(limit, 0)),
    ).fetchall()
    return [(from_us(row[8]), _event(row)) for row in rows]


def sync_state(conn: sqlite3.Connection, dealer_id: str) -> tuple[int, datetime | None]:
    """The last suppression id and withdrawal time pushed to the dealer's CRM."""
    row = conn.execute(
        "SELECT suppression_after, withdrawals_after FROM consent_sync WHERE dealer_id = ?",
        (dealer_id,),
    ).fetchone()
    if row is None:
        return 0, None
    return int(row[0]), from_us(row[1]) if row[1] else None


def set_sync_state(
    conn: sqlite3.Connection,
    dealer_id: str,
    suppression_after: int,
    withdrawals_after: datetime | None,
    pushed: int,
    error: str,
    now: datetime,
) -> None:
    """Move the dealer's push position (and count what was pushed), or record an error."""
    conn.execute(
        "INSERT INTO consent_sync (dealer_id, suppression_after, withdrawals_after, pushed,"
        " last_error, updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (dealer_id) DO UPDATE"
        " SET suppression_after = excluded.suppression_after,"
        " withdrawals_after = excluded.withdrawals_after,"
        " pushed = consent_sync.pushed + excluded.pushed, last_error = excluded.last_error,"
        " updated_at = excluded.updated_at",
        (dealer_id, suppression_after, to_us(withdrawals_after) if withdrawals_after else 0,
         pushed, error, to_us(now)),
    )  # fmt: skip


def erase(
    conn: sqlite3.Connection,
    dealer_id: str,
    address: str,
    key: str,
    now: datetime,
    by: str,
    reason: str,
) -> dict[str, int]:
    """Remove what names ``address`` for the dealer; keep ``erased:<key>`` where it must stay.

    One transaction (the caller's). The dealer's suppression entries are re-keyed, not
    deleted, so the person stays suppressed; a person with none gets one. Rows counted by
    table, for the operator's record.
    """
    hashed = f"erased:{key}"
    done: dict[str, int] = {}

    def run(name: str, sql: str, params: Sequence[Any]) -> None:
        done[name] = done.get(name, 0) + max(conn.execute(sql, params).rowcount, 0)

    run(
        "consent_events",
        "DELETE FROM consent_events WHERE dealer_id = ? AND address = ?",
        (dealer_id, address),
    )
    run(
        "consent_preferences",
        "DELETE FROM consent_preferences WHERE dealer_id = ? AND address = ?",
        (dealer_id, address),
    )
    run(
        "consent_ledger",
        "UPDATE consent_ledger SET recipient = ? WHERE dealer_id = ? AND recipient = ?",
        (hashed, dealer_id, address),
    )
    run(
        "consent_refusals",
        "UPDATE consent_refusals SET recipient = ? WHERE dealer_id = ? AND lower(recipient) = ?",
        (hashed, dealer_id, address),
    )
    run(
        "feedback_events",
        "UPDATE feedback_events SET recipient = ?, subject = ''"
        " WHERE dealer_id = ? AND lower(recipient) = ?",
        (hashed, dealer_id, address),
    )
    run(
        "dup_drops",
        "UPDATE dup_drops SET recipient = ? WHERE dealer_id = ? AND lower(recipient) = ?",
        (hashed, dealer_id, address),
    )
    # The sent log of finished mail (queued mail is the operator's to delete first).
    run(
        "messages",
        "DELETE FROM messages WHERE dealer_id = ? AND lower(rcpt) = ?"
        " AND state IN ('delivered', 'failed')",
        (dealer_id, address),
    )
    run("suppressions", "UPDATE suppressions SET address = ? WHERE scope = ? AND address = ?"
        " AND NOT EXISTS (SELECT 1 FROM suppressions o WHERE o.scope = suppressions.scope"
        " AND o.address = ? AND o.lifted_at IS NULL AND suppressions.lifted_at IS NULL)",
        (hashed, dealer_id, address, hashed))  # fmt: skip
    conn.execute(
        "DELETE FROM suppressions WHERE scope = ? AND address = ?", (dealer_id, address)
    )  # entries left because an open one was already re-keyed
    open_entry = conn.execute(
        "SELECT 1 FROM suppressions WHERE scope = ? AND address = ? AND lifted_at IS NULL",
        (dealer_id, hashed),
    ).fetchone()
    if open_entry is None:
        conn.execute(
            "INSERT INTO suppressions (scope, address, reason, source, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (dealer_id, hashed, "erasure request (GDPR Art. 17)", f"erasure by {by}",
             to_us(now)),
        )  # fmt: skip
    conn.execute(
        "INSERT INTO consent_erased (dealer_id, key, erased_at, erased_by, reason)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (dealer_id, key) DO NOTHING",
        (dealer_id, key, to_us(now), by, reason),
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
        self._check_open()
        stamp = now or datetime.now(UTC)
        to_us(stamp)
        if not events and not preferences:
            return 0
        return await self._writer.run(write(lambda conn: record(conn, events, preferences, stamp)))

    async def consent_records(
        self, dealer_id: DealerId, addresses: Sequence[str]
    ) -> dict[str, ConsentRecord]:
        """Each address (as given) with its record."""
        self._check_open()
        wanted = list(addresses)
        return await self._reader.run(lambda c: records(c, dealer_id, wanted))

    async def consent_page(
        self, dealer_id: DealerId, after: str = "", limit: int = 1000
    ) -> list[tuple[str, ConsentRecord]]:
        """The dealer's recipients after ``after`` in address order, with their records."""
        self._check_open()
        return await self._reader.run(lambda c: page(c, dealer_id, after, limit))

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
        self._check_open()
        return await self._reader.run(
            lambda c: ledger(c, dealer_id, recipient, since, until, after, limit)
        )

    async def consent_refusals(
        self, dealer_id: DealerId, since: datetime | None = None, limit: int = 100
    ) -> list[ConsentRefusal]:
        """Recipients left out for want of consent, newest first."""
        self._check_open()
        return await self._reader.run(lambda c: refusals(c, dealer_id, since, limit))

    async def consent_withdrawals(
        self, dealer_id: DealerId, after: datetime | None = None, limit: int = 1000
    ) -> list[tuple[datetime, ConsentEvent]]:
        """Withdrawals recorded after ``after``, oldest first, with when they were recorded."""
        self._check_open()
        return await self._reader.run(lambda c: withdrawals(c, dealer_id, after, limit))

    async def consent_sync_state(self, dealer_id: DealerId) -> tuple[int, datetime | None]:
        """How far the push to the dealer's CRM has got: suppression id, withdrawal time."""
        self._check_open()
        return await self._reader.run(lambda c: sync_state(c, dealer_id))

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
        self._check_open()
        await self._writer.run(
            write(
                lambda c: set_sync_state(
                    c, dealer_id, suppression_after, withdrawals_after, pushed, error, now
                )
            )
        )

    async def erase_consent(
        self, dealer_id: DealerId, address: str, key: str, now: datetime, by: str, reason: str
    ) -> dict[str, int]:
        """Erase what names ``address`` for the dealer, in one transaction (see ``erase``)."""
        self._check_open()
        target = normalise_address(address)
        return await self._writer.run(
            write(lambda c: erase(c, dealer_id, target, key, now, by, reason))
        )

    async def consent_erased(self, dealer_id: DealerId, key: str) -> bool:
        """Whether the person with keyed hash ``key`` was erased for the dealer."""
        self._check_open()
        return await self._reader.run(
            lambda c: (
                c.execute(
                    "SELECT 1 FROM consent_erased WHERE dealer_id = ? AND key = ?", (dealer_id, key)
                ).fetchone()
                is not None
            )
        )
