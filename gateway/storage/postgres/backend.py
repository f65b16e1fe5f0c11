"""``PostgresStorage``: the PostgreSQL backend's sections put together on one connection pool.

Owns opening (the pool, with the startup parameters of ``connection.SERVER_SETTINGS``,
and the migrations), closing and ``ping``. Everything else comes from the section mixins;
see the package docstring for why mixins.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from gateway.storage.migrate import apply_postgres
from gateway.storage.postgres.connection import (
    ACQUIRE_TIMEOUT,
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    SERVER_SETTINGS,
    errors,
)
from gateway.storage.postgres.consent import ConsentSection
from gateway.storage.postgres.credentials import CredentialSection
from gateway.storage.postgres.feedback import FeedbackSection
from gateway.storage.postgres.queue import QueueSection
from gateway.storage.postgres.reports import ReportSection
from gateway.storage.postgres.sendlog import SendLogSection

log = logging.getLogger("gateway.storage")


class PostgresStorage(
    QueueSection, SendLogSection, FeedbackSection, CredentialSection, ConsentSection, ReportSection
):
    """``Storage`` on a PostgreSQL database. Build it with ``await PostgresStorage.open(url)``."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, min_size: int = 1, max_size: int = 10) -> PostgresStorage:
        """Connect a pool of ``min_size``..``max_size`` connections to ``url`` and migrate.

        Raises ``StorageUnavailable`` if the server cannot be reached or refuses us.
        """
        with errors(unavailable=True):
            pool = await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                server_settings=SERVER_SETTINGS,
            )
        try:
            with errors():
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

    async def ping(self) -> None:
        """Raise ``StorageError`` unless the server answers ``SELECT 1``."""
        async with self._conn() as conn:
            await conn.fetchval("SELECT 1")
