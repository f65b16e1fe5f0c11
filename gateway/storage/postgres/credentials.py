"""The credentials section of the PostgreSQL backend: SMTP AUTH users and their password hashes.

Owns ``CredentialSection``; every node of a cluster sees the same credentials.
"""

from __future__ import annotations

from typing import Any

from gateway.storage.postgres.connection import aware
from gateway.storage.postgres.section import Section
from gateway.types import Credential, DealerId


def _credential(row: Any) -> Credential:
    return Credential(
        username=row["username"],
        dealer_id=DealerId(row["dealer_id"]),
        password_hash=row["password_hash"],
        created_at=row["created_at"],
    )


class CredentialSection(Section):
    """The protocol's credentials section (see ``Storage`` for the contract)."""

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
            aware(credential.created_at),
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
