"""Backends for the storage contract suite: each test gets a fresh, empty store location.

SQLite: a file under ``tmp_path``. PostgreSQL: a uniquely named database created on the
server named by ``MAILGATE_TEST_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/
postgres``) and dropped after the test. Without the variable an unreachable server skips
the PostgreSQL cases; with it (CI) an unreachable server fails them.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from gateway.storage.base import Storage
from gateway.storage.postgres import PostgresStorage
from gateway.storage.sqlite import SqliteStorage

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class Backend:
    """One fresh store location, plus raw access for tests that must go behind the API."""

    name: str

    def __init__(self) -> None:
        self._opened: list[Storage] = []

    async def open(self) -> Storage:
        store = await self._open()
        self._opened.append(store)
        return store

    async def _open(self) -> Storage:
        raise NotImplementedError

    async def open_unreachable(self) -> Storage:
        raise NotImplementedError

    async def execute(self, sql: str, *args: Any) -> None:
        """Run raw SQL (placeholders in the backend's own style)."""
        raise NotImplementedError

    async def scalar(self, sql: str) -> Any:
        raise NotImplementedError

    async def corrupt(self, message_id: str, data: bytes) -> None:
        raise NotImplementedError

    async def cleanup(self) -> None:
        for store in self._opened:
            await store.close()


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    async def _open(self) -> Storage:
        return await SqliteStorage.open(str(self.path))

    async def open_unreachable(self) -> Storage:
        blocker = self.path.parent / "not-a-directory"
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_text("a file where the data directory should be")
        return await SqliteStorage.open(str(blocker / "mailgate.db"))

    def _run(self, sql: str, args: tuple[Any, ...], fetch: bool) -> Any:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5)
        try:
            cursor = conn.execute(sql, args)
            return cursor.fetchone()[0] if fetch else None
        finally:
            conn.close()

    async def execute(self, sql: str, *args: Any) -> None:
        await asyncio.to_thread(self._run, sql, args, False)

    async def scalar(self, sql: str) -> Any:
        return await asyncio.to_thread(self._run, sql, (), True)

    async def corrupt(self, message_id: str, data: bytes) -> None:
        await self.execute("UPDATE messages SET data = ? WHERE id = ?", data, message_id)


class PostgresBackend(Backend):
    name = "postgres"

    def __init__(self, admin_url: str, database: str) -> None:
        super().__init__()
        self.admin_url = admin_url
        self.database = database
        self.url = urlunsplit(urlsplit(admin_url)._replace(path="/" + database))

    async def _open(self) -> Storage:
        return await PostgresStorage.open(self.url, max_size=8)

    async def open_unreachable(self) -> Storage:
        # Port 1 (tcpmux) has no PostgreSQL behind it; the refusal is immediate.
        return await PostgresStorage.open("postgresql://postgres@127.0.0.1:1/postgres")

    async def execute(self, sql: str, *args: Any) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(sql, *args)
        finally:
            await conn.close()

    async def scalar(self, sql: str) -> Any:
        conn = await asyncpg.connect(self.url)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    async def corrupt(self, message_id: str, data: bytes) -> None:
        await self.execute("UPDATE messages SET data = $1 WHERE id = $2", data, message_id)

    async def cleanup(self) -> None:
        await super().cleanup()
        conn = await asyncpg.connect(self.admin_url)
        try:
            # FORCE (PostgreSQL 13+) ends sessions a failed test may have left behind.
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            await conn.close()


async def postgres_backend() -> PostgresBackend:
    configured = os.environ.get("MAILGATE_TEST_PG_URL")
    admin_url = configured or DEFAULT_PG_URL
    try:
        conn = await asyncpg.connect(admin_url, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        if configured:
            pytest.fail(f"MAILGATE_TEST_PG_URL={configured} is set but unreachable: {exc!r}")
        pytest.skip(
            f"PostgreSQL not reachable at {admin_url} ({exc!r}); "
            "set MAILGATE_TEST_PG_URL to run the postgres contract tests"
        )
    database = f"mailgate_test_{uuid.uuid4().hex[:16]}"
    try:
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    return PostgresBackend(admin_url, database)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    chosen: Backend
    if request.param == "sqlite":
        chosen = SqliteBackend(tmp_path / "data" / "mailgate.db")
    else:
        chosen = await postgres_backend()
    try:
        yield chosen
    finally:
        await chosen.cleanup()


@pytest.fixture
async def store(backend: Backend) -> Storage:
    return await backend.open()


@pytest.fixture
async def pg() -> AsyncIterator[PostgresBackend]:
    """A throwaway PostgreSQL database for tests that run gateway processes on it."""
    backend = await postgres_backend()
    yield backend
    await backend.cleanup()
