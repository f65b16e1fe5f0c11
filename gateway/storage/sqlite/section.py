"""The base every section of the SQLite backend extends: its connections and checks.

``SqliteStorage`` (``backend.py``) sets these attributes once; each section mixin
(``queue.QueueSection``, ``sendlog.SendLogSection``, ...) only reads them, so mypy checks
every section on its own against this declaration.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from gateway.errors import StorageError
from gateway.storage.sqlite.commit import GroupCommit
from gateway.storage.sqlite.connection import Connection, write


class Section:
    """What a section needs: the writer and reader connections, the group commit, closed."""

    _writer: Connection
    _reader: Connection
    _commits: GroupCommit
    _closed: bool

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("sqlite: the store is closed")

    async def _update(self, sql: str, params: Sequence[Any]) -> bool:
        """Run one write statement in its own transaction; True if it changed one row."""
        self._check_open()

        def update(conn: sqlite3.Connection) -> bool:
            return conn.execute(sql, params).rowcount == 1

        return await self._writer.run(write(update))
