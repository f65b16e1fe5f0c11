"""``SqliteStorage``: the SQLite backend's sections put together on one database file.

Owns opening (directory, connections, migrations), closing, ``ping`` and what one write
transaction does with the group commit's batches (``insert_batches``). Everything else
comes from the section mixins; see the package docstring for why mixins.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from gateway.errors import StorageError, StorageUnavailable
from gateway.storage.migrate import apply_sqlite
from gateway.storage.sqlite.commit import Batch, GroupCommit
from gateway.storage.sqlite.connection import Connection
from gateway.storage.sqlite.consent import ConsentSection, insert_consent
from gateway.storage.sqlite.credentials import CredentialSection
from gateway.storage.sqlite.feedback import FeedbackSection
from gateway.storage.sqlite.queue import INSERT, QueueSection, insert_params
from gateway.storage.sqlite.reports import ReportSection
from gateway.storage.sqlite.sendlog import SendLogSection, apply_claims, insert_drops

log = logging.getLogger("gateway.storage")


def insert_batches(conn: sqlite3.Connection, groups: Sequence[Batch]) -> list[StorageError | bool]:
    """Insert several callers' batches in one transaction; one result per batch.

    A result is ``True`` (stored), ``False`` (a duplicate claim was lost, nothing of the
    batch stored) or the ``StorageError`` that refused the batch.
    """
    results: list[StorageError | bool] = []
    for group in groups:
        conn.execute("SAVEPOINT enqueue")
        try:
            claimed = apply_claims(conn, group.claims)
            if claimed:
                insert_drops(conn, group.drops)
                insert_consent(conn, group.consent)
                conn.executemany(INSERT, [insert_params(m) for m in group.messages])
        except (sqlite3.IntegrityError, sqlite3.InterfaceError, TypeError, ValueError) as exc:
            # This batch alone is at fault (duplicate id, a value of the wrong type): undo
            # it and keep the others of the group.
            conn.execute("ROLLBACK TO enqueue")
            results.append(StorageError(f"sqlite: enqueue refused, nothing stored: {exc}"))
        else:
            if not claimed:
                conn.execute("ROLLBACK TO enqueue")
            results.append(claimed)
        conn.execute("RELEASE enqueue")
    return results


class SqliteStorage(
    QueueSection, SendLogSection, FeedbackSection, CredentialSection, ConsentSection, ReportSection
):
    """``Storage`` on one SQLite file. Build it with ``await SqliteStorage.open(path)``."""

    def __init__(
        self, path: str, writer: Connection, reader: Connection, group_commit: bool
    ) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._commits = GroupCommit(writer, insert_batches, enabled=group_commit)
        self._closed = False

    @classmethod
    async def open(cls, path: str, *, group_commit: bool = True) -> SqliteStorage:
        """Open (creating the file and its directory if needed) and migrate ``path``.

        ``group_commit=False`` commits every ``enqueue`` on its own (for measurements).
        Raises ``StorageUnavailable`` if the file cannot be opened, ``StorageError`` on
        other database failures.
        """
        if path in ("", ":memory:") or path.startswith("file:"):
            # Two connections to ":memory:" would be two different databases.
            raise ValueError(f"sqlite: {path!r} is not a database file path")
        try:
            await asyncio.to_thread(Path(path).parent.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(
                f"sqlite: cannot create the directory of {path}: {exc}"
            ) from exc
        writer = Connection("mailgate-sqlite-writer")
        reader = Connection("mailgate-sqlite-reader")
        try:
            await writer.connect(path, query_only=False)
            applied = await writer.run(apply_sqlite)
            await reader.connect(path, query_only=True)
        except BaseException:
            await writer.close()
            await reader.close()
            raise
        if applied:
            log.info("sqlite %s: applied migrations %s", path, applied)
        return cls(path, writer, reader, group_commit)

    async def close(self) -> None:
        """Finish pending enqueues, then close both connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._commits.drain()
        await self._writer.close()
        await self._reader.close()

    async def ping(self) -> None:
        """Raise ``StorageError`` unless both connections answer."""
        self._check_open()
        await self._reader.run(lambda c: c.execute("SELECT 1").fetchone())
        await self._writer.run(lambda c: c.execute("SELECT 1").fetchone())
