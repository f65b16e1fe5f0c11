"""The SQLite group commit: enqueues and other short writes share one transaction each."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.storage.sqlite.commit import Batch, GroupCommit
from gateway.storage.sqlite.connection import Connection


class Counting:
    """An insert that records one row per group of batches."""

    def __call__(self, conn: sqlite3.Connection, batches: object) -> list[StorageError | bool]:
        assert isinstance(batches, list)
        conn.execute("INSERT INTO t (what) VALUES ('batch')")
        return [True for _ in batches]


async def open_writer(path: Path) -> Connection:
    writer = Connection("writer")
    await writer.connect(str(path), query_only=False)
    await writer.run(lambda conn: conn.execute("CREATE TABLE t (what TEXT NOT NULL)"))
    return writer


async def test_writes_join_the_enqueues_and_fail_alone(tmp_path: Path) -> None:
    writer = await open_writer(tmp_path / "db")
    commits = GroupCommit(writer, Counting())
    begins = 0

    def trace(statement: str) -> None:
        nonlocal begins
        begins += statement.startswith("BEGIN")

    await writer.run(lambda conn: conn.set_trace_callback(trace))

    def good(conn: sqlite3.Connection) -> int:
        return conn.execute("INSERT INTO t (what) VALUES ('work')").rowcount

    def bad(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (what) VALUES ('undone')")
        return conn.execute("INSERT INTO t (what) VALUES (NULL)").rowcount  # NOT NULL

    results = await asyncio.gather(
        commits.submit(Batch(())),
        *(commits.run(good) for _ in range(8)),
        commits.run(bad),
        commits.submit(Batch(())),
        return_exceptions=True,
    )
    assert results[0] is True and results[-1] is True
    assert results[1:9] == [1] * 8
    assert isinstance(results[9], StorageError)
    rows = await writer.run(lambda conn: conn.execute("SELECT what FROM t").fetchall())
    assert sorted(r[0] for r in rows) == ["batch"] * 2 + ["work"] * 8  # nothing of 'bad'
    # The first caller's transaction, then one for everything that queued behind it.
    assert begins <= 3, begins
    with pytest.raises(ValueError):
        await commits.run(lambda conn: (_ for _ in ()).throw(ValueError("mine")))
    await writer.close()
