"""Which commands may create a store: ``serve`` and ``init``; every other command needs one.

An offline command typed in the wrong directory (no ``--config``, no ``mailgate.toml``
there) would otherwise open the default ``sqlite:///var/mailgate.db`` relative to that
directory, create it, and answer from an empty store with exit 0: an empty queue, no
credentials, a token written where no gateway reads it. ``open_existing`` therefore opens
the store only when it already holds Mailgate data, and otherwise raises ``NoStore``
naming where it looked and which settings file (if any) said so.

"Holds Mailgate data" means the schema has been migrated at least once
(``gateway/storage/migrate.py`` records each migration in ``schema_migrations``): for
SQLite the database file exists and has that table with a row; for PostgreSQL the table
exists in the database the URL names, with a row. A store at an older version is opened
and migrated as usual.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from gateway.errors import StorageUnavailable
from gateway.settings import LOCAL_CONFIG, SYSTEM_CONFIG, Settings
from gateway.storage.base import Storage, open_storage, sqlite_path

_PROBE = "SELECT count(*) FROM schema_migrations"
SEARCHED = f"none given, no ./{LOCAL_CONFIG}, no {SYSTEM_CONFIG}"


class NoStore(Exception):
    """There is no Mailgate store where the settings point; the message says where."""


def describe(url: str) -> str:
    """``url`` fit to print: a SQLite file's absolute path, a PostgreSQL URL without password."""
    path = sqlite_path(url)
    if path is not None:
        return str(Path(path).absolute())
    parts = urlsplit(url)
    if parts.password is not None:
        netloc = parts.netloc.rpartition("@")
        user = (parts.username or "") + ":***"
        return urlunsplit(parts._replace(netloc=f"{user}@{netloc[2]}"))
    return url


async def exists(url: str) -> bool:
    """True when the store at ``url`` holds Mailgate data (its schema was migrated).

    Raises ``StorageUnavailable`` when a PostgreSQL server cannot be reached.
    """
    path = sqlite_path(url)
    if path is not None:
        return _sqlite_exists(Path(path))
    return await _postgres_exists(url)


def _sqlite_exists(path: Path) -> bool:
    try:
        if path.stat().st_size == 0:
            return False
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StorageUnavailable(f"sqlite: cannot read {path}: {exc.strerror or exc}") from exc
    # Read-only, so that looking never creates or changes anything.
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        raise StorageUnavailable(f"sqlite: cannot open {path}: {exc}") from exc
    try:
        return int(conn.execute(_PROBE).fetchone()[0]) > 0
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return False
        raise StorageUnavailable(f"sqlite: {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:  # "file is not a database"
        raise StorageUnavailable(f"sqlite: {path}: {exc}") from exc
    finally:
        conn.close()


async def _postgres_exists(url: str) -> bool:
    import asyncpg

    from gateway.storage.postgres.connection import CONNECT_TIMEOUT, errors

    with errors(unavailable=True):
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
        try:
            if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
                return False
            return int(await conn.fetchval(_PROBE)) > 0
        finally:
            await conn.close()


async def require(settings: Settings, config: Path | None) -> None:
    """Raise ``NoStore`` unless the settings' store holds Mailgate data."""
    url = settings.storage_url
    if await exists(url):
        return
    read = f"settings from {config}" if config is not None else f"no settings file: {SEARCHED}"
    raise NoStore(
        f"no Mailgate data at {describe(url)} ({read}); use --config FILE (or "
        "MAILGATE_CONFIG) to name the gateway's settings, or `mailgate init` to create a store"
    )


async def open_existing(settings: Settings, config: Path | None) -> Storage:
    """Open and migrate the store, which must already exist (``require``)."""
    await require(settings, config)
    return await open_storage(settings.storage_url)
