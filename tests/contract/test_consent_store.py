"""The consent part of the storage contract: interactions and opt-ins, never deleted."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from gateway.consent.ledger import ConsentRefusal, ConsentWrites, LedgerEntry
from gateway.consent.rules import ConsentEvent, ConsentRecord, Interaction, Preference, Topic
from gateway.errors import StorageError
from gateway.reputation.records import Suppression
from gateway.storage.base import Storage
from gateway.types import DealerId, MessageId, NewMessage

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DEALER = DealerId("example-motors")
OTHER = DealerId("rival-motors")


def ev(
    kind: Interaction = Interaction.SERVICE,
    on: date = date(2024, 3, 1),
    address: str = "john@customer.test",
    dealer: DealerId = DEALER,
    **kw: object,
) -> ConsentEvent:
    return ConsentEvent(dealer, address, kind, on, **kw)  # type: ignore[arg-type]


def pref(granted: bool, at: datetime = T0, topic: Topic = Topic.DEALER_MARKETING) -> Preference:
    return Preference(DEALER, "john@customer.test", topic, granted, at, "crm")


async def test_recording_is_idempotent_on_the_natural_key(store: Storage) -> None:
    events = [ev(ref="RO-1"), ev(ref="RO-2"), ev(Interaction.INQUIRY, date(2025, 1, 1))]
    assert await store.record_consent(events, now=T0) == 3
    assert await store.record_consent(events, now=T0) == 0
    found = await store.consent_records(DEALER, ["john@customer.test"])
    assert sorted(e.ref for e in found["john@customer.test"].events) == ["", "RO-1", "RO-2"]


async def test_one_batch_may_name_an_event_twice(store: Storage) -> None:
    assert await store.record_consent([ev(ref="RO-1"), ev(ref="RO-1")], now=T0) == 1


async def test_a_later_last_payment_and_a_missing_proof_are_taken(store: Storage) -> None:
    deal = ev(Interaction.SALE_FINANCE, date(2020, 1, 1), ref="D-9")
    await store.record_consent([deal], now=T0)
    paid = ev(Interaction.SALE_FINANCE, date(2020, 1, 1), ref="D-9", last_payment=date(2024, 5, 1))
    assert await store.record_consent([paid], now=T0) == 1
    earlier = ev(
        Interaction.SALE_FINANCE, date(2020, 1, 1), ref="D-9", last_payment=date(2023, 1, 1)
    )
    assert await store.record_consent([earlier], now=T0) == 0
    proof = ev(Interaction.SALE_FINANCE, date(2020, 1, 1), ref="D-9", proof="contract 9")
    assert await store.record_consent([proof], now=T0) == 1
    (stored,) = (await store.consent_records(DEALER, ["john@customer.test"]))[
        "john@customer.test"
    ].events
    assert stored.last_payment == date(2024, 5, 1) and stored.proof == "contract 9"


async def test_addresses_are_looked_up_case_blind_and_returned_as_given(store: Storage) -> None:
    await store.record_consent([ev(address=" John@Customer.TEST ")], now=T0)
    found = await store.consent_records(DEALER, ["JOHN@customer.test", "nobody@customer.test"])
    assert set(found) == {"JOHN@customer.test", "nobody@customer.test"}
    assert [e.address for e in found["JOHN@customer.test"].events] == ["john@customer.test"]
    assert found["nobody@customer.test"].events == ()


async def test_records_are_per_dealer(store: Storage) -> None:
    await store.record_consent([ev(dealer=OTHER)], now=T0)
    assert (await store.consent_records(DEALER, ["john@customer.test"]))[
        "john@customer.test"
    ].events == ()


async def test_every_preference_statement_is_kept(store: Storage) -> None:
    later = T0.replace(year=2026, month=2)
    assert await store.record_consent([], [pref(True), pref(False, later)], now=T0) == 2
    assert await store.record_consent([], [pref(True)], now=T0) == 0
    record = (await store.consent_records(DEALER, ["john@customer.test"]))["john@customer.test"]
    assert sorted((p.at, p.granted) for p in record.preferences) == [(T0, True), (later, False)]
    assert all(p.channel == "email" and p.source == "crm" for p in record.preferences)


async def test_for_one_instant_the_refusal_is_kept(store: Storage) -> None:
    await store.record_consent([], [pref(True)], now=T0)
    assert await store.record_consent([], [pref(False)], now=T0) == 1
    assert await store.record_consent([], [pref(True)], now=T0) == 0
    record = (await store.consent_records(DEALER, ["john@customer.test"]))["john@customer.test"]
    assert [p.granted for p in record.preferences] == [False]


async def test_paging_through_a_dealers_recipients(store: Storage) -> None:
    events = [ev(address=f"c{n:03d}@customer.test") for n in range(25)]
    events.append(ev(address="c999@customer.test", dealer=OTHER))
    await store.record_consent(events, [pref(True)], now=T0)
    seen: list[str] = []
    after = ""
    while page := await store.consent_page(DEALER, after, limit=10):
        seen.extend(address for address, _ in page)
        after = page[-1][0]
    assert seen == sorted([f"c{n:03d}@customer.test" for n in range(25)] + ["john@customer.test"])
    (only,) = await store.consent_page(DEALER, "j", limit=10)
    assert only[0] == "john@customer.test" and only[1].preferences


async def test_a_large_batch_is_one_call(store: Storage) -> None:
    events = [ev(address=f"bulk{n}@customer.test", ref=str(n)) for n in range(5000)]
    assert await store.record_consent(events, now=T0) == 5000
    found = await store.consent_records(
        DEALER, [f"bulk{n}@customer.test" for n in range(0, 5000, 7)]
    )
    assert all(len(r.events) == 1 for r in found.values())


# -- issue 17: new kinds, the ledger, the refusals ------------------------------------------


@pytest.mark.parametrize(
    "kind",
    [Interaction.SALE_PARTS, Interaction.OTHER_TRANSACTION, Interaction.EMAIL_OPEN,
     Interaction.EMAIL_CLICK],
)  # fmt: skip
async def test_the_new_interaction_kinds_are_stored(store: Storage, kind: Interaction) -> None:
    assert await store.record_consent([ev(kind, date(2025, 6, 1))], now=T0) == 1
    (stored,) = (await store.consent_records(DEALER, ["john@customer.test"]))[
        "john@customer.test"
    ].events
    assert stored.kind is kind


def copy(n: int, rcpt: str) -> NewMessage:
    return NewMessage(
        id=MessageId(f"sub{n:04d}.1"),
        dealer_id=DEALER,
        mail_from="sales@example-motors.test",
        rcpt=rcpt,
        data=b"Subject: offer\r\n\r\nhello\r\n",
        received_at=T0,
    )


def entry(message: NewMessage, at: datetime, **kw: Any) -> LedgerEntry:
    base: dict[str, Any] = {
        "message_id": message.id, "submission_id": message.id.split(".")[0],
        "dealer_id": DEALER, "recipient": message.rcpt.lower(), "at": at,
        "category": "commercial", "topic": "dealer-marketing", "rules": "CASL implied-consent",
        "law": "CASL", "preset": "casl", "time_zone": "America/Toronto", "basis": "event",
        "reason": "within the CASL implied-consent window", "event_kind": "sale-finance",
        "event_on": date(2021, 4, 1), "last_payment": date(2025, 3, 1), "ref": "D-1",
        "source": "dms", "proof": "", "window": "2 years", "window_ends": date(2027, 3, 1),
    }  # fmt: skip
    base.update(kw)
    return LedgerEntry(**base)


async def test_the_ledger_is_written_with_the_messages_and_paged(store: Storage) -> None:
    messages = [copy(n, f"c{n % 3}@customer.test") for n in range(7)]
    entries = [entry(m, T0 + timedelta(seconds=n)) for n, m in enumerate(messages)]
    withdrew = "the recipient withdrew consent on 2025-06-01"
    refusal = ConsentRefusal(
        DEALER, "Lapsed@customer.test", "sub0000", "no-opt-in", "reject", withdrew, T0, True, "d.1"
    )
    writes = ConsentWrites(tuple(entries), (refusal,))
    assert await store.enqueue_claimed(messages, [], [], writes)
    assert (await store.get(messages[0].id)) is not None
    got = await store.consent_ledger(DEALER, "C1@customer.test")
    assert [e.message_id for e in got] == [messages[1].id, messages[4].id]
    assert got[0] == entries[1]
    seen: list[LedgerEntry] = []
    after = None
    while page := await store.consent_ledger(DEALER, after=after, limit=3):
        seen.extend(page)
        after = (page[-1].at, page[-1].message_id)
    assert seen == entries
    period = await store.consent_ledger(DEALER, since=T0 + timedelta(seconds=2),
                                        until=T0 + timedelta(seconds=4))  # fmt: skip
    assert [e.message_id for e in period] == [messages[2].id, messages[3].id]
    assert await store.consent_ledger(OTHER) == []
    assert await store.consent_refusals(DEALER) == [refusal]
    assert await store.consent_refusals(DEALER, since=T0 + timedelta(seconds=1)) == []


async def test_a_refused_batch_stores_no_ledger_entry(store: Storage) -> None:
    message = copy(1, "c1@customer.test")
    assert await store.enqueue_claimed([message], [], [], ConsentWrites((entry(message, T0),)))
    # The same message id again: the batch is refused as a whole, its ledger entry with it.
    other = entry(copy(2, "c2@customer.test"), T0)
    with pytest.raises(StorageError):
        await store.enqueue_claimed([message], [], [], ConsentWrites((other,)))
    assert [e.message_id for e in await store.consent_ledger(DEALER)] == [message.id]


async def test_withdrawals_and_the_sync_position(store: Storage) -> None:
    gone = ev(Interaction.WITHDRAWN, date(2025, 6, 1), address="w@customer.test", source="api")
    await store.record_consent([ev(), gone], now=T0)
    (found,) = await store.consent_withdrawals(DEALER)
    assert found == (T0, gone)
    assert await store.consent_withdrawals(DEALER, T0) == []
    assert await store.consent_sync_state(DEALER) == (0, None)
    await store.set_consent_sync_state(DEALER, 7, T0, 3, "", T0)
    await store.set_consent_sync_state(DEALER, 7, T0, 0, "HTTP 500", T0)
    assert await store.consent_sync_state(DEALER) == (7, T0)
    assert await store.consent_sync_state(OTHER) == (0, None)


async def test_erasure_leaves_only_the_keyed_hash_and_keeps_the_person_suppressed(
    store: Storage,
) -> None:
    ann = "ann@customer.test"
    await store.record_consent([ev(address=ann)], [pref(True)], now=T0)
    message = copy(1, ann)
    assert await store.enqueue_claimed(
        [message], [], [], ConsentWrites((entry(message, T0),), (
            ConsentRefusal(DEALER, "Ann@customer.test", "s1", "no-opt-in", "reject", "x", T0, True),
        ))
    )  # fmt: skip
    await store.add_suppression(Suppression(DEALER, ann, "spam complaint", "report 1", T0))
    await store.add_suppression(Suppression(OTHER, ann, "spam complaint", "report 2", T0))
    done = await store.erase_consent(DEALER, "Ann@Customer.test", "k" * 32, T0, "ops", "req 9")
    assert done["consent_events"] == 1 and done["consent_ledger"] == 1
    assert done["suppressions"] == 1
    record = (await store.consent_records(DEALER, [ann]))[ann]
    assert record == ConsentRecord()
    john = (await store.consent_records(DEALER, ["john@customer.test"]))["john@customer.test"]
    assert len(john.preferences) == 1  # someone else's record is left alone
    assert await store.consent_ledger(DEALER, ann) == []
    assert [e.recipient for e in await store.consent_ledger(DEALER)] == ["erased:" + "k" * 32]
    assert [r.recipient for r in await store.consent_refusals(DEALER)] == ["erased:" + "k" * 32]
    assert await store.find_suppression(DEALER, ann, T0) is None
    kept = await store.find_suppression(DEALER, "erased:" + "k" * 32, T0)
    assert kept is not None and kept.reason == "spam complaint"
    assert await store.find_suppression(OTHER, ann, T0) is not None  # another dealer's list
    assert await store.consent_erased(DEALER, "k" * 32)
    assert not await store.consent_erased(OTHER, "k" * 32)
    # Someone with no suppression gets one; erasing twice changes nothing more.
    await store.erase_consent(DEALER, "bob@customer.test", "b" * 32, T0, "ops", "req 10")
    added = await store.find_suppression(DEALER, "erased:" + "b" * 32, T0)
    assert added is not None and "Art. 17" in added.reason
    again = await store.erase_consent(DEALER, "bob@customer.test", "b" * 32, T0, "ops", "req 10")
    assert sum(again.values()) == 0
