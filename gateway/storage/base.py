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
from datetime import date, datetime, timedelta
from typing import Protocol

from gateway.consent.ledger import EMPTY_WRITES, ConsentRefusal, ConsentWrites, LedgerEntry
from gateway.consent.rules import ConsentEvent, ConsentRecord, Preference
from gateway.duplicates.fingerprints import DuplicateDrop, RecipientHistory, SendClaim
from gateway.errors import ConfigError
from gateway.reports.records import (
    DeliveryTally,
    DropTally,
    EventTally,
    FindingTally,
    ReportClaim,
)
from gateway.reputation.records import (
    DailyCounts,
    DayCounts,
    DealerStatus,
    EventKind,
    FeedbackEvent,
    StateChange,
    Suppression,
)
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
        log) is kept. Unless the message is a ``system`` one, the dealer's counters of
        ``now``'s day count it as sent (and delivered) in the same transaction, so a
        retried or fenced-off completion is never counted twice. Returns ``False`` if
        ``node`` no longer holds the lease.
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

    # -- duplicates and frequency caps (gateway/duplicates/fingerprints.py) -----------------------
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
        consent: ConsentWrites = EMPTY_WRITES,
    ) -> bool:
        """Claim, record and enqueue in one durable transaction; False if a claim is lost.

        ``consent`` (the ledger entries and refusals of ``gateway.consent.ledger``) is
        written in the same transaction as the messages it is about.

        For each claim: if ``expected_version`` is set, the recipient's version must still
        be that value (it is then incremented; with ``compare_version=False`` it is
        incremented whatever it is); if ``claim_exact``, the (recipient, fingerprint) pair
        must be free or older than ``exact_since`` (an expired entry is taken over; with
        ``exact_yields`` a live one is left to its message and the claim still holds).
        When any claim fails nothing at all is stored and the call returns ``False``: the
        caller re-reads the histories and decides again. Otherwise the sends, ``drops``
        and ``messages`` are committed together and it returns ``True``.
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

    # -- feedback, suppression and dealer state (feedback/ingest.py, reputation/) ---------
    #
    # Contract (tests/contract/test_feedback_store.py): ``record_feedback`` is idempotent
    # on the replay key (message id, kind, recipient) and counts an event on its day in
    # the same transaction, so a replayed report changes nothing. A suppression is never
    # deleted: lifting records who and why, expiry is a time. ``change_dealer_state`` is
    # a compare-and-set on the current state, so two nodes evaluating the same report
    # make one transition (and send one alert), not two.

    async def record_feedback(
        self, event: FeedbackEvent, suppression: Suppression | None = None
    ) -> bool:
        """Record ``event``, add it to its day's counters and add ``suppression``, atomically.

        Returns ``False`` and changes nothing when the replay key is already recorded.
        """
        ...

    async def count_events(
        self, dealer_id: DealerId, recipient: str, kind: EventKind, since: datetime
    ) -> int:
        """How many ``kind`` events ``recipient`` has for ``dealer_id`` since ``since``."""
        ...

    async def recent_events(
        self, dealer_id: DealerId, kinds: frozenset[EventKind], since: datetime, limit: int = 100
    ) -> list[FeedbackEvent]:
        """The dealer's events of ``kinds`` since ``since``, newest first."""
        ...

    async def add_suppression(self, entry: Suppression) -> bool:
        """Suppress ``entry.address`` for ``entry.dealer_id`` (``None``: globally).

        An active entry for the same scope and address is kept; if it is temporary and
        ``entry`` ends later (or never), its expiry, reason and source are updated.
        Entries that expired before ``entry.created_at`` are closed first. Returns whether
        anything was added or extended. (The rule is ``reputation.rules.plan_suppression``;
        a backend reads the open entry under a lock and writes what it decides.)
        """
        ...

    async def find_suppression(
        self, dealer_id: DealerId, address: str, now: datetime
    ) -> Suppression | None:
        """The active entry blocking ``address`` for ``dealer_id``, or ``None``.

        The dealer's own list is looked at first, then the global one. One indexed
        lookup: it runs at every RCPT.
        """
        ...

    async def lift_suppression(
        self, dealer_id: DealerId | None, address: str, by: str, reason: str, now: datetime
    ) -> bool:
        """Close the active entry of one scope and address, recording who and why."""
        ...

    async def list_suppressions(
        self,
        dealer_id: DealerId | None = None,
        *,
        global_only: bool = False,
        active_at: datetime | None = None,
        after_id: int = 0,
        limit: int = 1000,
    ) -> list[Suppression]:
        """Entries in id order after ``after_id`` (for paging through large lists).

        ``dealer_id`` limits to one dealer's list, ``global_only`` to the global list;
        ``active_at`` keeps only entries active then (otherwise lifted and expired ones
        are listed too).
        """
        ...

    async def count_suppressions(self, now: datetime) -> dict[str, int]:
        """Active entries per list: dealer id, or ``*`` for the global list."""
        ...

    async def add_counts(self, dealer_id: DealerId, day: date, counts: DayCounts) -> None:
        """Add ``counts`` to the dealer's counters of ``day`` (UTC)."""
        ...

    async def daily_counts(
        self, dealer_id: DealerId, since: date, until: date
    ) -> list[DailyCounts]:
        """The dealer's counter rows from ``since`` to ``until`` inclusive, oldest first."""
        ...

    async def get_dealer_status(self, dealer_id: DealerId) -> DealerStatus | None:
        """The dealer's current state, or ``None`` when nothing has happened to it (active)."""
        ...

    async def list_dealer_statuses(self) -> list[DealerStatus]:
        """Every dealer that has a recorded state."""
        ...

    async def change_dealer_state(
        self, change: StateChange, baseline: DayCounts | None = None
    ) -> StateChange | None:
        """Apply ``change`` if the dealer is still in ``change.previous``; keep it in history.

        A dealer without a recorded state is ``ACTIVE``. ``baseline`` (on resume) is the
        day's counters at that moment. Returns the change with its id, or ``None`` when
        the state had already moved on (nothing is written). Raises ``ValueError`` for a
        transition the state machine does not have (``reputation.rules.ALLOWED``).
        """
        ...

    async def dealer_history(self, dealer_id: DealerId, limit: int = 50) -> list[StateChange]:
        """The dealer's transitions, newest first."""
        ...

    # -- end of feedback -----------------------------------------------------------------

    # -- consent: interactions and opt-ins per dealer and recipient (gateway/consent/rules.py) ---
    #
    # Contract (tests/contract/test_consent_store.py): nothing is ever deleted. Recording is
    # idempotent on each event's natural key (dealer, address, kind, date, ref); a finance
    # or lease sale recorded again keeps the later last payment date and a proof or source
    # recorded later fills an empty one. Every preference statement is kept; a statement
    # repeated for the same instant keeps the refusal. Addresses are looked up in the
    # ``normalise_address`` form.

    async def record_consent(
        self,
        events: Sequence[ConsentEvent],
        preferences: Sequence[Preference] = (),
        now: datetime | None = None,
    ) -> int:
        """Record ``events`` and ``preferences`` in one transaction; return rows new or changed.

        ``now`` (default: the current time) is stored as when they were recorded.
        """
        ...

    async def consent_records(
        self, dealer_id: DealerId, addresses: Sequence[str]
    ) -> dict[str, ConsentRecord]:
        """Each of ``addresses`` (as given) with its record; an unknown one has an empty record.

        One indexed lookup per call: it runs for every submission of a dealer whose rules
        enforce consent.
        """
        ...

    async def consent_page(
        self, dealer_id: DealerId, after: str = "", limit: int = 1000
    ) -> list[tuple[str, ConsentRecord]]:
        """The dealer's recipients after ``after`` in address order, each with its record."""
        ...

    async def consent_ledger(
        self,
        dealer_id: DealerId,
        recipient: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = 1000,
    ) -> list[LedgerEntry]:
        """The dealer's ledger entries, oldest first: one recipient's and/or a period's.

        ``since`` is inclusive, ``until`` exclusive; ``after`` (the time and message id of
        the last entry of the previous page) pages through a long export.
        """
        ...

    async def consent_refusals(
        self, dealer_id: DealerId, since: datetime | None = None, limit: int = 100
    ) -> list[ConsentRefusal]:
        """Recipients left out of (or refused with) a message for want of consent, newest first."""
        ...

    async def consent_withdrawals(
        self, dealer_id: DealerId, after: datetime | None = None, limit: int = 1000
    ) -> list[tuple[datetime, ConsentEvent]]:
        """Consent-withdrawn events recorded after ``after``, oldest first, with that time."""
        ...

    async def consent_sync_state(self, dealer_id: DealerId) -> tuple[int, datetime | None]:
        """How far the push to the dealer's CRM has got: last suppression id, withdrawal time."""
        ...

    async def set_consent_sync_state(
        self,
        dealer_id: DealerId,
        suppression_after: int,
        withdrawals_after: datetime | None,
        pushed: int,
        error: str,
        now: datetime,
    ) -> None:
        """Record a push to the CRM (its new position, ``pushed`` added) or its ``error``."""
        ...

    async def erase_consent(
        self, dealer_id: DealerId, address: str, key: str, now: datetime, by: str, reason: str
    ) -> dict[str, int]:
        """Erase ``address`` for the dealer (GDPR Art. 17) in one transaction.

        Its consent events and preferences and its finished sent-log rows are deleted; the
        ledger, refusals, feedback events and duplicate drops keep their rows under
        ``erased:<key>``; its suppression entries are re-keyed the same way (one is added
        when there is none), so that the person stays suppressed; ``key`` is recorded as
        erased. Returns the rows changed per table.
        """
        ...

    async def consent_erased(self, dealer_id: DealerId, key: str) -> bool:
        """Whether the keyed hash ``key`` names a person erased for the dealer."""
        ...

    # -- end of consent ------------------------------------------------------------------

    # -- deliverability reports and the status page's figures (gateway/reports/) -----------
    #
    # Contract (tests/contract/test_reports_store.py): the tallies count what is stored now
    # (a message by the time it was received, an event or drop by its time), in UTC days,
    # for one dealer, without system messages; a recipient's domain is what follows the
    # first "@", lower-cased. ``claim_report`` is atomic across nodes: one claim per dealer
    # and period wins, and only a claim left open past its lease may be taken over.

    async def delivery_tallies(
        self, dealer_id: DealerId, since: datetime, until: datetime
    ) -> list[DeliveryTally]:
        """The dealer's messages received in ``[since, until)``, by day, domain and state."""
        ...

    async def event_tallies(
        self, dealer_id: DealerId, since: datetime, until: datetime
    ) -> list[EventTally]:
        """The dealer's feedback events in ``[since, until)``, by day, domain and kind."""
        ...

    async def drop_tallies(
        self, dealer_id: DealerId, since: datetime, until: datetime
    ) -> list[DropTally]:
        """The dealer's duplicate and cap drops in ``[since, until)``, by kind and subject."""
        ...

    async def finding_tallies(
        self, dealer_id: DealerId, since: datetime, until: datetime
    ) -> list[FindingTally]:
        """The dealer's messages with findings received in ``[since, until)``, by set and state."""
        ...

    async def claim_report(
        self, dealer_id: DealerId, period: str, node: str, now: datetime, lease: timedelta
    ) -> bool:
        """Take on the dealer's report for ``period``; ``False`` when another node has it.

        A period already finished is never claimed again; an open claim older than
        ``lease`` (its node died while building it) is taken over.
        """
        ...

    async def finish_report(
        self, dealer_id: DealerId, period: str, node: str, outcome: str, now: datetime
    ) -> bool:
        """Close ``node``'s claim with ``outcome``; ``False`` when the claim was taken over."""
        ...

    async def get_report_claim(self, dealer_id: DealerId, period: str) -> ReportClaim | None:
        """The claim of one dealer's period, or ``None``."""
        ...

    async def set_report_optout(
        self, dealer_id: DealerId, address: str, opted_out: bool, now: datetime
    ) -> bool:
        """Stop (``opted_out``) or restart the reports to one contact; whether it changed."""
        ...

    async def report_optouts(self, dealer_id: DealerId) -> frozenset[str]:
        """The dealer's contacts (lower-cased) who asked for no more reports."""
        ...

    # -- end of reports ------------------------------------------------------------------


def sqlite_path(url: str) -> str | None:
    """The database file a ``sqlite:///`` URL names, or ``None`` for another backend."""
    return url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None


async def open_storage(url: str) -> Storage:
    """Open (and migrate) the backend named by ``url``.

    ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``;
    ``postgresql://user@host:port/db``.
    """
    path = sqlite_path(url)
    if path is not None:
        from gateway.storage.sqlite import SqliteStorage

        return await SqliteStorage.open(path)
    if url.startswith(("postgresql://", "postgres://")):
        from gateway.storage.postgres import PostgresStorage

        return await PostgresStorage.open(url)
    raise ConfigError(f"storage.url: unsupported scheme in {url!r} (sqlite:/// or postgresql://)")
