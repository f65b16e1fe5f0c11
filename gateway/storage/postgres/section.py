"""The base every section of the PostgreSQL backend extends: its pool and checks.

``PostgresStorage`` (``backend.py``) sets these attributes once; each section mixin
(``queue.QueueSection``, ``sendlog.SendLogSection``, ...) only uses them, so mypy checks
every section on its own against this declaration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gateway.errors import StorageError
from gateway.storage.postgres.connection import ACQUIRE_TIMEOUT, count, errors


class Section:
    """What a section needs: the connection pool (an ``asyncpg.Pool``) and the closed flag."""

    _pool: Any
    _closed: bool

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Any]:
        """Borrow a pooled connection; database errors inside become ``StorageError``."""
        if self._closed:
            raise StorageError("postgres: the store is closed")
        with errors():
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                yield conn

    async def _execute(self, sql: str, *args: Any) -> int:
        """Run one statement on its own; return how many rows it affected."""
        async with self._conn() as conn:
            return count(await conn.execute(sql, *args))
