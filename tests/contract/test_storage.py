"""The storage contract (``gateway/storage/base.py``), run against every backend."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import StorageError, StorageUnavailable
from gateway.storage.base import Storage
from gateway.storage.migrate import migrations
from gateway.types import (
    Credential,
    DealerId,
    MessageId,
    MessageState,
    NewMessage,
    OutcomeKind,
    RcptOutcome,
)
from tests.contract.conftest import Backend, PostgresBackend, postgres_backend

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)
DELIVERED = RcptOutcome(OutcomeKind.DELIVERED, 250, "2.0.0", "ok queued as X1")
DEFERRED = RcptOutcome(OutcomeKind.DEFERRED, 451, "4.7.1", "try again later")
FAILED = RcptOutcome(OutcomeKind.FAILED, 550, "5.1.1", "no such user")


def msg(
    mid: str,
    *,
    dealer: str = "acme-motors",
    at: datetime = T0,
    data: bytes | None = None,
    state: MessageState = MessageState.QUEUED,
    system: bool = False,
    findings: tuple[str, ...] = (),
    note: str = "",
) -> NewMessage:
    return NewMessage(
        id=MessageId(mid),
        dealer_id=DealerId(dealer),
        mail_from=f"bounce+{mid}@mailgate.example",
        rcpt=f"{mid}@customer.example",
        data=data if data is not None else f"Subject: {mid}\r\n\r\nbody of {mid}\r\n".encode(),
        received_at=at,
        state=state,
        findings=findings,
        note=note,
        system=system,
    )


def ids(messages: object) -> list[str]:
    return [m.id for m in messages]  # type: ignore[attr-defined]


# -- enqueue ---------------------------------------------------------------------------


async def test_enqueue_round_trips_every_field(store: Storage) -> None:
    new = msg(
        "m1",
        data=b"Subject: hi\r\n\r\n\x00\xff binary-safe\r\n",
        findings=("stray-attachment", "broken-html"),
        note="from the CRM",
        system=True,
    )
    await store.enqueue([new])

    got = await store.get(MessageId("m1"))
    assert got is not None
    assert (got.id, got.dealer_id, got.mail_from, got.rcpt) == (
        new.id,
        new.dealer_id,
        new.mail_from,
        new.rcpt,
    )
    assert got.data == new.data
    assert got.size == len(new.data)
    assert got.state is MessageState.QUEUED
    assert got.attempts == 0
    assert got.last_error == ""
    assert got.findings == ("stray-attachment", "broken-html")
    assert got.note == "from the CRM"
    assert got.system is True
    assert got.received_at == T0
    assert got.next_attempt_at == T0
    for when in (got.received_at, got.next_attempt_at, got.updated_at):
        assert when is not None
        assert when.utcoffset() == timedelta(0)


async def test_enqueue_keeps_microseconds_and_converts_other_zones(store: Storage) -> None:
    from datetime import timezone

    at = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-5)))
    await store.enqueue([msg("m1", at=at)])
    got = await store.get(MessageId("m1"))
    assert got is not None
    assert got.received_at == at
    assert got.received_at.utcoffset() == timedelta(0)
    assert got.received_at.hour == 17


async def test_enqueue_refuses_naive_datetimes(store: Storage) -> None:
    with pytest.raises(ValueError, match="naive"):
        await store.enqueue([msg("m1", at=datetime(2026, 1, 5, 9, 0))])
    assert await store.get(MessageId("m1")) is None


async def test_batch_with_duplicate_id_stores_nothing(store: Storage) -> None:
    with pytest.raises(StorageError):
        await store.enqueue([msg("a"), msg("b"), msg("a")])
    assert await store.get(MessageId("a")) is None
    assert await store.get(MessageId("b")) is None
    assert (await store.stats()).counts == {}


async def test_batch_clashing_with_stored_id_stores_nothing(store: Storage) -> None:
    await store.enqueue([msg("x", data=b"original")])
    with pytest.raises(StorageError):
        await store.enqueue([msg("y"), msg("x", data=b"impostor")])
    assert await store.get(MessageId("y")) is None
    stored = await store.get(MessageId("x"))
    assert stored is not None
    assert stored.data == b"original"


async def test_concurrent_enqueues_fail_only_the_bad_batch(store: Storage) -> None:
    await store.enqueue([msg("taken")])
    batches = [[msg(f"b{i}-{j}") for j in range(3)] for i in range(20)]
    batches[7] = [msg("b7-0"), msg("taken"), msg("b7-2")]

    results = await asyncio.gather(*(store.enqueue(b) for b in batches), return_exceptions=True)

    assert [i for i, r in enumerate(results) if r is not None] == [7]
    assert isinstance(results[7], StorageError)
    assert await store.get(MessageId("b7-0")) is None
    assert await store.get(MessageId("b7-2")) is None
    for i in (0, 6, 8, 19):
        assert await store.get(MessageId(f"b{i}-2")) is not None
    assert (await store.stats()).count(MessageState.QUEUED) == 1 + 19 * 3


async def test_accepted_enqueue_survives_close_and_reopen(backend: Backend) -> None:
    first = await backend.open()
    await first.enqueue([msg("durable", data=b"must survive")])
    await first.close()

    second = await backend.open()
    got = await second.get(MessageId("durable"))
    assert got is not None
    assert got.data == b"must survive"
    assert [m.id for m in await second.claim("node-a", 10, T0, LEASE)] == ["durable"]


async def test_held_message_is_stored_but_never_claimed(store: Storage) -> None:
    await store.enqueue([msg("h", state=MessageState.HELD, note="spam score")])
    got = await store.get(MessageId("h"))
    assert got is not None
    assert got.state is MessageState.HELD
    assert got.next_attempt_at is None
    assert await store.claim("node-a", 10, T0 + timedelta(days=1), LEASE) == []


# -- claim -----------------------------------------------------------------------------


async def test_claim_hands_out_due_messages_oldest_first_up_to_limit(store: Storage) -> None:
    await store.enqueue(
        [
            msg("m3", at=T0 + timedelta(seconds=2)),
            msg("m1", at=T0),
            msg("future", at=T0 + timedelta(hours=2)),
            msg("m2", at=T0 + timedelta(seconds=1)),
        ]
    )
    now = T0 + timedelta(hours=1)
    assert ids(await store.claim("node-a", 2, now, LEASE)) == ["m1", "m2"]
    assert ids(await store.claim("node-a", 10, now, LEASE)) == ["m3"]
    assert await store.claim("node-a", 10, now, LEASE) == []
    assert await store.claim("node-a", 0, now, LEASE) == []


async def test_claimed_message_carries_its_body(store: Storage) -> None:
    await store.enqueue([msg("m1", data=b"signed bytes")])
    (claimed,) = await store.claim("node-a", 1, T0, LEASE)
    assert claimed.data == b"signed bytes"
    assert claimed.state is MessageState.QUEUED


async def test_concurrent_claimers_never_share_a_message(backend: Backend) -> None:
    node_a = await backend.open()
    node_b = await backend.open()
    total = 300
    await node_a.enqueue(
        [msg(f"m{i:03d}", at=T0 + timedelta(milliseconds=i)) for i in range(total)]
    )
    now = T0 + timedelta(minutes=1)

    handed: list[tuple[str, str]] = []
    for _ in range(20):
        calls = [(node_a, "node-a") for _ in range(12)] + [(node_b, "node-b") for _ in range(12)]
        results = await asyncio.gather(*(s.claim(n, 3, now, LEASE) for s, n in calls))
        got = [(n, m.id) for (_, n), batch in zip(calls, results, strict=True) for m in batch]
        if not got:
            break
        handed.extend(got)

    claimed_ids = [mid for _, mid in handed]
    assert len(claimed_ids) == len(set(claimed_ids)), "a message was handed out twice"
    assert sorted(claimed_ids) == [f"m{i:03d}" for i in range(total)]
    assert {node for node, _ in handed} == {"node-a", "node-b"}


async def test_lease_blocks_other_nodes_until_it_expires(backend: Backend) -> None:
    node_a = await backend.open()
    node_b = await backend.open()
    await node_a.enqueue([msg("m1")])
    assert ids(await node_a.claim("node-a", 10, T0, LEASE)) == ["m1"]

    assert await node_b.claim("node-b", 10, T0 + LEASE - timedelta(seconds=1), LEASE) == []
    assert await node_a.claim("node-a", 10, T0 + LEASE - timedelta(seconds=1), LEASE) == []
    # node-a died: at the end of its lease another node takes the message over.
    assert ids(await node_b.claim("node-b", 10, T0 + LEASE, LEASE)) == ["m1"]


async def test_old_owner_is_fenced_off_after_takeover(backend: Backend) -> None:
    node_a = await backend.open()
    node_b = await backend.open()
    await node_a.enqueue([msg("m1")])
    await node_a.claim("node-a", 1, T0, LEASE)
    later = T0 + LEASE + timedelta(seconds=1)
    assert ids(await node_b.claim("node-b", 1, later, LEASE)) == ["m1"]

    assert await node_a.complete(MessageId("m1"), "node-a", DELIVERED, later) is False
    assert await node_a.defer(MessageId("m1"), "node-a", DEFERRED, later, later) is False
    assert await node_a.release(MessageId("m1"), "node-a") is False
    untouched = await node_b.get(MessageId("m1"))
    assert untouched is not None
    assert (untouched.state, untouched.attempts, untouched.last_error) == (
        MessageState.QUEUED,
        0,
        "",
    )
    assert untouched.data != b""
    # node-b's lease still holds: nobody else can take it, node-a included.
    assert await node_a.claim("node-a", 1, later, LEASE) == []

    assert await node_b.complete(MessageId("m1"), "node-b", DELIVERED, later) is True
    done = await node_b.get(MessageId("m1"))
    assert done is not None
    assert (done.state, done.attempts) == (MessageState.DELIVERED, 1)


async def test_release_makes_message_claimable_without_counting_an_attempt(
    store: Storage,
) -> None:
    await store.enqueue([msg("m1")])
    await store.claim("node-a", 1, T0, LEASE)
    assert await store.release(MessageId("m1"), "node-b") is False
    assert await store.release(MessageId("m1"), "node-a") is True
    assert await store.release(MessageId("m1"), "node-a") is False
    (again,) = await store.claim("node-b", 1, T0, LEASE)
    assert again.attempts == 0


async def test_release_owned_frees_every_lease_of_a_restarted_node(store: Storage) -> None:
    await store.enqueue([msg(f"m{i}", at=T0 + timedelta(seconds=i)) for i in range(4)])
    now = T0 + timedelta(minutes=1)
    await store.claim("node-a", 2, now, LEASE)
    await store.claim("node-b", 1, now, LEASE)
    assert await store.release_owned("node-a") == 2
    assert await store.release_owned("node-a") == 0
    # node-b keeps its lease: only the free messages are handed out again.
    assert ids(await store.claim("node-c", 10, now, LEASE)) == ["m0", "m1", "m3"]
    assert await store.complete(MessageId("m2"), "node-b", DELIVERED, now) is True


async def test_defer_schedules_the_next_attempt(store: Storage) -> None:
    await store.enqueue([msg("m1")])
    await store.claim("node-a", 1, T0, LEASE)
    retry_at = T0 + timedelta(minutes=10)
    assert await store.defer(MessageId("m1"), "node-a", DEFERRED, retry_at, T0) is True

    deferred = await store.get(MessageId("m1"))
    assert deferred is not None
    assert deferred.attempts == 1
    assert deferred.next_attempt_at == retry_at
    assert deferred.last_error == "451 4.7.1 try again later"
    assert deferred.state is MessageState.QUEUED
    assert await store.claim("node-a", 1, retry_at - timedelta(seconds=1), LEASE) == []
    (due,) = await store.claim("node-b", 1, retry_at, LEASE)
    assert (due.id, due.attempts) == ("m1", 1)
    # The defer dropped the lease: the second defer needs a fresh claim.
    assert await store.defer(MessageId("m1"), "node-a", DEFERRED, retry_at, retry_at) is False


async def test_deferred_message_is_ordered_by_its_new_due_time(store: Storage) -> None:
    await store.enqueue([msg("first", at=T0), msg("second", at=T0 + timedelta(seconds=1))])
    await store.claim("node-a", 1, T0, LEASE)
    await store.defer(MessageId("first"), "node-a", DEFERRED, T0 + timedelta(minutes=1), T0)
    later = T0 + timedelta(minutes=2)
    assert ids(await store.claim("node-a", 10, later, LEASE)) == ["second", "first"]


async def test_suspended_dealers_are_skipped_except_system_messages(store: Storage) -> None:
    await store.enqueue(
        [
            msg("suspended", dealer="bad-motors", at=T0),
            msg("dsn", dealer="bad-motors", at=T0 + timedelta(seconds=1), system=True),
            msg("other", dealer="good-motors", at=T0 + timedelta(seconds=2)),
        ]
    )
    excluded = frozenset({DealerId("bad-motors"), DealerId("worse-motors")})
    claimed = await store.claim("node-a", 10, T0 + timedelta(minutes=1), LEASE, excluded)
    assert ids(claimed) == ["dsn", "other"]
    # Once resumed, its mail flows again.
    claimed = await store.claim("node-a", 10, T0 + timedelta(minutes=1), LEASE)
    assert ids(claimed) == ["suspended"]


async def test_corrupt_message_is_quarantined_and_claim_goes_on(
    backend: Backend, store: Storage
) -> None:
    await store.enqueue(
        [msg(f"m{i}", at=T0 + timedelta(seconds=i), data=f"body {i}".encode()) for i in range(4)]
    )
    await backend.corrupt("m0", b"body 0 with a flipped bit")

    claimed = await store.claim("node-a", 3, T0 + timedelta(minutes=1), LEASE)
    assert ids(claimed) == ["m1", "m2", "m3"]
    bad = await store.get(MessageId("m0"))
    assert bad is not None
    assert bad.state is MessageState.QUARANTINED
    assert "SHA-256" in bad.last_error
    assert await store.claim("node-b", 10, T0 + timedelta(minutes=2), LEASE) == []
    assert await store.requeue(MessageId("m0"), T0) is False
    assert (await store.stats()).count(MessageState.QUARANTINED) == 1


async def test_claim_rejects_a_non_positive_lease(store: Storage) -> None:
    with pytest.raises(ValueError):
        await store.claim("node-a", 1, T0, timedelta(0))


# -- complete, hold, requeue, delete -----------------------------------------------------


async def test_delivered_message_keeps_its_row_but_not_its_body(store: Storage) -> None:
    await store.enqueue([msg("m1")])
    await store.claim("node-a", 1, T0, LEASE)
    done_at = T0 + timedelta(seconds=3)
    assert await store.complete(MessageId("m1"), "node-a", DELIVERED, done_at) is True

    got = await store.get(MessageId("m1"))
    assert got is not None
    assert got.state is MessageState.DELIVERED
    assert got.data == b""
    assert got.size > 0
    assert got.attempts == 1
    assert got.last_error == "250 2.0.0 ok queued as X1"
    assert got.updated_at == done_at
    assert got.next_attempt_at is None
    assert await store.requeue(MessageId("m1"), done_at) is False
    assert await store.complete(MessageId("m1"), "node-a", DELIVERED, done_at) is False


async def test_failed_message_keeps_its_body_and_can_be_requeued(store: Storage) -> None:
    await store.enqueue([msg("m1", data=b"keep me")])
    await store.claim("node-a", 1, T0, LEASE)
    assert await store.complete(MessageId("m1"), "node-a", FAILED, T0) is True
    failed = await store.get(MessageId("m1"))
    assert failed is not None
    assert (failed.state, failed.data, failed.last_error) == (
        MessageState.FAILED,
        b"keep me",
        "550 5.1.1 no such user",
    )
    assert await store.claim("node-a", 1, T0 + timedelta(days=1), LEASE) == []

    later = T0 + timedelta(hours=1)
    assert await store.requeue(MessageId("m1"), later) is True
    (again,) = await store.claim("node-b", 1, later, LEASE)
    assert (again.id, again.data, again.attempts) == ("m1", b"keep me", 1)


async def test_complete_refuses_a_deferral(store: Storage) -> None:
    await store.enqueue([msg("m1")])
    await store.claim("node-a", 1, T0, LEASE)
    with pytest.raises(ValueError):
        await store.complete(MessageId("m1"), "node-a", DEFERRED, T0)


async def test_hold_and_requeue(store: Storage) -> None:
    await store.enqueue([msg("m1")])
    assert await store.hold(MessageId("m1"), "operator: check the attachment", T0) is True
    held = await store.get(MessageId("m1"))
    assert held is not None
    assert (held.state, held.note) == (MessageState.HELD, "operator: check the attachment")
    assert await store.claim("node-a", 10, T0 + timedelta(days=1), LEASE) == []
    assert await store.hold(MessageId("m1"), "again", T0) is False

    later = T0 + timedelta(hours=3)
    assert await store.requeue(MessageId("m1"), later) is True
    queued = await store.get(MessageId("m1"))
    assert queued is not None
    assert (queued.state, queued.next_attempt_at) == (MessageState.QUEUED, later)
    assert await store.claim("node-a", 10, later - timedelta(seconds=1), LEASE) == []
    assert ids(await store.claim("node-a", 10, later, LEASE)) == ["m1"]

    assert await store.requeue(MessageId("missing"), later) is False
    assert await store.hold(MessageId("missing"), "x", later) is False


async def test_requeue_of_a_waiting_message_makes_it_due_now(store: Storage) -> None:
    await store.enqueue([msg("m1")])
    await store.claim("node-a", 1, T0, LEASE)
    await store.defer(MessageId("m1"), "node-a", DEFERRED, T0 + timedelta(hours=4), T0)
    now = T0 + timedelta(minutes=1)
    assert await store.requeue(MessageId("m1"), now) is True
    assert ids(await store.claim("node-a", 1, now, LEASE)) == ["m1"]
    # A requeue while node-a is sending must not hand the message to a second node.
    assert await store.requeue(MessageId("m1"), now) is True
    assert await store.claim("node-b", 1, now, LEASE) == []


async def test_holding_a_leased_message_fences_off_its_worker(store: Storage) -> None:
    await store.enqueue([msg("m1")])
    await store.claim("node-a", 1, T0, LEASE)
    assert await store.hold(MessageId("m1"), "dealer suspended mid-send", T0) is True
    assert await store.complete(MessageId("m1"), "node-a", DELIVERED, T0) is False
    assert await store.defer(MessageId("m1"), "node-a", DEFERRED, T0, T0) is False
    held = await store.get(MessageId("m1"))
    assert held is not None
    assert held.state is MessageState.HELD


async def test_delete(store: Storage) -> None:
    await store.enqueue([msg("m1"), msg("m2")])
    await store.claim("node-a", 1, T0, LEASE)
    assert await store.delete(MessageId("m1")) is True
    assert await store.delete(MessageId("m1")) is False
    assert await store.get(MessageId("m1")) is None
    assert await store.complete(MessageId("m1"), "node-a", DELIVERED, T0) is False
    assert await store.get(MessageId("m2")) is not None


async def test_get_unknown_is_none(store: Storage) -> None:
    assert await store.get(MessageId("nope")) is None


# -- listing and statistics ------------------------------------------------------------


async def test_list_messages_newest_first_without_bodies(store: Storage) -> None:
    await store.enqueue(
        [
            msg("a1", dealer="a", at=T0),
            msg("b1", dealer="b", at=T0 + timedelta(minutes=1)),
            msg("a2", dealer="a", at=T0 + timedelta(minutes=2)),
            msg("a3", dealer="a", at=T0 + timedelta(minutes=3), state=MessageState.HELD),
        ]
    )
    listed = await store.list_messages()
    assert ids(listed) == ["a3", "a2", "b1", "a1"]
    assert all(m.data == b"" for m in listed)
    assert all(m.size > 0 for m in listed)
    assert ids(await store.list_messages(state=MessageState.HELD)) == ["a3"]
    assert ids(await store.list_messages(dealer_id=DealerId("a"))) == ["a3", "a2", "a1"]
    assert ids(await store.list_messages(state=MessageState.QUEUED, dealer_id=DealerId("a"))) == [
        "a2",
        "a1",
    ]
    assert ids(await store.list_messages(limit=2)) == ["a3", "a2"]
    assert await store.list_messages(dealer_id=DealerId("nobody")) == []


async def test_stats_of_an_empty_store(store: Storage) -> None:
    stats = await store.stats()
    assert dict(stats.counts) == {}
    assert stats.oldest_queued_at is None
    assert stats.queued_bytes == 0


async def test_stats_counts_states_oldest_and_waiting_bytes(store: Storage) -> None:
    await store.enqueue(
        [
            msg("sent", at=T0 - timedelta(hours=1), data=b"x" * 1000),
            msg("q1", at=T0 + timedelta(minutes=5), data=b"x" * 10),
            msg("q2", at=T0 + timedelta(minutes=1), data=b"x" * 20),
            msg("held", at=T0 - timedelta(hours=2), data=b"x" * 300, state=MessageState.HELD),
        ]
    )
    await store.claim("node-a", 1, T0, LEASE)
    await store.complete(MessageId("sent"), "node-a", DELIVERED, T0)

    stats = await store.stats()
    assert dict(stats.counts) == {
        MessageState.QUEUED: 2,
        MessageState.HELD: 1,
        MessageState.DELIVERED: 1,
    }
    assert stats.oldest_queued_at == T0 + timedelta(minutes=1)
    assert stats.queued_bytes == 10 + 20 + 300


async def test_expire_finished_removes_only_old_finished_rows(store: Storage) -> None:
    await store.enqueue([msg("ok"), msg("bad"), msg("waiting"), msg("kept")])
    await store.hold(MessageId("kept"), "review", T0)
    await store.claim("node-a", 2, T0, LEASE)
    await store.complete(MessageId("ok"), "node-a", DELIVERED, T0 + timedelta(hours=1))
    await store.complete(MessageId("bad"), "node-a", FAILED, T0 + timedelta(hours=2))

    assert await store.expire_finished(T0 + timedelta(hours=1)) == 0
    assert await store.expire_finished(T0 + timedelta(minutes=90)) == 1
    assert await store.get(MessageId("ok")) is None
    assert await store.expire_finished(T0 + timedelta(days=30)) == 1
    assert await store.get(MessageId("bad")) is None
    assert ids(await store.list_messages()) != []
    assert {m.id for m in await store.list_messages()} == {"waiting", "kept"}


# -- credentials -----------------------------------------------------------------------


async def test_credentials_crud(store: Storage) -> None:
    assert await store.get_credential("crm-acme") is None
    first = Credential("crm-acme", DealerId("acme-motors"), "$argon2id$v=19$first", T0)
    other = Credential("crm-zed", DealerId("zed-cars"), "$argon2id$v=19$zed", T0)
    await store.set_credential(first)
    await store.set_credential(other)
    assert await store.get_credential("crm-acme") == first

    rotated = Credential(
        "crm-acme", DealerId("acme-motors"), "$argon2id$v=19$second", T0 + timedelta(days=1)
    )
    await store.set_credential(rotated)
    assert await store.get_credential("crm-acme") == rotated
    assert await store.list_credentials() == [rotated, other]
    assert await store.list_credentials(DealerId("zed-cars")) == [other]
    assert await store.list_credentials(DealerId("nobody")) == []

    assert await store.delete_credential("crm-acme") is True
    assert await store.delete_credential("crm-acme") is False
    assert await store.get_credential("crm-acme") is None
    assert await store.list_credentials() == [other]


# -- failures and lifecycle ------------------------------------------------------------


async def test_closed_store_raises_storage_error(backend: Backend) -> None:
    store = await backend.open()
    await store.enqueue([msg("m1")])
    await store.close()
    await store.close()  # idempotent
    attempts = [
        store.ping(),
        store.enqueue([msg("m2")]),
        store.claim("node-a", 1, T0, LEASE),
        store.get(MessageId("m1")),
        store.list_messages(),
        store.stats(),
        store.complete(MessageId("m1"), "node-a", DELIVERED, T0),
        store.get_credential("x"),
    ]
    for attempt in attempts:
        with pytest.raises(StorageError):
            await attempt


async def test_unreachable_store_raises_storage_unavailable(backend: Backend) -> None:
    with pytest.raises(StorageUnavailable):
        await backend.open_unreachable()


async def test_ping(store: Storage) -> None:
    await store.ping()


async def test_migrations_apply_once_even_when_two_nodes_start_together(
    backend: Backend,
) -> None:
    stores = await asyncio.gather(backend.open(), backend.open(), backend.open())
    dialect = "sqlite" if backend.name == "sqlite" else "postgres"
    shipped = migrations(dialect)
    assert shipped, "no migrations found"
    assert await backend.scalar("SELECT count(*) FROM schema_migrations") == len(shipped)
    assert await backend.scalar("SELECT max(version) FROM schema_migrations") == max(
        m.version for m in shipped
    )
    await stores[0].enqueue([msg("m1")])
    assert await stores[2].get(MessageId("m1")) is not None


async def test_commits_are_synchronous(backend: Backend) -> None:
    if backend.name == "sqlite":
        from gateway.storage.sqlite import SqliteStorage

        store = await backend.open()
        assert isinstance(store, SqliteStorage)
        assert await backend.scalar("PRAGMA journal_mode") == "wal"
        # 2 = FULL (https://sqlite.org/pragma.html#pragma_synchronous)
        sync = await store._writer.run(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
        assert sync == 2
    else:
        from gateway.storage.postgres import PostgresStorage

        # Even a database whose default is asynchronous commit gets synchronous ones.
        database = backend.url.rsplit("/", 1)[-1]  # type: ignore[attr-defined]
        await backend.execute(f'ALTER DATABASE "{database}" SET synchronous_commit = off')
        store = await backend.open()
        assert isinstance(store, PostgresStorage)
        seen = set()
        for _ in range(3):
            async with store._pool.acquire() as conn:
                seen.add(await conn.fetchval("SHOW synchronous_commit"))
        assert seen == {"on"}


@pytest.mark.parametrize("batch_size", [1, 50])
async def test_many_small_concurrent_enqueues_all_land(store: Storage, batch_size: int) -> None:
    counter = itertools.count()
    batches = [[msg(f"m{next(counter)}") for _ in range(batch_size)] for _ in range(40)]
    await asyncio.gather(*(store.enqueue(b) for b in batches))
    assert (await store.stats()).count(MessageState.QUEUED) == 40 * batch_size


class _Proxy:
    """A TCP relay to the database that a test can cut, as a network failure would."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()


@pytest.mark.postgres
async def test_lost_database_raises_storage_unavailable_then_recovers() -> None:
    # Only PostgreSQL has a network connection to lose, so this case is not parametrized.
    backend = await postgres_backend()
    try:
        await _lost_connection_case(backend)
    finally:
        await backend.cleanup()


async def _lost_connection_case(backend: PostgresBackend) -> None:
    from urllib.parse import urlsplit, urlunsplit

    from gateway.storage.postgres import PostgresStorage

    parts = urlsplit(backend.url)
    proxy = _Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}"
    store = await PostgresStorage.open(urlunsplit(parts._replace(netloc=netloc)))
    try:
        await store.enqueue([msg("m1")])
        await proxy.cut()
        with pytest.raises(StorageUnavailable):
            await store.get(MessageId("m1"))
        with pytest.raises(StorageUnavailable):
            await store.enqueue([msg("m2")])
        await proxy.start()  # the same port: the database is back
        assert await store.get(MessageId("m1")) is not None
    finally:
        await store.close()
        await proxy.cut()
