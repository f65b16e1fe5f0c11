"""Schema migrations: numbered SQL files, each applied once per database, in order.

Files live in ``gateway/storage/migrations/<dialect>/NNNN_name.sql``. A migration is never
edited once released; a change to the schema is a new, higher-numbered file. Applied
versions are recorded in ``schema_migrations``, and the whole run (the check of what is
applied, every pending file, and the records) is one transaction, so a failed migration
leaves the database as it was.

Two gateway nodes may start at the same moment against one PostgreSQL database, and two
processes may open one SQLite file at once: both runners serialize on a lock taken before
reading ``schema_migrations`` (PostgreSQL: a transaction-level advisory lock; SQLite: the
write lock of ``BEGIN IMMEDIATE``), so the second runner sees the first one's work and
applies nothing.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Literal

Dialect = Literal["sqlite", "postgres"]

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

# pg_advisory_xact_lock key: the ASCII bytes of "mailgate" as a signed 64-bit integer. Any
# other user of advisory locks in the same database must avoid this key.
POSTGRES_LOCK_KEY = int.from_bytes(b"mailgate", "big", signed=True)

_CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY,"
    " name text NOT NULL,"
    " applied_at text NOT NULL)"
)


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema change."""

    version: int
    name: str
    sql: str


def migrations(dialect: Dialect) -> tuple[Migration, ...]:
    """Return every migration shipped for ``dialect``, in version order.

    Raises ``ValueError`` if a file is misnamed or two files share a version number.
    """
    folder = resources.files("gateway.storage").joinpath("migrations", dialect)
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise ValueError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"two {dialect} migrations share version {version:04d}")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return tuple(found[v] for v in sorted(found))


def _split_sqlite(sql: str) -> list[str]:
    """Cut a script into statements (``sqlite3.complete_statement`` knows the grammar).

    ``executescript()`` would be simpler, but it commits any open transaction first,
    which would break the one-transaction guarantee.
    """
    statements: list[str] = []
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer)
            buffer = ""
    leftover = [ln for ln in buffer.splitlines() if ln.strip() and not ln.strip().startswith("--")]
    if leftover:
        raise ValueError(f"incomplete SQL statement at the end of a migration: {leftover[0]!r}")
    return statements


def apply_sqlite(conn: sqlite3.Connection) -> list[int]:
    """Apply pending SQLite migrations; return the versions applied now.

    Blocking: call it from the thread that owns ``conn``, which must be in autocommit mode
    (``isolation_level=None``) so that the explicit ``BEGIN IMMEDIATE`` below is the
    transaction. SQLite DDL is transactional, so a failure rolls everything back.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_CREATE_TABLE)
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        done: list[int] = []
        for migration in migrations("sqlite"):
            if migration.version in applied:
                continue
            for statement in _split_sqlite(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, datetime.now(UTC).isoformat()),
            )
            done.append(migration.version)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return done


async def apply_postgres(conn: Any) -> list[int]:
    """Apply pending PostgreSQL migrations on an asyncpg connection; return versions applied.

    PostgreSQL DDL is transactional too. The advisory lock is released at commit or
    rollback (``pg_advisory_xact_lock``, PostgreSQL docs §9.27.10), so a crashed runner
    never leaves it held.
    """
    done: list[int] = []
    async with conn.transaction():
        # The store's connections give up on a lock after a few seconds (postgres.py,
        # LOCK_TIMEOUT); a migration must instead wait for another node's run, however
        # long, and may itself run long. SET LOCAL ends with this transaction.
        await conn.execute("SET LOCAL lock_timeout = 0")
        await conn.execute("SET LOCAL statement_timeout = 0")
        await conn.execute("SELECT pg_advisory_xact_lock($1)", POSTGRES_LOCK_KEY)
        await conn.execute(_CREATE_TABLE)
        applied = {
            row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")
        }
        for migration in migrations("postgres"):
            if migration.version in applied:
                continue
            # Without arguments asyncpg uses the simple query protocol, which accepts
            # several statements in one string.
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                datetime.now(UTC).isoformat(),
            )
            done.append(migration.version)
    return done
