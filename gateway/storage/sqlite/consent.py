"""The consent section of the SQLite backend (``SqliteStorage.record_consent`` and friends).

Plain functions over one ``sqlite3.Connection``, run on the backend's writer or reader
thread; ``ConsentSection`` wraps them. Dates are ISO text (they sort as dates), times
integer microseconds since the epoch, as everywhere in the SQLite backend.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

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
from gateway.types import DealerId

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
