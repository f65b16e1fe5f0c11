"""The PostgreSQL backend: one store shared by several gateway nodes.

``PostgresStorage`` (``backend.py``) implements ``Storage`` (see ``storage/base.py`` for
the contract it honours). It is put together from one module per section of the protocol:

* ``queue.py``: enqueue, claim (``FOR UPDATE SKIP LOCKED``) and leases, complete, defer,
  hold, requeue, listing;
* ``sendlog.py``: the send history behind duplicate detection and frequency caps;
* ``feedback.py``: feedback events, suppressions, daily counters, dealer state and history;
* ``credentials.py``: SMTP AUTH credentials;
* ``consent.py``: consent events and preferences;
* ``reports.py``: the tallies behind the deliverability report and the status page, report
  claims and contacts' opt-outs.

They share ``connection.py`` (the pool's startup parameters, the bounded waits and the
translation of asyncpg errors into ``StorageError``/``StorageUnavailable``).

How the sections are composed: each is a mixin class over ``section.Section``, which
declares what they use (the pool and the closed flag) and borrows connections
(``_conn``, ``_execute``); ``PostgresStorage`` inherits all of them and sets the pool
once. Mixins keep each protocol method, with its docstring and its SQL, in its section's
module, and mypy --strict checks every section against ``Section`` on its own;
``open_storage`` returning a ``PostgresStorage`` as a ``Storage`` checks the whole against
the protocol. Coroutines over one asyncpg connection (``feedback.bump_counts``,
``queue.message_rows``) are what one section runs inside another's transaction.

The domain rules for opening or extending a suppression and for the dealer state machine
are not here but in ``gateway/reputation/rules.py``, shared with the SQLite backend; this
package only reads the current row ``FOR UPDATE`` and writes what the rule decided.
"""

from gateway.storage.postgres.backend import PostgresStorage

__all__ = ["PostgresStorage"]
