"""relay_networks: a dealer's system that speaks neither STARTTLS nor AUTH, on loopback.

The example dealer binds 127.0.0.1/32; a plain SMTP session from 127.0.0.1 (no STARTTLS,
no AUTH) is then the dealer's, and everything else holds as for an AUTH session: the
sender must be one of the dealer's domains, the checks run, the copy is DKIM-signed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import dkim
import pytest

from gateway.app import Gateway
from gateway.dkim.keys import generate_key, public_record, write_private_key
from gateway.settings import Settings
from tests.integration.conftest import Harness, add_credentials, dot_stuff, message
from tests.sinks import Sink
from tests.smtpclient import RawSmtp

KEY = generate_key("rsa")
DEALER = Path("dealers") / "example-motors.toml"
DKIM = '\n[[dkim]]\ndomain = "example-motors.test"\nselector = "mg1"\nkey_file = "keys/mg1.pem"\n'
BOUND = 'relay_networks = ["127.0.0.1/32"]\n'

MakeGate = Callable[[str], Awaitable[Harness]]


@pytest.fixture
async def make_gate(
    sink: Sink, settings_factory: Callable[..., Settings]
) -> AsyncIterator[MakeGate]:
    """A gateway whose example dealer file gets ``top`` (top-level keys) and a DKIM key."""
    started: list[Gateway] = []

    async def make(top: str) -> Harness:
        settings = settings_factory(sink.port)
        policies = settings.server.policies_dir
        write_private_key(policies / "keys" / "mg1.pem", KEY)
        dealer_file = policies / DEALER
        dealer_file.write_text(top + dealer_file.read_text() + DKIM)
        gateway = await Gateway.build(settings)
        await add_credentials(gateway)
        await gateway.start()
        started.append(gateway)
        return Harness(gateway, sink)

    yield make
    for gateway in started:
        await gateway.stop()


def verified(data: bytes) -> bool:
    record = public_record(KEY).encode()
    return bool(dkim.verify(data, dnsfunc=lambda name, timeout=5: record))


async def plain_session(port: int) -> RawSmtp:
    client = await RawSmtp.connect("127.0.0.1", port)
    assert (await client.cmd("EHLO dms.example-motors.test")).code == 250
    return client


async def test_a_bound_network_sends_without_starttls_or_auth(
    make_gate: MakeGate, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.smtp")
    gate = await make_gate(BOUND)
    client = await plain_session(gate.port)
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        assert (await client.cmd("RCPT TO:<customer@example.org>")).code == 250
        reply = await client.data(dot_stuff(message()))
        assert reply.code == 250 and reply.text.startswith("2.0.0 queued as "), reply
        # The same message again: the duplicate check runs for network sessions too.
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        assert (await client.cmd("RCPT TO:<customer@example.org>")).code == 250
        again = await client.data(dot_stuff(message()))
        assert again.code == 250 and "not sent" in again.text, again
    finally:
        await client.close()
    await gate.wait_delivered(1)
    delivered = gate.sink.messages[0]
    assert delivered.rcpt_tos == ["customer@example.org"]
    assert verified(delivered.data)
    # RFC 3848: neither STARTTLS nor AUTH, so plain ESMTP (the field may be folded).
    received = re.search(rb"Received: from (\S+) \(\[127\.0\.0\.1\]\)\s+by mailgate\.test"
                         rb"\s+\(Mailgate\)\s+with (\S+)\s+id ", delivered.data)  # fmt: skip
    assert received is not None, delivered.data.partition(b"\r\n\r\n")[0].decode()
    assert received.groups() == (b"dms.example-motors.test", b"ESMTP")
    logged = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("relay-network session peer=127.0.0.1 dealer=example-motors")
        and "network=127.0.0.1/32" in m
        for m in logged
    ), logged


async def test_sender_domains_still_bind_a_network_session(make_gate: MakeGate) -> None:
    gate = await make_gate(BOUND)
    client = await plain_session(gate.port)
    try:
        refused = await client.cmd("MAIL FROM:<ceo@rival-motors.test>")
        assert (refused.code, refused.enhanced) == (553, "5.7.1"), refused
    finally:
        await client.close()


async def test_a_network_session_may_still_authenticate(make_gate: MakeGate) -> None:
    gate = await make_gate(BOUND)
    client = await gate.client("rival-crm")  # STARTTLS + AUTH as the other dealer
    try:
        assert (await client.cmd("MAIL FROM:<sales@rival-motors.test>")).code == 250
    finally:
        await client.close()


async def test_without_relay_networks_starttls_and_auth_are_required(
    make_gate: MakeGate,
) -> None:
    gate = await make_gate("")
    client = await plain_session(gate.port)
    try:
        refused = await client.cmd("MAIL FROM:<sales@example-motors.test>")
        assert (refused.code, refused.enhanced) == (530, "5.7.0"), refused
        assert (await client.starttls()).code == 220
        assert (await client.cmd("EHLO dms.example-motors.test")).code == 250
        refused = await client.cmd("MAIL FROM:<sales@example-motors.test>")
        assert (refused.code, refused.enhanced) == (530, "5.7.0"), refused
    finally:
        await client.close()


async def test_a_reload_that_removes_the_network_ends_the_binding(make_gate: MakeGate) -> None:
    gate = await make_gate(BOUND)
    client = await plain_session(gate.port)
    try:
        dealer_file = gate.gateway.settings.server.policies_dir / DEALER
        dealer_file.write_text(dealer_file.read_text().replace(BOUND, ""))
        gate.gateway.reload_policies()
        refused = await client.cmd("MAIL FROM:<sales@example-motors.test>")
        assert (refused.code, refused.enhanced) == (530, "5.7.0"), refused
    finally:
        await client.close()
    later = await plain_session(gate.port)
    try:
        refused = await later.cmd("MAIL FROM:<sales@example-motors.test>")
        assert refused.code == 530, refused
    finally:
        await later.close()
