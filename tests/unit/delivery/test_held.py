"""Expired holds: the DSN goes to the person who sent the message, never to ourselves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.delivery.held import DsnSender, expire_held
from gateway.metrics import Metrics
from gateway.storage.base import open_storage
from gateway.tracking import RefCodec
from gateway.types import DealerId, MessageId, MessageState, NewMessage

NOW = datetime(2026, 1, 20, 9, 0, tzinfo=UTC)
DATA = (
    b"From: Example Motors <sales@example-motors.test>\r\nTo: jane@customer.example\r\n"
    b"Subject: Invoice\r\n\r\nsee attached\r\n"
)


def held(n: int, mail_from: str) -> NewMessage:
    return NewMessage(
        id=MessageId(f"06h0j8rx817hcby{n}.1"),
        dealer_id=DealerId("example-motors"),
        mail_from=mail_from,
        rcpt="jane@customer.example",
        data=DATA,
        received_at=NOW - timedelta(days=15),
        state=MessageState.HELD,
        findings=("dangerous-attachment",),
        note="setup.exe is a program",
    )


async def test_dsn_recipients_for_plain_verp_and_null_senders(tmp_path: Path) -> None:
    storage = await open_storage(f"sqlite:///{tmp_path / 'q.db'}")
    verp = RefCodec(b"k" * 32).verp_address(
        "06h0j8rx817hcby2.1", "example-motors", "jane@customer.example", "bounces.mailgate.test"
    )
    try:
        await storage.enqueue([held(1, "crm@example-motors.test"), held(2, verp), held(3, "")])
        metrics = Metrics()
        count = await expire_held(
            storage, NOW, timedelta(days=14), metrics, dsn=DsnSender("mailgate.test")
        )
        assert count == 3
        assert await storage.list_messages(state=MessageState.HELD) == []
        plain = await storage.get(MessageId("06h0j8rx817hcby1.1.dsn"))
        assert plain is not None and plain.rcpt == "crm@example-motors.test"
        # Under VERP the return path is ours: the sender named in the message is told.
        via_verp = await storage.get(MessageId("06h0j8rx817hcby2.1.dsn"))
        assert via_verp is not None and via_verp.rcpt == "sales@example-motors.test"
        assert b"\r\nTo: <sales@example-motors.test>\r\n" in via_verp.data
        assert await storage.get(MessageId("06h0j8rx817hcby3.1.dsn")) is None  # null sender
        assert metrics.dsn_sent._value.get() == 2
        for dsn in (plain, via_verp):
            assert dsn.system and dsn.mail_from == ""
            assert b"Status: 5.7.1" in dsn.data and b"dangerous-attachment" in dsn.data
    finally:
        await storage.close()
