"""Connections that stall or break mid-transaction (reliability A7, G3, G4)."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl

from tests.abuse.conftest import (
    PASSWORD,
    SENDER,
    MakeHarness,
    Recorder,
    check_invariants,
    message,
)
from tests.smtpclient import RawSmtp, insecure_context


def _tls_close_mid_data(port: int) -> list[bytes]:
    """Blocking client: half a message over TLS, close_notify, then cleartext ``.`` and more."""
    seen: list[bytes] = []
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    plain = raw.makefile("rb")

    def reply(f: object) -> bytes:
        assert hasattr(f, "readline")
        out = b""
        while True:
            line: bytes = f.readline()
            out += line
            if not line or line[3:4] != b"-":
                seen.append(out)
                return out

    reply(plain)
    raw.sendall(b"EHLO crm.test\r\n")
    reply(plain)
    raw.sendall(b"STARTTLS\r\n")
    assert reply(plain).startswith(b"220")
    tls = insecure_context().wrap_socket(raw, server_hostname="mailgate.test")
    f = tls.makefile("rb")
    token = base64.b64encode(f"\0example-crm\0{PASSWORD}".encode())
    for line in (
        b"EHLO crm.test",
        b"AUTH PLAIN " + token,
        f"MAIL FROM:<{SENDER}>".encode(),
        b"RCPT TO:<halfway@example.org>",
        b"DATA",
    ):
        tls.sendall(line + b"\r\n")
        reply(f)
    tls.sendall(message(to="halfway@example.org")[:120])
    try:
        back = tls.unwrap()  # sends close_notify
    except (ssl.SSLError, OSError):
        back = raw
    try:
        back.sendall(b"\r\n.\r\nMAIL FROM:<x@example-motors.test>\r\n")
        back.settimeout(5)
        while chunk := back.recv(4096):
            seen.append(chunk)
    except (OSError, ssl.SSLError):
        pass
    back.close()
    return seen


async def drip(
    client: RawSmtp, payload: bytes, interval: float, give_up_after: float | None = None
) -> bool:
    """Send ``payload`` a byte every ``interval`` s; True once the gateway cut the session."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for byte in payload:
        try:
            await client.send(bytes([byte]))
        except (ConnectionError, OSError):
            return True
        if client.reader.at_eof():
            return True
        await asyncio.sleep(interval)
        if give_up_after is not None and loop.time() - started > give_up_after:
            break
    return False


async def test_a7_tls_close_mid_data_discards_the_partial_message(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    rec = Recorder(h)
    seen = await asyncio.to_thread(_tls_close_mid_data, h.port)
    assert not any(b"queued as" in s for s in seen), seen
    await asyncio.sleep(0.5)
    assert [m for m in await h.gateway.storage.list_messages() if not m.system] == []
    assert h.sink.messages == []
    await check_invariants(h, rec)


async def test_g3_idle_connections_are_closed_at_the_idle_timeout(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(submission={"idle_timeout": "1s", "max_connections_per_ip": 100})
    rec = Recorder(h)
    idle = [await rec.connect(login=False) for _ in range(40)]
    await idle[0].cmd("EHLO crm.test")
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def closed(client: RawSmtp) -> float:
        while await asyncio.wait_for(client.reader.read(4096), 10):
            pass
        return loop.time() - started

    times = await asyncio.gather(*(closed(c) for c in idle))
    assert max(times) < 4, times
    await check_invariants(h, rec)


async def test_g4_drip_inside_data_is_cut_by_the_data_deadline(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(submission={"data_timeout": "2s", "idle_timeout": "5s"})
    rec = Recorder(h)
    client = await rec.connect()
    assert (await client.cmd(f"MAIL FROM:<{SENDER}>")).code == 250
    assert (await client.cmd("RCPT TO:<drip@example.org>")).code == 250
    assert (await client.cmd("DATA")).code == 354
    loop = asyncio.get_running_loop()
    started = loop.time()
    cut = await drip(client, message(to="drip@example.org"), 0.25, give_up_after=8)
    if not cut:
        data = await asyncio.wait_for(client.reader.read(4096), 5)
        cut = not data or data.startswith(b"421")
    assert cut, "a drip inside DATA outlived the DATA deadline"
    assert loop.time() - started < 5
    await asyncio.sleep(0.3)
    assert [m for m in await h.gateway.storage.list_messages() if not m.system] == []
    await check_invariants(h, rec)


async def test_g4_drip_inside_a_command_is_cut_by_the_idle_timeout(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(submission={"idle_timeout": "1s"})
    rec = Recorder(h)
    client = await rec.connect(login=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    cut = await drip(client, b"EHLO a-very-slow-client.example.org", 0.2)
    assert cut, "a drip inside a command outlived the idle timeout"
    assert loop.time() - started < 4
    await check_invariants(h, rec)
