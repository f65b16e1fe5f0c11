"""The ``Storage`` protocol every backend implements, and the URL-based factory.

Contract (checked by ``tests/contract/test_storage.py`` against every backend):

* ``enqueue`` is durable when it returns: the rows are committed with a synchronous
  commit (SQLite ``synchronous=FULL`` in WAL mode, PostgreSQL ``synchronous_commit=on``).
  Either every message of the batch is stored or none is.
* ``claim`` hands each due ``QUEUED`` message to at most one node at a time: it takes a
  lease (owner + expiry). A lease that expires (its node died) makes the message
  claimable again, so nothing is stranded on a dead machine.
* ``complete``/``defer``/``release`` succeed only for the node that holds the lease
  (fencing): a node whose lease expired and was taken over cannot overwrite the new
  owner's result. They return ``False`` when the lease was lost.
* A message whose stored bytes no longer match their checksum is never handed out: the
  claim moves it to ``QUARANTINED`` with an error and goes on.
* Every failure to reach or use the database raises ``StorageError`` (or
  ``StorageUnavailable``); callers turn that into a temporary SMTP failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from gateway.errors import ConfigError
from gateway.fingerprints import DuplicateDrop, RecipientHistory, SendClaim
from gateway.types import (
    Credential,
    DealerId,
    MessageId,
    MessageState,
    NewMessage,
    QueuedMessage,
    QueueStats,
    RcptOutcome,
)


class Storage(Protocol):
    """Everything the gateway keeps, behind one interface."""

    async def close(self) -> None:
        """Release connections. Idempotent."""
        ...

    async def ping(self) -> None:
        """Raise ``StorageError`` unless the store answers a trivial query."""
        ...

    # -- queue -------------------------------------------------------------------------

    async def enqueue(self, messages: Sequence[NewMessage]) -> None:
        """Store all ``messages`` in one durable transaction (all or nothing)."""
        ...

    async def claim(
        self,
        node: str,
        limit: int,
        now: datetime,
        lease: timedelta,
        exclude_dealers: frozenset[DealerId] = frozenset(),
    ) -> list[QueuedMessage]:
        """Lease up to ``limit`` due ``QUEUED`` messages to ``node``, oldest due first.

        Due means ``next_attempt_at <= now`` and no unexpired lease. Messages of
        ``exclude_dealers`` (suspended dealers) are skipped unless they are ``system``
        messages. Corrupt entries are quarantined, not returned.
        """
        ...

    async def complete(
        self, message_id: MessageId, node: str, outcome: RcptOutcome, now: datetime
    ) -> bool:
        """Record a final outcome (``DELIVERED`` or ``FAILED``) and drop the lease.

        Increments ``attempts``. The message body may be discarded; the row (the sent
        log) is kept. Returns ``False`` if ``node`` no longer holds the lease.
        """
        ...

    async def defer(
        self,
        message_id: MessageId,
        node: str,
        outcome: RcptOutcome,
        next_attempt_at: datetime,
        now: datetime,
    ) -> bool:
        """Record a temporary failure, schedule the next attempt and drop the lease.

        Increments ``attempts``. Returns ``False`` if ``node`` no longer holds the lease.
        """
        ...

    async def release(self, message_id: MessageId, node: str) -> bool:
        """Drop the lease without counting an attempt (shutdown, dealer suspended)."""
        ...

    async def release_owned(self, node: str) -> int:
        """Drop every lease ``node`` holds (it restarted; nothing of it is in flight)."""
        ...

    async def hold(self, message_id: MessageId, note: str, now: datetime) -> bool:
        """Move a ``QUEUED`` message to ``HELD`` with an operator-facing note."""
        ...

    async def requeue(self, message_id: MessageId, now: datetime) -> bool:
        """Make a ``HELD``, ``FAILED`` or ``QUEUED`` message due now (operator action).

        Only messages that still have their body can be requeued.
        """
        ...

    async def get(self, message_id: MessageId) -> QueuedMessage | None:
        """Return one message with its body, or ``None``."""
        ...

    async def list_messages(
        self,
        state: MessageState | None = None,
        dealer_id: DealerId | None = None,
        limit: int = 100,
    ) -> list[QueuedMessage]:
        """List messages newest first; ``data`` is empty in the listing (use ``get``)."""
        ...

    async def delete(self, message_id: MessageId) -> bool:
        """Remove a message for good (operator action). Returns whether it existed."""
        ...

    async def stats(self) -> QueueStats:
        """Counts per state, oldest ``QUEUED`` received time, and bytes waiting."""
        ...

    async def expire_finished(self, before: datetime) -> int:
        """Delete ``DELIVERED``/``FAILED`` rows last updated before ``before``."""
        ...

    # -- credentials -------------------------------------------------------------------

    async def get_credential(self, username: str) -> Credential | None:
        """Return the SMTP AUTH credential for ``username``, or ``None``."""
        ...

    async def set_credential(self, credential: Credential) -> None:
        """Create or replace the credential for ``credential.username``."""
        ...

    async def delete_credential(self, username: str) -> bool:
        """Remove a credential. Returns whether it existed."""
        ...

    async def list_credentials(self, dealer_id: DealerId | None = None) -> list[Credential]:
        """List credentials (hashes included; callers must not print them)."""
        ...

    # -- duplicates and frequency caps (gateway/fingerprints.py) -----------------------
    #
    # Contract (tests/contract/test_duplicates.py): ``enqueue_claimed`` is the only
    # writer of the send history, and it decides atomically: a claim is checked and
    # recorded in the same transaction that stores the messages, so a refused claim
    # stores nothing and a stored message always holds its claim.

    async def recipient_histories(
        self, keys: Sequence[bytes], since: datetime
    ) -> dict[bytes, RecipientHistory]:
        """Return each recipient key's version and its sends since ``since``, newest first.

        Every key of ``keys`` is in the result; one never seen has version 0 and no sends.
        The version is read before the sends, so a send committed in between can only
        make the later claim fail (and be retried), never pass unseen.
        """
        ...

    async def enqueue_claimed(
        self,
        messages: Sequence[NewMessage],
        claims: Sequence[SendClaim],
        drops: Sequence[DuplicateDrop] = (),
    ) -> bool:
        """Claim, record and enqueue in one durable transaction; False if a claim is lost.

        For each claim: if ``expected_version`` is set, the recipient's version must still
        be that value (it is then incremented); if ``claim_exact``, the (recipient,
        fingerprint) pair must be free or older than ``exact_since`` (an expired entry is
        taken over). When any claim fails nothing at all is stored and the call returns
        ``False``: the caller re-reads the histories and decides again. Otherwise the
        sends, ``drops`` and ``messages`` are committed together and it returns ``True``.
        """
        ...

    async def list_duplicate_drops(
        self, dealer_id: DealerId | None = None, limit: int = 100
    ) -> list[DuplicateDrop]:
        """List recorded duplicate drops and refusals, newest first."""
        ...

    async def expire_duplicates(
        self, sends_before: datetime, drops_before: datetime, batch: int = 5000
    ) -> int:
        """Delete at most ``batch`` expired rows of each duplicate table; return how many.

        One short transaction per call, so intake never waits long behind it; callers
        repeat until it returns 0.
        """
        ...

    # -- end of duplicates ---------------------------------------------------------------


async def open_storage(url: str) -> Storage:
    """Open (and migrate) the backend named by ``url``.

    ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``;
    ``postgresql://user@host:port/db``.
    """
    if url.startswith("sqlite:///"):
        from gateway.storage.sqlite import SqliteStorage

        return await SqliteStorage.open(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        from gateway.storage.postgres import PostgresStorage

        return await PostgresStorage.open(url)
    raise ConfigError(f"storage.url: unsupported scheme in {url!r} (sqlite:/// or postgresql://)")
