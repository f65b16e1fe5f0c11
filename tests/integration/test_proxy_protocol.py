"""PROXY protocol v1/v2 on the SMTP listeners, from trusted balancer addresses only.

Raw sockets on loopback stand in for the balancer and for direct clients: Linux routes all
of 127.0.0.0/8 to the loopback interface, so a client can bind 127.0.0.2 (the trusted
balancer here) or 127.0.0.5 (anyone else). tests/deploy/test_haproxy.py does the same
through a real haproxy.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest
from aiosmtpd.proxy_protocol import V2_SIGNATURE

from tests.integration.conftest import PASSWORD, Harness, dot_stuff, message
from tests.smtpclient import RawSmtp

MakeHarness = Callable[..., Awaitable[Harness]]
BALANCER = "127.0.0.2"
OUTSIDER = "127.0.0.5"
INBOUND = {
    "listen": "127.0.0.1:0",
    "report_addresses": ["fbl@mailgate.test"],
    "proxy_protocol_from": [BALANCER],
    "max_connections_per_ip": 1,
}


def v1(client: str, port: int = 40000) -> bytes:
    return f"PROXY TCP4 {client} 127.0.0.1 {port} 2525\r\n".encode()


def v2(client: str, port: int = 40000, command: int = 0x1) -> bytes:
    """A PROXY v2 header: version 2, ``command`` (1 PROXY, 0 LOCAL), TCP over IPv4."""
    body = socket.inet_aton(client) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, 2525)
    return V2_SIGNATURE + bytes([0x20 | command, 0x11]) + struct.pack("!H", len(body)) + body


async def through(port: int, header: bytes, source: str = BALANCER) -> RawSmtp:
    """A connection from ``source`` that opens with ``header``, up to the banner."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(header)
    await writer.drain()
    client = RawSmtp(reader, writer)
    client.banner = await client.read_reply()
    return client


async def closed_after(reader: asyncio.StreamReader) -> list[str]:
    """Every line until the server closes the connection."""
    lines = []
    while line := await asyncio.wait_for(reader.readline(), 10):
        lines.append(line.decode("ascii", "replace").rstrip("\r\n"))
    return lines


async def tls_auth(client: RawSmtp, password: str) -> tuple[int, str]:
    """EHLO, STARTTLS, EHLO, AUTH PLAIN as example-crm: the AUTH reply."""
    assert (await client.cmd("EHLO crm.test")).code == 250
    assert (await client.starttls()).code == 220
    assert (await client.cmd("EHLO crm.test")).code == 250
    reply = await client.auth_plain("example-crm", password)
    return reply.code, reply.enhanced


async def proxy_harness(make_harness: MakeHarness, **submission: object) -> Harness:
    return await make_harness(
        submission={"proxy_protocol_from": ["127.0.0.2/32"], **submission}, inbound=INBOUND
    )


@pytest.mark.parametrize("header", [v1, v2], ids=["v1", "v2"])
async def test_per_ip_cap_counts_the_client_the_header_names(
    make_harness: MakeHarness, header: Callable[[str], bytes]
) -> None:
    h = await proxy_harness(make_harness, max_connections_per_ip=1)
    first = await through(h.port, header("198.51.100.7"))
    assert first.banner is not None and first.banner.code == 220
    # Same balancer, another client: admitted. The same client again: over its cap.
    other = await through(h.port, header("198.51.100.8"))
    assert other.banner is not None and other.banner.code == 220
    again = await through(h.port, header("198.51.100.7"))
    assert again.banner is not None and again.banner.code == 421
    assert again.banner.enhanced == "4.7.0" and "from your address" in again.banner.text
    for client in (first, other, again):
        await client.close()


