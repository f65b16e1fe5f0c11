"""The SQLite backend's plumbing: one connection per thread, transactions, errors, times.

Every section of the backend runs its statements through ``Connection.run``.

Theory of operation
-------------------
The standard ``sqlite3`` module blocks, so each connection lives on its own thread and the
event loop only awaits futures (``Connection.run``): a whole transaction is one plain
function executed on that thread, so no other coroutine's statements can interleave with
it. The backend keeps two connections:

* the *writer* runs every write transaction, one at a time, in order;
* the *reader* (``PRAGMA query_only``) answers ``get``/``list``/``stats``/credential
  lookups. In WAL mode readers never wait for the writer (https://sqlite.org/wal.html), so
  an SMTP AUTH lookup is not stuck behind a commit's fsync.

Durability: WAL with ``synchronous=FULL`` syncs the WAL on every commit; with ``NORMAL`` a
power loss may roll back the last commits (https://sqlite.org/pragma.html#pragma_synchronous),
and we answer 250 right after ``enqueue`` returns.

Times are stored as integer microseconds since the Unix epoch (UTC) and come back as
timezone-aware UTC ``datetime``s.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from gateway.errors import StorageError, StorageUnavailable
from gateway.storage.sqlite.calls import CallThread

T = TypeVar("T")

# How long a store call waits for another process's write lock before giving up with
# SQLITE_BUSY (reported as StorageUnavailable). https://sqlite.org/pragma.html#pragma_busy_timeout
# It is counted from when the caller asked, not from when the connection's thread got to
# the call: with the lock held elsewhere every queued write waits out its own timeout, so
# a submission queued behind a delivery poll would otherwise wait twice as long (F16).
BUSY_TIMEOUT_MS = 5000
# What a call still gets when its time ran out in the queue: enough to take a free lock.
_MIN_BUSY_MS = 50
# The busy timeout is set again only when what a call has left falls outside
# [set, set + _BUSY_SLACK_MS], and then to half the slack below it: a call never waits
# longer than it has left, and calls that queue a few milliseconds more or less than the
# last do not run a PRAGMA before every statement.
_BUSY_SLACK_MS = 100

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# Error names (https://sqlite.org/rescode.html) meaning "the database cannot be used right
# now" rather than "this operation is wrong". Extended codes share the primary prefix.
_UNAVAILABLE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_NOTADB")


def to_us(when: datetime) -> int:
    """Microseconds since the epoch; naive datetimes are refused (their zone is a guess)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"naive datetime {when!r}: the store needs timezone-aware times")
    return (when - _EPOCH) // _MICROSECOND


def from_us(value: int) -> datetime:
    """The UTC time ``value`` microseconds after the epoch."""
    return _EPOCH + timedelta(microseconds=value)


def opt_us(when: datetime | None) -> int | None:
    """``to_us`` for an optional time (``None`` stays ``NULL``)."""
    return None if when is None else to_us(when)


def opt_from_us(value: int | None) -> datetime | None:
    """``from_us`` for an optional column."""
    return None if value is None else from_us(value)


def translate(exc: sqlite3.Error) -> StorageError:
    """The ``StorageError`` for a ``sqlite3.Error`` (unavailable, or the operation's fault)."""
    return _translate(exc)


def _translate(exc: sqlite3.Error) -> StorageError:
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(_UNAVAILABLE) or "unable to open" in str(exc):
        return StorageUnavailable(f"sqlite: {exc}")
    return StorageError(f"sqlite: {exc}")


def _enable_wal(conn: sqlite3.Connection) -> str:
    """Switch to WAL (a persistent setting of the file); return the resulting mode.

    The switch needs an exclusive lock, and SQLite answers SQLITE_BUSY at once instead of
    calling the busy handler when another connection is opening the same new file, so
    the busy timeout is applied here by hand. This runs on the connection's own thread.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") != "SQLITE_BUSY" or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _connect(path: str, *, query_only: bool) -> sqlite3.Connection:
    # isolation_level=None: the sqlite3 module must not open transactions behind our back;
    # every write transaction below starts with an explicit BEGIN IMMEDIATE, which takes
    # the write lock up front so that a transaction never fails half-way on a lock upgrade
    # (https://sqlite.org/lang_transaction.html).
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        if query_only:
            conn.execute("PRAGMA query_only = ON")
        else:
            mode = _enable_wal(conn)
            if mode != "wal":
                raise StorageError(f"sqlite: {path} refused WAL mode (journal_mode={mode})")
        # Set after journal_mode: FULL in WAL mode means an fsync of the WAL per commit.
        conn.execute("PRAGMA synchronous = FULL")
    except BaseException:
        conn.close()
        raise
    return conn


class Connection:
    """One sqlite3 connection, used only from its own thread."""

    def __init__(self, name: str) -> None:
        self._thread = CallThread(name)
        self._conn: sqlite3.Connection | None = None
        self._busy_ms = BUSY_TIMEOUT_MS  # as _connect sets it; read and set on the thread
        self._closed = False

    async def connect(self, path: str, *, query_only: bool) -> None:
        """Open ``path`` on the connection's thread (``query_only`` for the reader)."""

        def connect() -> None:
            self._conn = _connect(path, query_only=query_only)

        await self._submit(connect)

    async def run(self, fn: Callable[[sqlite3.Connection], T], asked: float | None = None) -> T:
        """Run ``fn(conn)`` on the connection's thread; translate database errors.

        ``asked`` (``time.monotonic()``, default now) starts the call's busy timeout: time
        spent queued behind this connection's other calls is taken from it.
        """
        deadline = (time.monotonic() if asked is None else asked) + BUSY_TIMEOUT_MS / 1000

        def call() -> T:
            if self._conn is None:
                raise StorageError("sqlite: the store is closed")
            left = max(int((deadline - time.monotonic()) * 1000), _MIN_BUSY_MS)
            if not left - _BUSY_SLACK_MS <= self._busy_ms <= left:
                self._busy_ms = max(left - _BUSY_SLACK_MS // 2, _MIN_BUSY_MS)
                self._conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            return fn(self._conn)

        return await self._submit(call)

    async def _submit(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise StorageError("sqlite: the store is closed")
        try:
            return await self._thread.submit(fn)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
        except OSError as exc:
            raise StorageUnavailable(f"sqlite: {exc}") from exc

    async def close(self) -> None:
        """Close the connection and let its thread go. Idempotent."""
        if self._closed:
            return

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        try:
            await self._submit(close)
        finally:
            self._closed = True
            # The thread ends after the close, which ran last; no need to block the loop on it.
            self._thread.stop()


def write(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """Wrap ``fn`` in one ``BEGIN IMMEDIATE`` … ``COMMIT`` transaction."""

    def transaction(conn: sqlite3.Connection) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    return transaction
