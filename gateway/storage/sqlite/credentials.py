"""The credentials section of the SQLite backend: SMTP AUTH users and their password hashes.

Owns ``CredentialSection``. Lookups run on the reader connection, so an AUTH never waits
behind a commit's fsync.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from gateway.storage.sqlite.connection import from_us, to_us, write
from gateway.storage.sqlite.section import Section
from gateway.types import Credential, DealerId


def _credential(row: Sequence[Any]) -> Credential:
    return Credential(
        username=row[0],
        dealer_id=DealerId(row[1]),
        password_hash=row[2],
        created_at=from_us(row[3]),
    )


class CredentialSection(Section):
    """The protocol's credentials section (see ``Storage`` for the contract)."""

    async def get_credential(self, username: str) -> Credential | None:
        """Return the credential for ``username``, or ``None``."""
        self._check_open()

        def get(conn: sqlite3.Connection) -> Credential | None:
            row = conn.execute(
                "SELECT username, dealer_id, password_hash, created_at FROM credentials"
                " WHERE username = ?",
                (username,),
            ).fetchone()
            return None if row is None else _credential(row)

        return await self._reader.run(get)

    async def set_credential(self, credential: Credential) -> None:
        """Create or replace the credential for ``credential.username``."""
        self._check_open()
        params = (
            credential.username,
            credential.dealer_id,
            credential.password_hash,
            to_us(credential.created_at),
        )

        def upsert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO credentials (username, dealer_id, password_hash, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (username) DO UPDATE SET"
                " dealer_id = excluded.dealer_id, password_hash = excluded.password_hash,"
                " created_at = excluded.created_at",
                params,
            )

        await self._writer.run(write(upsert))

    async def delete_credential(self, username: str) -> bool:
        """Remove a credential; return whether it existed."""
        return await self._update("DELETE FROM credentials WHERE username = ?", (username,))

    async def list_credentials(self, dealer_id: DealerId | None = None) -> list[Credential]:
        """List credentials by username, optionally for one dealer."""
        self._check_open()

        def select(conn: sqlite3.Connection) -> list[Credential]:
            sql = "SELECT username, dealer_id, password_hash, created_at FROM credentials"
            params: tuple[Any, ...] = ()
            if dealer_id is not None:
                sql += " WHERE dealer_id = ?"
                params = (dealer_id,)
            return [_credential(r) for r in conn.execute(sql + " ORDER BY username", params)]

        return await self._reader.run(select)
