"""The SQLite backend: the queue and everything the gateway keeps in one file, for one node.

``SqliteStorage`` (``backend.py``) is the default ``Storage`` implementation (see
``storage/base.py`` for the contract it honours). It is put together from one module per
section of the protocol:

* ``queue.py``: enqueue, claim and leases, complete, defer, hold, requeue, listing;
* ``sendlog.py``: the send history behind duplicate detection and frequency caps;
* ``feedback.py``: feedback events, suppressions, daily counters, dealer state and history;
* ``credentials.py``: SMTP AUTH credentials;
* ``consent.py``: consent events and preferences;
* ``reports.py``: the tallies behind the deliverability report and the status page, report
  claims and contacts' opt-outs.

They share ``connection.py`` (a connection per thread, transactions, error translation,
times as integer microseconds) and ``commit.py`` (group commit of enqueues).

How the sections are composed: each is a mixin class over ``section.Section``, which
declares the attributes they use (the writer and reader connections, the group commit,
the closed flag); ``SqliteStorage`` inherits all of them and sets those attributes once.
Mixins keep each protocol method, with its docstring and its SQL, in its section's module,
and mypy --strict checks every section against ``Section`` on its own; ``open_storage``
returning a ``SqliteStorage`` as a ``Storage`` checks the whole against the protocol. Plain
functions over a ``sqlite3.Connection`` (``feedback.bump_counts``, ``sendlog.apply_claims``)
are what one section runs inside another's transaction. The domain rules (how a
suppression is opened or extended, which dealer-state transitions are allowed) are not
here but in ``gateway/reputation/rules.py``; the backend only reads, applies and writes.
"""

from gateway.storage.sqlite.backend import SqliteStorage

__all__ = ["SqliteStorage"]
