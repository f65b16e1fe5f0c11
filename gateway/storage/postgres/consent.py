"""The consent section of the PostgreSQL backend (``PostgresStorage.record_consent`` and friends).

Coroutines over one asyncpg connection; ``ConsentSection`` wraps them. A batch is
written with one ``INSERT … SELECT FROM unnest(…)`` per table: one round trip and one
statement for thousands of rows, which is what makes a million-row import take minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
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
from gateway.storage.postgres.connection import aware, count
from gateway.storage.postgres.section import Section
from gateway.types import DealerId

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
