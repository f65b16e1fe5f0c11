"""Recipient domains at RCPT, against a DNS server on loopback (never the internet).

A domain that cannot receive mail (NXDOMAIN, neither MX nor address records, null MX) is
refused with 550 5.1.2 and a suggestion for a typo of a common provider; answers are
cached; a DNS server that does not answer lets the mail through and is counted.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from tests.dnsserver import DnsServer
from tests.integration.conftest import Harness, dot_stuff, message

MakeHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        server.add("customers.example", "MX", "10 mx.customers.example.")
        server.add("mx.customers.example", "A", "192.0.2.25")
        server.add("a-only.example", "A", "192.0.2.26")
        server.add("v6-only.example", "AAAA", "2001:db8::26")
        server.add("parked.example", "MX", "0 .")
        server.add("parked.example", "A", "192.0.2.27")  # a web site, but no mail (RFC 7505)
        server.add("txt-only.example", "TXT", '"v=spf1 -all"')
        yield server


def counter(h: Harness, result: str) -> float:
    value = h.gateway.metrics.registry.get_sample_value(
        "mailgate_recipient_domain_checks_total", {"result": result}
    )
    return value or 0.0


async def test_unroutable_domains_are_refused_with_a_suggestion(
    make_harness: MakeHarness, dns_server: DnsServer
) -> None:
    h = await make_harness(dns={"nameservers": [f"127.0.0.1:{dns_server.port}"]})
    client = await h.client()
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        refused = {}
        for rcpt in (
            "joe@gmial.com",  # NXDOMAIN on this server, and a typo of gmail.com
            "ann@parked.example",
            "bob@txt-only.example",
        ):
            reply = await client.cmd(f"RCPT TO:<{rcpt}>")
            refused[rcpt] = reply
        for rcpt in ("amy@customers.example", "al@a-only.example", "vi@v6-only.example"):
            assert (await client.cmd(f"RCPT TO:<{rcpt}>")).code == 250, rcpt
        assert (await client.data(dot_stuff(message()))).code == 250
    finally:
        await client.close()
    for reply in refused.values():
        assert (reply.code, reply.enhanced) == (550, "5.1.2"), reply
    assert "does not exist; did you mean gmail.com?" in refused["joe@gmial.com"].text
    assert "null MX" in refused["ann@parked.example"].text
    assert "no mail server" in refused["bob@txt-only.example"].text
    await h.wait_delivered(3)  # one copy per recipient
    assert sorted(r for m in h.sink.messages for r in m.rcpt_tos) == [
        "al@a-only.example", "amy@customers.example", "vi@v6-only.example",
    ]  # fmt: skip
    assert counter(h, "nxdomain") == 1 and counter(h, "null-mx") == 1
    assert counter(h, "no-mail-host") == 1 and counter(h, "ok") == 3


async def test_answers_are_cached(make_harness: MakeHarness, dns_server: DnsServer) -> None:
    h = await make_harness(dns={"nameservers": [f"127.0.0.1:{dns_server.port}"]})
    client = await h.client()
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        for n in range(5):
            assert (await client.cmd(f"RCPT TO:<c{n}@customers.example>")).code == 250
            assert (await client.cmd(f"RCPT TO:<c{n}@gmial.com>")).code == 550
    finally:
        await client.close()
    asked = [(name, rdtype) for name, rdtype, _proto in dns_server.queries]
    assert asked.count(("customers.example.", "MX")) == 1
    assert asked.count(("gmial.com.", "MX")) == 1


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A UDP port that takes queries and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


async def test_dns_timeout_fails_open_quickly(make_harness: MakeHarness, silent_port: int) -> None:
    h = await make_harness(dns={"nameservers": [f"127.0.0.1:{silent_port}"], "timeout": "0.3s"})
    client = await h.client()
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        started = time.monotonic()
        assert (await client.cmd("RCPT TO:<x@unknown.example>")).code == 250
        assert time.monotonic() - started < 2.0
        assert (await client.data(dot_stuff(message()))).code == 250
    finally:
        await client.close()
    await h.wait_delivered(1)
    assert counter(h, "timeout") == 1


async def test_default_is_off_without_nameservers(make_harness: MakeHarness) -> None:
    h = await make_harness()
    assert h.gateway.resolver is None  # no [dns]: the harness never asks the system resolver


async def test_switch_off(make_harness: MakeHarness, dns_server: DnsServer) -> None:
    off = await make_harness(
        dns={"nameservers": [f"127.0.0.1:{dns_server.port}"], "validate_recipients": False}
    )
    assert off.gateway.resolver is None
    client = await off.client()
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        assert (await client.cmd("RCPT TO:<joe@gmial.com>")).code == 250
    finally:
        await client.close()
    await asyncio.sleep(0)
    assert dns_server.queries == []
