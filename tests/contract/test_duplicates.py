"""The duplicates part of the storage contract (``Storage.enqueue_claimed`` and friends)."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

from gateway.duplicates.fingerprints import (
    SIGNATURE_BYTES,
    Category,
    DuplicateDrop,
    SendClaim,
)
from gateway.storage.base import Storage
from gateway.types import DealerId, MessageId, MessageState, NewMessage
from tests.contract.conftest import Backend

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
WINDOW = timedelta(hours=72)


def key(name: str) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=16).digest()


def claim(
    rcpt: str,
    mid: str,
    *,
    content: str = "follow-up",
    at: datetime = T0,
    version: int | None = 0,
    exact: bool = True,
    category: Category = Category.COMMERCIAL,
    compare: bool = True,
    yields: bool = False,
) -> SendClaim:
    return SendClaim(
        recipient=key(rcpt),
        fingerprint=key(content),
        message_id=MessageId(mid),
        sent_at=at,
        signature=bytes(range(256))[:SIGNATURE_BYTES],
        category=category,
        exact_since=at - WINDOW,
        expected_version=version,
        claim_exact=exact,
        compare_version=compare,
        exact_yields=yields,
    )


def message(mid: str, rcpt: str = "john@customer.test", at: datetime = T0) -> NewMessage:
    return NewMessage(
        id=MessageId(mid),
        dealer_id=DealerId("example-motors"),
        mail_from="bounce@mailgate.test",
        rcpt=rcpt,
        data=f"Subject: {mid}\r\n\r\nbody\r\n".encode(),
        received_at=at,
    )


def drop(
    rcpt: str, earlier: str, *, dealer: str = "example-motors", at: datetime = T0
) -> DuplicateDrop:
    return DuplicateDrop(
        dealer_id=DealerId(dealer),
        recipient=rcpt,
        submission_id="S1",
        kind="exact",
        code="duplicate-message",
        action="drop",
        earlier=earlier,
        detail=f"the same message went to {rcpt} as {earlier}",
        at=at,
    )


async def test_unknown_recipient_has_version_zero_and_no_sends(store: Storage) -> None:
    got = await store.recipient_histories([key("nobody")], T0 - WINDOW)
    assert got[key("nobody")].version == 0
    assert got[key("nobody")].sends == ()


async def test_claim_records_the_send_with_the_message(store: Storage) -> None:
    assert await store.enqueue_claimed([message("m1")], [claim("john", "m1")])
    history = (await store.recipient_histories([key("john")], T0 - WINDOW))[key("john")]
    assert history.version == 1
    (send,) = history.sends
    assert (send.message_id, send.sent_at, send.fingerprint) == ("m1", T0, key("follow-up"))
    assert send.category is Category.COMMERCIAL
    assert len(send.signature) == SIGNATURE_BYTES
    stored = await store.get(MessageId("m1"))
    assert stored is not None and stored.state is MessageState.QUEUED


async def test_a_lost_exact_claim_stores_nothing(store: Storage) -> None:
    assert await store.enqueue_claimed([message("m1")], [claim("john", "m1")])
    later = T0 + timedelta(hours=1)
    lost = await store.enqueue_claimed(
        [message("m2", at=later)],
        [claim("john", "m2", at=later, version=None)],  # version guard off: the key decides
        [drop("mary@customer.test", "m0")],
    )
    assert lost is False
    assert await store.get(MessageId("m2")) is None
    assert await store.list_duplicate_drops() == []


async def test_a_stale_version_loses_even_for_new_content(store: Storage) -> None:
    assert await store.enqueue_claimed([message("m1")], [claim("john", "m1")])
    stale = claim("john", "m2", content="another", version=0)
    assert await store.enqueue_claimed([message("m2")], [stale]) is False
    later = T0 + timedelta(minutes=1)
    fresh = claim("john", "m2", content="another", at=later, version=1)
    assert await store.enqueue_claimed([message("m2", at=later)], [fresh])
    history = (await store.recipient_histories([key("john")], T0 - WINDOW))[key("john")]
    assert history.version == 2
    assert [s.message_id for s in history.sends] == ["m2", "m1"]  # newest first


async def test_one_lost_claim_rolls_back_every_recipient_of_the_batch(store: Storage) -> None:
    assert await store.enqueue_claimed([message("m1")], [claim("john", "m1")])
    both = [claim("mary", "m2-1"), claim("john", "m2-2", version=0)]
    assert await store.enqueue_claimed([message("m2-1"), message("m2-2")], both) is False
    history = await store.recipient_histories([key("mary")], T0 - WINDOW)
    assert history[key("mary")].version == 0
    assert await store.get(MessageId("m2-1")) is None


async def test_an_expired_fingerprint_is_taken_over(store: Storage) -> None:
    assert await store.enqueue_claimed([message("m1")], [claim("john", "m1", version=None)])
    later = T0 + WINDOW + timedelta(minutes=1)
    assert await store.enqueue_claimed(
        [message("m2", at=later)], [claim("john", "m2", at=later, version=None)]
    )
    history = (await store.recipient_histories([key("john")], T0 - WINDOW))[key("john")]
    assert [(s.message_id, s.sent_at) for s in history.sends] == [("m2", later)]


async def test_transactional_claims_leave_the_version_alone(store: Storage) -> None:
    receipt = claim("john", "m1", version=None, category=Category.TRANSACTIONAL)
    assert await store.enqueue_claimed([message("m1")], [receipt])
    history = (await store.recipient_histories([key("john")], T0 - WINDOW))[key("john")]
    assert history.version == 0
    assert [s.category for s in history.sends] == [Category.TRANSACTIONAL]


async def test_a_tagged_duplicate_bumps_the_version_without_a_second_row(store: Storage) -> None:
    assert await store.enqueue_claimed([message("m1")], [claim("john", "m1")])
    tagged = claim("john", "m2", version=1, exact=False)
    assert await store.enqueue_claimed([message("m2")], [tagged])
    history = (await store.recipient_histories([key("john")], T0 - WINDOW))[key("john")]
    assert history.version == 2
    assert [s.message_id for s in history.sends] == ["m1"]


async def test_an_unguarded_claim_bumps_whatever_the_version(store: Storage) -> None:
    # A near duplicate delivered anyway: later sends cannot undo its decision.
    assert await store.enqueue_claimed([message("m1")], [claim("john", "m1")])
    alike = claim("john", "m2", content="alike", version=0, compare=False)
    assert await store.enqueue_claimed([message("m2")], [alike])
    history = (await store.recipient_histories([key("john")], T0 - WINDOW))[key("john")]
    assert history.version == 2
    assert sorted(s.message_id for s in history.sends) == ["m1", "m2"]
    first = claim("mary", "m3", version=7, compare=False)  # never seen: starts at 1
    assert await store.enqueue_claimed([message("m3")], [first])
    assert (await store.recipient_histories([key("mary")], T0 - WINDOW))[key("mary")].version == 1


async def test_an_unguarded_claim_still_loses_a_live_exact_key(store: Storage) -> None:
    assert await store.enqueue_claimed([message("m1")], [claim("john", "m1")])
    same = claim("john", "m2", version=1, compare=False)
    assert await store.enqueue_claimed([message("m2")], [same]) is False
    assert await store.get(MessageId("m2")) is None
    history = (await store.recipient_histories([key("john")], T0 - WINDOW))[key("john")]
    assert history.version == 1


async def test_a_yielding_claim_leaves_the_exact_key_to_the_earlier_message(
    store: Storage,
) -> None:
    assert await store.enqueue_claimed([message("m1")], [claim("john", "m1")])
    same = claim("john", "m2", version=0, compare=False, yields=True)
    assert await store.enqueue_claimed([message("m2")], [same])
    assert await store.get(MessageId("m2")) is not None
    history = (await store.recipient_histories([key("john")], T0 - WINDOW))[key("john")]
    assert history.version == 2
    assert [s.message_id for s in history.sends] == ["m1"]


async def test_unguarded_claims_on_three_connections_at_once_all_win(backend: Backend) -> None:
    stores = [await backend.open() for _ in range(3)]
    results = await asyncio.gather(
        *(
            s.enqueue_claimed(
                [message(f"m{n}")], [claim("john", f"m{n}", content=f"c{n}", compare=False)]
            )
            for n, s in enumerate(stores)
        )
    )
    assert results == [True, True, True]
    history = (await stores[0].recipient_histories([key("john")], T0 - WINDOW))[key("john")]
    assert history.version == 3
    assert sorted(s.message_id for s in history.sends) == ["m0", "m1", "m2"]


async def test_history_starts_at_since(store: Storage) -> None:
    for n in range(3):
        at = T0 + timedelta(days=n)
        assert await store.enqueue_claimed(
            [message(f"m{n}", at=at)], [claim("john", f"m{n}", content=f"c{n}", at=at, version=n)]
        )
    history = await store.recipient_histories([key("john")], T0 + timedelta(days=1))
    assert [s.message_id for s in history[key("john")].sends] == ["m2", "m1"]


async def test_drops_alone_are_recorded_and_listed_newest_first(store: Storage) -> None:
    assert await store.enqueue_claimed([], [], [drop("a@customer.test", "m1")])
    later = T0 + timedelta(minutes=5)
    assert await store.enqueue_claimed(
        [], [], [drop("b@customer.test", "m2", dealer="rival-motors", at=later)]
    )
    everything = await store.list_duplicate_drops()
    assert [(d.recipient, d.earlier, d.at) for d in everything] == [
        ("b@customer.test", "m2", later),
        ("a@customer.test", "m1", T0),
    ]
    mine = await store.list_duplicate_drops(DealerId("example-motors"))
    assert mine == [drop("a@customer.test", "m1")]


async def test_the_same_claim_on_three_connections_at_once_wins_once(backend: Backend) -> None:
    stores = [await backend.open() for _ in range(3)]
    results = await asyncio.gather(
        *(
            s.enqueue_claimed([message(f"m{n}")], [claim("john", f"m{n}")])
            for n, s in enumerate(stores)
        )
    )
    assert sorted(results) == [False, False, True]
    winner = results.index(True)
    history = (await stores[0].recipient_histories([key("john")], T0 - WINDOW))[key("john")]
    assert [s.message_id for s in history.sends] == [f"m{winner}"]
    present = [await stores[0].get(MessageId(f"m{n}")) is not None for n in range(3)]
    assert present == [n == winner for n in range(3)]


async def test_expiry_works_in_batches_and_keeps_live_entries(store: Storage) -> None:
    old = T0 - timedelta(days=10)
    for n in range(7):
        assert await store.enqueue_claimed(
            [], [claim(f"r{n}", f"old{n}", at=old)], [drop(f"r{n}@x.test", f"old{n}", at=old)]
        )
    assert await store.enqueue_claimed([], [claim("live", "new")], [drop("live@x.test", "new")])
    cutoff = T0 - timedelta(days=7)
    passes = []
    while removed := await store.expire_duplicates(cutoff, cutoff, batch=3):
        passes.append(removed)
    assert passes == [9, 9, 3]  # 7 sends + 7 recipients + 7 drops, three of each per pass
    keys = [key(f"r{n}") for n in range(7)] + [key("live")]
    histories = await store.recipient_histories(keys, cutoff - timedelta(days=30))
    assert [h.version for h in histories.values()] == [0] * 7 + [1]
    assert [d.earlier for d in await store.list_duplicate_drops()] == ["new"]
