"""Delivery end to end: real SQLite store, real aiosmtpd sinks on loopback, fake clock."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from email.message import Message
from pathlib import Path

import pytest
import trustme

from gateway.clock import FakeClock
from gateway.delivery.client import MaildirUpstream, SmtpUpstream, Upstream
from gateway.delivery.worker import DeliveryWorker
from gateway.metrics import Metrics
from gateway.settings import DeliverySettings, UpstreamSettings
from gateway.storage.sqlite import SqliteStorage
from gateway.types import (
    DealerId,
    MessageId,
    MessageState,
    NewMessage,
    QueuedMessage,
    RcptOutcome,
)
from tests.sinks import Sink

SENDER = "bounces@dealer.example"
RCPT = "jane@customer.example"
DATA = (
    b"From: Sales <sales@dealer.example>\r\n"
    b"To: jane@customer.example\r\n"
    b"Subject: Your car is ready\r\n"
    b"\r\n"
    b"Hello Jane,\r\n"
    b".a line that needs dot-stuffing\r\n"
    b"See you soon.\r\n"
)
SECOND = timedelta(seconds=1)
SETTINGS = DeliverySettings(
    workers=2,
    connect_timeout=SECOND,
    command_timeout=SECOND,
    data_timeout=SECOND,
    poll_interval=SECOND / 20,
    lease=60 * SECOND,
    first_retry=60 * SECOND,
    max_retry_interval=600 * SECOND,
    max_age=timedelta(days=1),
)


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    store = await SqliteStorage.open(str(tmp_path / "queue.db"))
    yield store
    await store.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    server = await Sink().start()
    yield server
    await server.stop()


def smtp_factory(port: int, **upstream: object) -> Callable[[], Upstream]:
    settings = UpstreamSettings.model_validate(
        {"host": "127.0.0.1", "port": port, "tls": "none"} | upstream
    )
    return lambda: SmtpUpstream(settings, SETTINGS, "gw.test")


class Harness:
    """A worker around a store and a clock, with helpers to wait for states."""

    def __init__(
        self,
        storage: SqliteStorage,
        clock: FakeClock,
        factory: Callable[[], Upstream],
        settings: DeliverySettings = SETTINGS,
        suspended: frozenset[DealerId] = frozenset(),
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.metrics = Metrics()
        self.worker = DeliveryWorker(
            storage,
            factory,
            clock,
            settings,
            "node-1",
            self.metrics,
            "gw.test",
            suspended=lambda: suspended,
            rng=lambda: 0.5,
        )

    async def enqueue(
        self,
        id: str = "m1",
        *,
        dealer: str = "d1",
        mail_from: str = SENDER,
        rcpt: str = RCPT,
        system: bool = False,
    ) -> None:
        message = NewMessage(
            id=MessageId(id),
            dealer_id=DealerId(dealer),
            mail_from=mail_from,
            rcpt=rcpt,
            data=DATA,
            received_at=self.clock.now(),
            system=system,
        )
        await self.storage.enqueue([message])
        self.worker.notify()

    async def get(self, id: str) -> QueuedMessage:
        message = await self.storage.get(MessageId(id))
        assert message is not None, id
        return message

    async def wait(
        self, id: str, check: Callable[[QueuedMessage], bool], timeout: float = 2.0
    ) -> QueuedMessage:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.storage.get(MessageId(id))
                if message is not None and check(message):
                    return message
                await asyncio.sleep(0.01)

    async def wait_state(self, id: str, state: MessageState) -> QueuedMessage:
        return await self.wait(id, lambda m: m.state is state)

    async def wait_deferred(self, id: str, attempts: int = 1) -> QueuedMessage:
        message = await self.wait(
            id, lambda m: m.state is MessageState.QUEUED and m.attempts >= attempts
        )
        assert message.next_attempt_at is not None
        assert message.next_attempt_at > self.clock.now()
        return message

    def retry_now(self, delta: timedelta = timedelta(minutes=15)) -> None:
        self.clock.advance(delta)
        self.worker.notify()

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return value or 0.0

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Harness]:
        task = asyncio.create_task(self.worker.run())
        try:
            yield self
        finally:
            await self.worker.stop(grace=1.0)
            await task


async def settle(seconds: float = 0.2) -> None:
    await asyncio.sleep(seconds)


# -- the happy path --------------------------------------------------------------------


async def test_delivers_one_message(storage: SqliteStorage, clock: FakeClock, sink: Sink) -> None:
    h = Harness(storage, clock, smtp_factory(sink.port))
    async with h.running():
        await h.enqueue()
        done = await h.wait_state("m1", MessageState.DELIVERED)
    assert done.attempts == 1
    assert "250" in done.last_error
    [got] = sink.messages
    assert (got.mail_from, got.rcpt_tos) == (SENDER, [RCPT])
    assert got.data == DATA  # byte-exact after the sink undid the dot-stuffing
    assert h.sample("mailgate_messages_relayed_total", dealer="d1") == 1
    assert h.sample("mailgate_delivery_attempts_total", outcome="delivered") == 1


async def test_connection_is_reused_across_messages(
    storage: SqliteStorage, clock: FakeClock, sink: Sink
) -> None:
    h = Harness(storage, clock, smtp_factory(sink.port), SETTINGS.model_copy(update={"workers": 1}))
    async with h.running():
        for i in range(5):
            await h.enqueue(f"m{i}")
        for i in range(5):
            await h.wait_state(f"m{i}", MessageState.DELIVERED)
    assert len(sink.messages) == 5
    assert sink.connections == 1


async def test_connection_replaced_after_reuse_limit(
    storage: SqliteStorage, clock: FakeClock, sink: Sink
) -> None:
    settings = SETTINGS.model_copy(update={"workers": 1, "connection_reuse": 2})
    upstream = UpstreamSettings(host="127.0.0.1", port=sink.port, tls="none")
    h = Harness(storage, clock, lambda: SmtpUpstream(upstream, settings, "gw.test"), settings)
    async with h.running():
        for i in range(5):
            await h.enqueue(f"m{i}")
        for i in range(5):
            await h.wait_state(f"m{i}", MessageState.DELIVERED)
    assert sink.connections == 3


async def test_connection_closed_by_server_while_idle_is_replaced_silently(
    storage: SqliteStorage, clock: FakeClock, sink: Sink
) -> None:
    h = Harness(storage, clock, smtp_factory(sink.port), SETTINGS.model_copy(update={"workers": 1}))
    async with h.running():
        await h.enqueue("m1")
        await h.wait_state("m1", MessageState.DELIVERED)
        sink.drop_sessions()
        await settle(0.05)
        await h.enqueue("m2")
        second = await h.wait_state("m2", MessageState.DELIVERED)
    assert second.attempts == 1  # not deferred because of the dead kept connection
    assert sink.connections == 2


async def test_idle_connection_is_not_reused(
    storage: SqliteStorage, clock: FakeClock, sink: Sink
) -> None:
    settings = SETTINGS.model_copy(
        update={"workers": 1, "idle_connection_timeout": timedelta(milliseconds=50)}
    )
    upstream = UpstreamSettings(host="127.0.0.1", port=sink.port, tls="none")
    h = Harness(storage, clock, lambda: SmtpUpstream(upstream, settings, "gw.test"), settings)
    async with h.running():
        await h.enqueue("m1")
        await h.wait_state("m1", MessageState.DELIVERED)
        await settle(0.1)
        await h.enqueue("m2")
        await h.wait_state("m2", MessageState.DELIVERED)
    assert sink.connections == 2


# -- temporary and permanent failures --------------------------------------------------


async def test_4xx_then_recovery_delivers_exactly_once(
    storage: SqliteStorage, clock: FakeClock, sink: Sink
) -> None:
    sink.handler.rcpt_replies[RCPT] = ["450 4.2.0 mailbox busy"]
    h = Harness(storage, clock, smtp_factory(sink.port))
    async with h.running():
        await h.enqueue()
        deferred = await h.wait_deferred("m1")
        assert deferred.last_error == "450 4.2.0 mailbox busy"
        # first_retry 60 s with jitter 0.5: due exactly one minute later, not before.
        assert deferred.next_attempt_at == clock.now() + timedelta(seconds=60)
        h.retry_now()
        done = await h.wait_state("m1", MessageState.DELIVERED)
    assert done.attempts == 2
    assert len(sink.messages) == 1
    assert sink.handler.rcpt_attempts[RCPT] == 2
    assert h.sample("mailgate_delivery_attempts_total", outcome="deferred") == 1


async def test_5xx_fails_and_sends_dsn_with_null_sender(
    storage: SqliteStorage, clock: FakeClock, sink: Sink
) -> None:
    sink.handler.rcpt_always[RCPT] = "550 5.1.1 no such user"
    h = Harness(storage, clock, smtp_factory(sink.port))
    async with h.running():
        await h.enqueue()
        failed = await h.wait_state("m1", MessageState.FAILED)
        dsn = await h.wait_state("m1.dsn", MessageState.DELIVERED)
    assert failed.last_error == "550 5.1.1 no such user"
    assert failed.attempts == 1
    assert dsn.system and dsn.mail_from == "" and dsn.rcpt == SENDER
    [bounce] = sink.messages
    assert bounce.mail_from == "<>" and bounce.rcpt_tos == [SENDER]  # MAIL FROM:<>
    report = email.message_from_bytes(bounce.data, policy=email.policy.compat32)
    assert report.get_content_type() == "multipart/report"
    status = report.get_payload(1)
    assert isinstance(status, Message)
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    per_rcpt = blocks[1]
    assert isinstance(per_rcpt, Message)
    assert per_rcpt["Final-Recipient"] == f"rfc822; {RCPT}"
    assert per_rcpt["Status"] == "5.1.1"
    assert h.sample("mailgate_dsn_generated_total") == 1


async def test_5xx_for_null_sender_sends_no_dsn(
    storage: SqliteStorage, clock: FakeClock, sink: Sink
) -> None:
    sink.handler.rcpt_always[RCPT] = "550 5.1.1 no such user"
    h = Harness(storage, clock, smtp_factory(sink.port))
    async with h.running():
        await h.enqueue(mail_from="")
        await h.wait_state("m1", MessageState.FAILED)
        await settle()
    assert await storage.get(MessageId("m1.dsn")) is None
    assert sink.messages == []
    assert h.sample("mailgate_dsn_generated_total") == 0


async def test_5xx_at_end_of_data_fails(
    storage: SqliteStorage, clock: FakeClock, sink: Sink
) -> None:
    sink.handler.data_replies = ["554 5.7.1 content rejected"]
    h = Harness(storage, clock, smtp_factory(sink.port))
    async with h.running():
        await h.enqueue(system=True)  # a system message: never a DSN about it
        failed = await h.wait_state("m1", MessageState.FAILED)
        await settle()
    assert failed.last_error == "554 5.7.1 content rejected"
    assert await storage.get(MessageId("m1.dsn")) is None


async def test_upstream_down_defers_then_delivers_once(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    sink = await Sink().start()
    await sink.stop()  # a port nobody listens on, which the sink takes back later
    h = Harness(storage, clock, smtp_factory(sink.port))
    try:
        async with h.running():
            await h.enqueue()
            deferred = await h.wait_deferred("m1")
            assert "4.4.1" in deferred.last_error
            await sink.start()
            h.retry_now()
            done = await h.wait_state("m1", MessageState.DELIVERED)
    finally:
        await sink.stop()
    assert done.attempts == 2
    assert len(sink.messages) == 1


async def test_dropped_connection_mid_data_defers_then_delivers(
    storage: SqliteStorage, clock: FakeClock, sink: Sink
) -> None:
    sink.handler.drop_data = 1
    h = Harness(storage, clock, smtp_factory(sink.port))
    async with h.running():
        await h.enqueue()
        deferred = await h.wait_deferred("m1")
        assert "4.4.2" in deferred.last_error
        h.retry_now()
        await h.wait_state("m1", MessageState.DELIVERED)
    assert len(sink.messages) == 1
    assert sink.connections == 2


async def test_slow_upstream_times_out_and_defers(
    storage: SqliteStorage, clock: FakeClock, sink: Sink
) -> None:
    sink.handler.delay = 1.5  # beyond data_timeout (1 s)
    h = Harness(storage, clock, smtp_factory(sink.port))
    async with h.running():
        await h.enqueue()
        deferred = await h.wait_deferred("m1")
    assert "4.4.2" in deferred.last_error


async def test_421_defers_and_reconnects(
    storage: SqliteStorage, clock: FakeClock, sink: Sink
) -> None:
    sink.handler.rcpt_replies[RCPT] = ["421 4.3.2 shutting down"]
    h = Harness(storage, clock, smtp_factory(sink.port))
    async with h.running():
        await h.enqueue()
        deferred = await h.wait_deferred("m1")
        assert deferred.last_error == "421 4.3.2 shutting down"
        h.retry_now()
        await h.wait_state("m1", MessageState.DELIVERED)
    assert sink.connections == 2


async def test_garbled_reply_defers_without_desync(
    storage: SqliteStorage, clock: FakeClock, sink: Sink
) -> None:
    # F12: a reply line without a numeric code.
    sink.handler.data_replies = ["hello there, not a reply"]
    h = Harness(storage, clock, smtp_factory(sink.port))
    async with h.running():
        await h.enqueue()
        deferred = await h.wait_deferred("m1")
        assert deferred.last_error.startswith("451 4.5.0")
        h.retry_now()
        await h.wait_state("m1", MessageState.DELIVERED)
    assert len(sink.messages) == 1


async def test_clock_step_back_does_not_starve_deferred_mail(
    storage: SqliteStorage, clock: FakeClock, sink: Sink
) -> None:
    # F18: deferred on the old clock, then the clock is corrected back by a day.
    sink.handler.rcpt_replies[RCPT] = ["450 4.2.0 mailbox busy"]
    h = Harness(storage, clock, smtp_factory(sink.port))
    async with h.running():
        await h.enqueue()
        await h.wait_deferred("m1")
        await settle(0.1)  # the feeder has polled at the old time
        clock.set(clock.now() - timedelta(days=1))
        h.worker.notify()
        done = await h.wait_state("m1", MessageState.DELIVERED)
    # Without the rescue it would have waited a whole day of the new clock.
    assert done.attempts == 2
    assert len(sink.messages) == 1


async def test_too_old_fails_with_dsn(storage: SqliteStorage, clock: FakeClock, sink: Sink) -> None:
    sink.handler.rcpt_always[RCPT] = "451 4.4.1 still unreachable"
    settings = SETTINGS.model_copy(update={"max_age": timedelta(hours=1)})
    upstream = UpstreamSettings(host="127.0.0.1", port=sink.port, tls="none")
    h = Harness(storage, clock, lambda: SmtpUpstream(upstream, settings, "gw.test"), settings)
    async with h.running():
        await h.enqueue()
        await h.wait_deferred("m1")
        h.retry_now(timedelta(hours=2))
        failed = await h.wait_state("m1", MessageState.FAILED)
        await h.wait_state("m1.dsn", MessageState.DELIVERED)
    assert failed.attempts == 2
    assert failed.last_error.startswith("554 5.4.7 delivery time expired")
    assert "451 4.4.1 still unreachable" in failed.last_error


# -- TLS -------------------------------------------------------------------------------


async def test_starttls_required_but_not_offered_defers_without_plaintext(
    storage: SqliteStorage, clock: FakeClock, sink: Sink
) -> None:
    h = Harness(storage, clock, smtp_factory(sink.port, tls="starttls"))
    async with h.running():
        await h.enqueue()
        deferred = await h.wait_deferred("m1")
    assert deferred.last_error.startswith("451 4.7.0")
    assert sink.handler.mail_commands == 0
    assert sink.messages == []


async def test_starttls_delivers_over_tls(
    storage: SqliteStorage, clock: FakeClock, tmp_path: Path
) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    sink = await Sink(tls_context=server_ctx).start()
    try:
        h = Harness(
            storage, clock, smtp_factory(sink.port, tls="starttls", tls_ca_file=str(ca_file))
        )
        async with h.running():
            await h.enqueue()
            await h.wait_state("m1", MessageState.DELIVERED)
    finally:
        await sink.stop()
    [got] = sink.messages
    assert got.tls
    assert got.data == DATA


async def test_untrusted_certificate_defers(storage: SqliteStorage, clock: FakeClock) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(server_ctx)  # a CA we do not trust
    sink = await Sink(tls_context=server_ctx).start()
    try:
        h = Harness(storage, clock, smtp_factory(sink.port, tls="starttls"))
        async with h.running():
            await h.enqueue()
            deferred = await h.wait_deferred("m1")
    finally:
        await sink.stop()
    assert deferred.last_error.startswith("451 4.7.0")
    assert sink.handler.mail_commands == 0


async def test_auth_with_password_file(
    storage: SqliteStorage, clock: FakeClock, tmp_path: Path
) -> None:
    secret = tmp_path / "relay.secret"
    secret.write_text("s3cret\n")
    sink = await Sink(credentials=("gateway", "s3cret")).start()
    try:
        factory = smtp_factory(sink.port, username="gateway", password_file=str(secret))
        h = Harness(storage, clock, factory)
        async with h.running():
            await h.enqueue()
            await h.wait_state("m1", MessageState.DELIVERED)
    finally:
        await sink.stop()
    assert sink.logins == ["gateway"]
    assert len(sink.messages) == 1


async def test_wrong_password_defers_instead_of_bouncing(
    storage: SqliteStorage, clock: FakeClock, tmp_path: Path
) -> None:
    secret = tmp_path / "relay.secret"
    secret.write_text("wrong")
    sink = await Sink(credentials=("gateway", "s3cret")).start()
    try:
        factory = smtp_factory(sink.port, username="gateway", password_file=str(secret))
        h = Harness(storage, clock, factory)
        async with h.running():
            await h.enqueue()
            deferred = await h.wait_deferred("m1")
    finally:
        await sink.stop()
    # Our credentials are wrong, not the message: never a bounce to the dealer.
    assert deferred.last_error.startswith("451 4.")
    assert sink.messages == [] and sink.logins == []
    assert await storage.get(MessageId("m1.dsn")) is None


# -- internal errors, suspension, local delivery --------------------------------------


class ExplodingUpstream:
    """An upstream double that fails the way a bug would."""

    async def send(self, mail_from: str, rcpt: str, data: bytes) -> RcptOutcome:
        raise RuntimeError("boom")

    async def close(self) -> None:
        pass


async def test_unexpected_exception_holds_the_message(
    storage: SqliteStorage, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(storage, clock, ExplodingUpstream)
    async with h.running():
        await h.enqueue("m1")
        await h.enqueue("m2")
        held = await h.wait_state("m1", MessageState.HELD)
        await h.wait_state("m2", MessageState.HELD)  # the pool survived the first one
    assert "RuntimeError: boom" in held.note
    assert h.sample("mailgate_internal_errors_total", component="delivery") == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.delivery"]
    assert any("m1" in line and "d1" in line for line in lines)


async def test_suspended_dealer_waits_while_system_mail_goes(
    storage: SqliteStorage, clock: FakeClock, sink: Sink
) -> None:
    h = Harness(storage, clock, smtp_factory(sink.port), suspended=frozenset({DealerId("d1")}))
    async with h.running():
        await h.enqueue("paused", dealer="d1")
        await h.enqueue("system", dealer="d1", mail_from="", system=True)
        await h.enqueue("other", dealer="d2")
        await h.wait_state("system", MessageState.DELIVERED)
        await h.wait_state("other", MessageState.DELIVERED)
        await settle()
    paused = await h.get("paused")
    assert paused.state is MessageState.QUEUED and paused.attempts == 0
    assert len(sink.messages) == 2


async def test_maildir_delivery_writes_exact_bytes(
    storage: SqliteStorage, clock: FakeClock, tmp_path: Path
) -> None:
    maildir = tmp_path / "outbox"
    h = Harness(storage, clock, lambda: MaildirUpstream(maildir))
    async with h.running():
        await h.enqueue()
        await h.wait_state("m1", MessageState.DELIVERED)
    [path] = list((maildir / "new").iterdir())
    assert list((maildir / "tmp").iterdir()) == []
    assert (maildir / "cur").is_dir()
    expected = f"Return-Path: <{SENDER}>\r\nDelivered-To: {RCPT}\r\n".encode() + DATA
    assert path.read_bytes() == expected


async def test_maildir_write_failure_defers(
    storage: SqliteStorage, clock: FakeClock, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the maildir should be")
    h = Harness(storage, clock, lambda: MaildirUpstream(blocker))
    async with h.running():
        await h.enqueue()
        deferred = await h.wait_deferred("m1")
    assert deferred.last_error.startswith("451 4.3.0")


async def test_stop_lets_in_flight_send_finish_and_leaves_no_lease(
    storage: SqliteStorage, clock: FakeClock, sink: Sink
) -> None:
    sink.handler.delay = 0.3
    settings = SETTINGS.model_copy(update={"workers": 1})
    upstream = UpstreamSettings(host="127.0.0.1", port=sink.port, tls="none")
    h = Harness(storage, clock, lambda: SmtpUpstream(upstream, settings, "gw.test"), settings)
    async with h.running():
        await h.enqueue("m1")
        await asyncio.sleep(0.1)  # m1 is in flight now
    done = await h.get("m1")
    assert done.state is MessageState.DELIVERED  # the grace period let it finish
    # Nothing is left leased: a fresh claim sees no stranded message.
    assert await storage.claim("node-2", 10, clock.now(), timedelta(minutes=1)) == []
