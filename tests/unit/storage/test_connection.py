"""The SQLite connection's busy timeout: what a call has left, set only when it changes."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from gateway.storage.sqlite.connection import BUSY_TIMEOUT_MS, Connection


async def test_an_uncontended_store_does_not_reset_the_busy_timeout_per_call(
    tmp_path: Path,
) -> None:
    conn = Connection("connection-test")
    await conn.connect(str(tmp_path / "db"), query_only=False)
    statements: list[str] = []
    await conn.run(lambda c: c.set_trace_callback(statements.append))
    for n in range(20):
        # Calls asked up to 40 ms before they run, as under load, keep the timeout set.
        asked = time.monotonic() - n * 0.002
        await conn.run(lambda c: c.execute("SELECT 1").fetchone(), asked=asked)
    assert [s for s in statements if "busy_timeout" in s] == []
    assert statements.count("SELECT 1") == 20
    await conn.close()


async def test_a_call_asked_long_ago_waits_only_what_it_has_left(tmp_path: Path) -> None:
    conn = Connection("connection-test")
    await conn.connect(str(tmp_path / "db"), query_only=False)

    def timeout(c: sqlite3.Connection) -> int:
        return int(c.execute("PRAGMA busy_timeout").fetchone()[0])

    assert BUSY_TIMEOUT_MS - 100 < await conn.run(timeout) <= BUSY_TIMEOUT_MS
    asked = time.monotonic() - 3.0  # as if queued for three seconds
    left = await conn.run(timeout, asked=asked)
    assert BUSY_TIMEOUT_MS - 3000 - 500 <= left <= BUSY_TIMEOUT_MS - 3000
    # The next fresh call gets the whole timeout back.
    assert await conn.run(timeout) > BUSY_TIMEOUT_MS - 100
    await conn.close()
