"""The shipped haproxy config in front of a real gateway on loopback (Debian's haproxy).

deploy/haproxy/haproxy.cfg is run as shipped, with only its addresses rewritten to
loopback ports: both its servers point at one in-process gateway that trusts PROXY headers
from 127.0.0.1, the address haproxy connects from. CRMs reach haproxy from addresses of
their own (Linux routes all of 127.0.0.0/8 to the loopback interface), so the test sees
whether the gateway's per-IP limits apply to each CRM or to haproxy. A second haproxy,
the same config but connecting from 127.0.0.3, is a balancer the gateway does not trust.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from tests.deploy.tools import need
from tests.integration.conftest import PASSWORD, add_credentials, dot_stuff, make_settings, message
from tests.sinks import Sink
from tests.smtpclient import RawSmtp

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CRM_A, CRM_B = "127.0.0.10", "127.0.0.11"
UNTRUSTED_BALANCER = "127.0.0.3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def shipped_config(gateway: Gateway, submission: int, reports: int, source: str = "") -> str:
    """deploy/haproxy/haproxy.cfg with loopback addresses for the compose names."""
    text = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    for old, new in {
        "bind :2525": f"bind 127.0.0.1:{submission}",
        "bind :2526": f"bind 127.0.0.1:{reports}",
        "mailgate-a:2525": f"127.0.0.1:{gateway.submission_port}",
        "mailgate-b:2525": f"127.0.0.1:{gateway.submission_port}",
        "mailgate-a:2526": f"127.0.0.1:{gateway.inbound_port}",
        "mailgate-b:2526": f"127.0.0.1:{gateway.inbound_port}",
        "check port 8025": f"check port {gateway.http_port}",
    }.items():
        assert old in text, old
        text = text.replace(old, new)
    if source:
        text = text.replace("defaults\n", f"defaults\n  source {source}\n", 1)
    return text


@contextlib.contextmanager
def haproxy(config: str, tmp_path: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    binary = need("haproxy", "haproxy")
    path = tmp_path / f"haproxy-{port}.cfg"
    path.write_text(config)
    check = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    log = (tmp_path / f"haproxy-{port}.log").open("wb")
    proc = subprocess.Popen([binary, "-db", "-f", str(path)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, (tmp_path / f"haproxy-{port}.log").read_text()
            assert time.monotonic() < deadline, "haproxy did not start listening"
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    server = await Sink().start()
    yield server
    await server.stop()


@pytest.fixture
async def gateway(tmp_path: Path, sink: Sink) -> AsyncIterator[Gateway]:
    need("haproxy", "haproxy")
    sections: dict[str, dict[str, Any]] = {
        "submission": {
            "proxy_protocol_from": ["127.0.0.1"],
            "max_connections_per_ip": 2,
            "auth_failures_per_ip": 2,
        },
        "inbound": {
            "listen": "127.0.0.1:0",
            "report_addresses": ["fbl@mailgate.test"],
            "proxy_protocol_from": ["127.0.0.1"],
            "max_connections_per_ip": 1,
        },
    }
    gw = await Gateway.build(make_settings(tmp_path, sink.port, **sections))
    await add_credentials(gw)
    await gw.start()
    yield gw
    await gw.stop()


async def connect(port: int, source: str) -> RawSmtp:
    return await RawSmtp.connect("127.0.0.1", port, source=source)


async def tls_auth(client: RawSmtp, password: str) -> tuple[int, str]:
    assert (await client.cmd("EHLO crm.test")).code == 250
    assert (await client.starttls()).code == 220
    assert (await client.cmd("EHLO crm.test")).code == 250
    reply = await client.auth_plain("example-crm", password)
    return reply.code, reply.enhanced


async def test_per_ip_limits_apply_to_each_crm_behind_haproxy(
    gateway: Gateway, sink: Sink, tmp_path: Path
) -> None:
    submission, reports = free_port(), free_port()
    with haproxy(shipped_config(gateway, submission, reports), tmp_path, submission):
        # Connections: CRM A uses up its two; CRM B, behind the same haproxy, is not affected.
        a1, a2 = await connect(submission, CRM_A), await connect(submission, CRM_A)
        a3 = await connect(submission, CRM_A)
        assert a3.banner is not None and (a3.banner.code, a3.banner.enhanced) == (421, "4.7.0")
        assert "from your address" in a3.banner.text
        b1 = await connect(submission, CRM_B)
        assert b1.banner is not None and b1.banner.code == 220
        for client in (a1, a2, a3, b1):
            await client.close()

        # Failed logins: A is throttled after two; B logs in and sends.
        for _ in range(2):
            client = await connect(submission, CRM_A)
            assert await tls_auth(client, "wrong password") == (535, "5.7.8")
            await client.close()
        client = await connect(submission, CRM_A)
        assert await tls_auth(client, PASSWORD) == (421, "4.7.0")
        await client.close()
        client = await connect(submission, CRM_B)
        assert await tls_auth(client, PASSWORD) == (235, "2.7.0")
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        assert (await client.cmd("RCPT TO:<customer@example.org>")).code == 250
        assert (await client.data(dot_stuff(message()))).code == 250
        await client.close()

        # The report listener behind haproxy: one connection per sender address.
        r1 = await connect(reports, CRM_A)
        r2 = await connect(reports, CRM_A)
        r3 = await connect(reports, CRM_B)
        assert r1.banner is not None and r1.banner.code == 220
        assert r2.banner is not None and r2.banner.code == 421
        assert r3.banner is not None and r3.banner.code == 220
        for client in (r1, r2, r3):
            await client.close()

    deadline = time.monotonic() + 10
    while not sink.messages:
        assert time.monotonic() < deadline, "the message was not delivered"
        await asyncio.sleep(0.05)
    assert f"([{CRM_B}])".encode() in sink.messages[0].data


async def test_haproxy_from_an_untrusted_address_is_refused(
    gateway: Gateway, tmp_path: Path
) -> None:
    submission, reports = free_port(), free_port()
    config = shipped_config(gateway, submission, reports, source=UNTRUSTED_BALANCER)
    with haproxy(config, tmp_path, submission):
        for port in (submission, reports):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(CRM_A, 0))
            lines = []
            while line := await asyncio.wait_for(reader.readline(), 10):
                lines.append(line.decode("ascii", "replace").rstrip("\r\n"))
            writer.close()
            assert lines and lines[-1].startswith("554 5.7.1 A PROXY protocol header"), lines
    sample = gateway.metrics.registry.get_sample_value
    for listener in ("submission", "inbound"):
        labels = {"listener": listener, "reason": "proxy-untrusted"}
        # At least the test's own connection (the start-up probe through haproxy may add one).
        assert (sample("mailgate_smtp_connections_refused_total", labels) or 0) >= 1, listener


async def test_a_crm_sending_its_own_header_past_haproxy_is_refused(
    gateway: Gateway, tmp_path: Path
) -> None:
    # haproxy's header comes first; the CRM's forged one is then a command, refused.
    submission, reports = free_port(), free_port()
    with haproxy(shipped_config(gateway, submission, reports), tmp_path, submission):
        client = await connect(reports, CRM_A)
        reply = await client.cmd("PROXY TCP4 203.0.113.9 127.0.0.1 40000 25")
        assert (reply.code, reply.enhanced) == (554, "5.7.1")
        await client.close()