async def test_auth_failures_count_per_client_also_after_starttls(
    make_harness: MakeHarness,
) -> None:
    h = await proxy_harness(make_harness, auth_failures_per_ip=2)
    for _ in range(2):
        client = await through(h.port, v2("198.51.100.7"))
        assert await tls_auth(client, "wrong password") == (535, "5.7.8")
        await client.close()
    blocked = await through(h.port, v2("198.51.100.7"))
    assert await tls_auth(blocked, PASSWORD) == (421, "4.7.0")
    await blocked.close()
    # Another CRM behind the same balancer logs in and its mail says where it came from.
    fine = await through(h.port, v2("198.51.100.8"))
    await fine.login("example-crm", PASSWORD)
    assert (await fine.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
    assert (await fine.cmd("RCPT TO:<customer@example.org>")).code == 250
    assert (await fine.data(dot_stuff(message()))).code == 250
    await fine.close()
    await h.wait_delivered(1)
    assert b"([198.51.100.8])" in h.sink.messages[0].data


async def test_health_check_header_keeps_the_balancers_address(
    make_harness: MakeHarness,
) -> None:
    h = await proxy_harness(make_harness, max_connections_per_ip=1)
    local = await through(h.port, v2("0.0.0.0", command=0x0))  # LOCAL: the balancer itself
    unknown = await through(h.port, b"PROXY UNKNOWN\r\n")
    assert local.banner is not None and local.banner.code == 220
    assert unknown.banner is not None and unknown.banner.code == 421  # both are 127.0.0.2
    await local.close()
    await unknown.close()


@pytest.mark.parametrize(
    "opening",
    [b"EHLO crm.test\r\n", b"PROXY TCP4 1.2.3.4\r\n", v2("198.51.100.7")[:-3] + b"\r\n"],
    ids=["no-header", "malformed-v1", "truncated-v2"],
)
async def test_a_balancer_without_a_valid_header_is_dropped_unanswered(
    make_harness: MakeHarness, opening: bytes
) -> None:
    h = await proxy_harness(make_harness)
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port, local_addr=(BALANCER, 0))
    writer.write(opening)
    await writer.drain()
    if opening.startswith(V2_SIGNATURE):
        writer.write_eof()  # the rest of the header never comes
    assert await closed_after(reader) == []
    writer.close()
    sample = h.gateway.metrics.registry.get_sample_value
    labels = {"listener": "submission", "reason": "proxy-invalid"}
    assert sample("mailgate_smtp_connections_refused_total", labels) == 1


@pytest.mark.parametrize("header", [v1, v2], ids=["v1", "v2"])
@pytest.mark.parametrize("listener", ["submission", "inbound"])
async def test_a_header_from_anyone_else_is_refused(
    make_harness: MakeHarness, header: Callable[[str], bytes], listener: str
) -> None:
    h = await proxy_harness(make_harness)
    port = h.port if listener == "submission" else h.gateway.inbound_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(OUTSIDER, 0))
    writer.write(header("198.51.100.7"))
    await writer.drain()
    lines = await closed_after(reader)
    writer.close()
    assert lines[-1].startswith("554 5.7.1 A PROXY protocol header is accepted only"), lines
    sample = h.gateway.metrics.registry.get_sample_value
    labels = {"listener": listener, "reason": "proxy-untrusted"}
    assert sample("mailgate_smtp_connections_refused_total", labels) == 1


async def test_a_listener_without_trusted_balancers_refuses_every_header(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    writer.write(v1("198.51.100.7"))
    await writer.drain()
    assert (await closed_after(reader))[-1].startswith("554 5.7.1 ")
    writer.close()
    # A direct client that speaks SMTP is served as before.
    client = await RawSmtp.connect("127.0.0.1", h.port, source=OUTSIDER)
    assert client.banner is not None and client.banner.code == 220
    await client.login("example-crm", PASSWORD)
    await client.close()


async def test_a_second_header_later_in_the_session_is_refused(
    make_harness: MakeHarness,
) -> None:
    h = await proxy_harness(make_harness)
    client = await through(h.gateway.inbound_port, v1("198.51.100.7"))
    assert (await client.cmd("EHLO mx.example")).code == 250
    reply = await client.cmd("PROXY TCP4 203.0.113.1 127.0.0.1 1 25")
    assert reply.code == 554 and reply.enhanced == "5.7.1"
    assert await closed_after(client.reader) == []
