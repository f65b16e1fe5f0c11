"""A real gateway, in process, between a raw SMTP client and a loopback aiosmtpd sink."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.dkim.signing import Signer
from gateway.passwords import hash_password
from gateway.settings import Settings
from gateway.types import Credential, DealerId
from tests.shipped import copy_shipped
from tests.sinks import Sink
from tests.smtpclient import RawSmtp

PASSWORD = "correct horse battery"
RIVAL = """\
dealer_id = "rival-motors"
name = "Rival Motors"
auth_users = ["rival-crm"]
from_domains = ["rival-motors.test"]
contacts = ["gm@rival-motors.test"]
"""


def policies_dir(tmp_path: Path) -> Path:
    """The shipped policies plus a second dealer, in a directory the test owns."""
    target = copy_shipped(tmp_path / "policies")
    (target / "dealers" / "rival-motors.toml").write_text(RIVAL)
    return target


def make_settings(tmp_path: Path, sink_port: int | None, **sections: dict[str, Any]) -> Settings:
    data: dict[str, Any] = {
        "server": {
            "hostname": "mailgate.test",
            "data_dir": str(tmp_path / "var"),
            "policies_dir": str(policies_dir(tmp_path)),
            "log_level": "debug",
        },
        "submission": {"listen": "127.0.0.1:0", "idle_timeout": "10s"},
        "http": {"listen": "127.0.0.1:0"},
        "public": {"listen": "127.0.0.1:0"},
        "delivery": {
            "workers": 2,
            "poll_interval": "0.05s",
            "connect_timeout": "2s",
            "command_timeout": "5s",
            "data_timeout": "5s",
            "first_retry": "1s",
            "lease": "30s",
        },
    }
    if sink_port is not None:
        data["upstream"] = {"host": "127.0.0.1", "port": sink_port, "tls": "none"}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return Settings.model_validate(data)


@dataclass
class Harness:
    gateway: Gateway
    sink: Sink

    @property
    def port(self) -> int:
        return self.gateway.submission_port

    async def client(self, user: str = "example-crm", password: str = PASSWORD) -> RawSmtp:
        client = await RawSmtp.connect("127.0.0.1", self.port)
        await client.login(user, password)
        return client

    async def wait_delivered(self, count: int, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.sink.messages) < count:
            if loop.time() > deadline:
                raise AssertionError(
                    f"sink has {len(self.sink.messages)} messages, expected {count}"
                )
            await asyncio.sleep(0.02)


async def add_credentials(gateway: Gateway) -> None:
    now = datetime.now(UTC)
    for user, dealer in (("example-crm", "example-motors"), ("rival-crm", "rival-motors")):
        await gateway.storage.set_credential(
            Credential(user, DealerId(dealer), hash_password(PASSWORD, log_n=10), now)
        )


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    server = await Sink().start()
    yield server
    await server.stop()


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    def factory(sink_port: int | None, **sections: dict[str, Any]) -> Settings:
        return make_settings(tmp_path, sink_port, **sections)

    return factory


@pytest.fixture
async def make_harness(
    sink: Sink, settings_factory: Callable[..., Settings]
) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    """Start a gateway with extra settings sections (and optionally a given signer)."""
    started: list[Gateway] = []

    async def make(signer: Signer | None = None, **sections: dict[str, Any]) -> Harness:
        gateway = await Gateway.build(settings_factory(sink.port, **sections), signer=signer)
        await add_credentials(gateway)
        await gateway.start()
        started.append(gateway)
        return Harness(gateway, sink)

    yield make
    for gateway in started:
        await gateway.stop()


@pytest.fixture
async def harness(make_harness: Callable[..., Awaitable[Harness]]) -> Harness:
    return await make_harness()


def message(
    *,
    sender: str = "sales@example-motors.test",
    to: str = "customer@example.org",
    subject: str = "Your test drive",
    body: str = "Hello,\r\n\r\nYour test drive is booked.\r\n",
    extra: str = "",
) -> bytes:
    """A small, valid message with CRLF line endings (without the final dot)."""
    return (
        f"From: Example Motors <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        f"Date: Mon, 05 Jan 2026 09:00:00 +0000\r\nMessage-ID: <t1@example-motors.test>\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n{extra}\r\n{body}"
    ).encode()


def dot_stuff(data: bytes) -> bytes:
    """RFC 5321 §4.5.2 transparency, and the end-of-data marker."""
    lines = data.split(b"\r\n")
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    out = b"\r\n".join(stuffed)
    if not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out + b".\r\n"
