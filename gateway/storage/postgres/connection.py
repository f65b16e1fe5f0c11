"""The PostgreSQL backend's plumbing: pool settings, time checks and error translation.

Every section of the backend runs its statements inside ``errors()``.

Theory of operation
-------------------
* Durability: every pooled connection starts with ``synchronous_commit=on`` as a startup
  parameter, so a commit returns only once its WAL record is flushed (PostgreSQL docs
  §20.5.1, "synchronous_commit"), whatever the server or role default says. Startup
  parameters are also what ``RESET ALL`` returns to when the pool recycles a connection.
* Bounded waits (reliability F16): a session holding a lock on one of our tables (a
  ``LOCK TABLE``, a long migration, a stuck transaction) must not hold a submission past
  its SMTP timeouts. Every pooled connection starts with ``lock_timeout`` (``LOCK_TIMEOUT``)
  so a statement waiting for a lock fails after a few seconds, and with
  ``statement_timeout`` equal to the client's ``COMMAND_TIMEOUT`` so the server abandons a
  statement the client has given up on (even when the client's cancel request is lost).
  Both are startup parameters, like ``synchronous_commit``, so ``RESET ALL`` keeps them.
  Migrations lift both for their own transaction: they may wait for another node's run.
* Errors: no asyncpg exception leaves this package; connection-level failures, lock and
  statement timeouts become ``StorageUnavailable``, anything else ``StorageError``. The
  SMTP side answers both with ``451 4.3.0`` (``454 4.7.0`` at AUTH).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import asyncpg

from gateway.errors import GatewayError, StorageError, StorageUnavailable

CONNECT_TIMEOUT = 10.0  # seconds to establish one connection
ACQUIRE_TIMEOUT = 10.0  # seconds to wait for a free pooled connection
COMMAND_TIMEOUT = 60.0  # seconds for one statement (a large enqueue included)
# Seconds a statement waits for a lock another session holds. Our own transactions hold
# row locks for milliseconds, so 5 s means something outside the gateway holds it; the
# submission then gets 451 4.3.0 well inside the CRM's DATA timeout (RFC 5321 §4.5.3.2.6).
LOCK_TIMEOUT = 5.0

# Errors meaning "the server cannot be used right now": SQLSTATE class 08 (connection
# exception), class 57 (operator intervention: shutdown, cannot connect now, and 57014
# query_canceled, which statement_timeout raises), 53300 (too many connections) and 55P03
# (lock_not_available, which lock_timeout raises: the same case as SQLite's SQLITE_BUSY).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.LockNotAvailableError,
)

# Startup parameters of every pooled connection (see "Bounded waits" above).
SERVER_SETTINGS = {
    "synchronous_commit": "on",
    "application_name": "mailgate",
    "lock_timeout": f"{int(LOCK_TIMEOUT * 1000)}ms",
    "statement_timeout": f"{int(COMMAND_TIMEOUT * 1000)}ms",
}


@contextmanager
def errors(unavailable: bool = False) -> Iterator[None]:
    """Translate asyncpg and socket errors; ``unavailable`` makes every failure one."""
    try:
        yield
    except GatewayError:
        raise
    except _UNAVAILABLE as exc:
        raise StorageUnavailable(f"postgres: {type(exc).__name__}: {exc}") from exc
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        error = StorageUnavailable if unavailable else StorageError
        raise error(f"postgres: {type(exc).__name__}: {exc}") from exc


def aware(when: datetime) -> datetime:
    """``when`` itself; a naive datetime is refused (its zone is a guess)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"naive datetime {when!r}: the store needs timezone-aware times")
    return when


def count(status: str) -> int:
    """Rows affected, from a command tag such as ``UPDATE 1`` or ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])
