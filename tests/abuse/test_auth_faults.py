"""Credential store outage, password spray and mail loops (reliability C4, C6, B7)."""

from __future__ import annotations

import pytest

from gateway.errors import StorageUnavailable
from gateway.types import Credential
from tests.abuse.conftest import (
    PASSWORD,
    SENDER,
    MakeHarness,
    Recorder,
    check_invariants,
    dot_stuff,
    message,
)


async def test_c6_credential_store_down_answers_454_never_535(
    make_harness: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await make_harness()
    rec = Recorder(h)

    async def down(username: str) -> Credential | None:
        raise StorageUnavailable("connection refused")

    real = h.gateway.storage.get_credential
    monkeypatch.setattr(h.gateway.storage, "get_credential", down)
    replies = []
    for _ in range(3):
        client = await rec.connect(login=False)
        await client.cmd("EHLO crm.test")
        await client.starttls()
        await client.cmd("EHLO crm.test")
        replies.append(await client.auth_plain("example-crm", PASSWORD))
        await client.close()
    assert all((r.code, r.enhanced) == (454, "4.7.0") for r in replies), replies
    monkeypatch.setattr(h.gateway.storage, "get_credential", real)
    # Recovery needs no restart, and the outage did not count as failed logins.
    client = await rec.connect()
    await client.close()
    await check_invariants(h, rec)


async def test_c4_password_spray_over_many_users_is_throttled_per_ip(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(submission={"auth_failures_per_ip": 4})
    rec = Recorder(h)
    codes = []
    for n in range(6):
        client = await rec.connect(source="127.0.0.30", login=False)
        await client.cmd("EHLO sprayer.test")
        await client.starttls()
        await client.cmd("EHLO sprayer.test")
        codes.append((await client.auth_plain(f"user-{n}", "Winter2026!")).code)
        await client.close()
    assert codes == [535] * 4 + [421] * 2, codes
    # The sprayer's address stays throttled even with the right password.
    late = await rec.connect(source="127.0.0.30", login=False)
    seen = [late.banner]
    try:
        seen.append(await late.cmd("EHLO sprayer.test"))
        seen.append(await late.starttls())
        seen.append(await late.cmd("EHLO sprayer.test"))
        seen.append(await late.auth_plain("example-crm", PASSWORD))
    except (ConnectionError, OSError, AttributeError):
        pass  # closed by the server after its 421
    codes_late = [r.code for r in seen if r is not None]
    assert 421 in codes_late and 235 not in codes_late, seen
    # …and the dealer elsewhere is not locked out.
    crm = await rec.connect(source="127.0.0.31")
    await crm.close()
    await check_invariants(h, rec)


async def test_b7_mail_loop_is_refused_by_hop_count(make_harness: MakeHarness) -> None:
    h = await make_harness()
    rec = Recorder(h)
    client = await rec.connect()
    hops = "".join(
        f"Received: from hop{n}.example by hop{n + 1}.example; Mon, 05 Jan 2026 09:00:00 +0000\r\n"
        for n in range(60)
    )
    assert (await client.cmd(f"MAIL FROM:<{SENDER}>")).code == 250
    assert (await client.cmd("RCPT TO:<loop@example.org>")).code == 250
    payload = dot_stuff(hops.encode() + message(to="loop@example.org"))
    reply = await client.data(payload)
    assert (reply.code, reply.enhanced) == (554, "5.4.6"), reply
    assert [m for m in await h.gateway.storage.list_messages() if not m.system] == []
    await check_invariants(h, rec)
