"""One-click unsubscribe (RFC 8058): the headers on commercial copies, the POST that
suppresses at once, the page a GET shows, and forged and replayed tokens.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from collections.abc import Awaitable, Callable

import pytest

from gateway.reputation.records import EventKind
from gateway.types import DealerId
from gateway.unsubscribe.links import POST_VALUE, UnsubscribeLinks, header_plan
from tests.integration.conftest import Harness, dot_stuff, message
from tests.smtpclient import RawSmtp

MakeHarness = Callable[..., Awaitable[Harness]]
DEALER = DealerId("example-motors")
BASE = "https://mailgate.test"


async def http(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: mailgate.test\r\nConnection: close\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status = int(raw.split(b" ", 2)[1])
    return status, raw.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")


async def one_click(h: Harness, token: str) -> tuple[int, str]:
    return await http(h.gateway.public_port, "POST", f"/u/{token}", POST_VALUE.encode())


async def harness(make_harness: MakeHarness) -> Harness:
    return await make_harness(
        unsubscribe={"base_url": BASE},
        inbound={"listen": "127.0.0.1:0", "report_addresses": ["fbl@mailgate.test"]},
    )


async def send(h: Harness, rcpts: list[str], extra: str = "") -> list[int]:
    client = await h.client()
    codes = []
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        accepted = 0
        for rcpt in rcpts:
            code = (await client.cmd(f"RCPT TO:<{rcpt}>")).code
            codes.append(code)
            accepted += code == 250
        if accepted:
            assert (await client.data(dot_stuff(message(extra=extra)))).code == 250
        else:
            await client.cmd("RSET")
    finally:
        await client.close()
    return codes


def token_of(data: bytes) -> str:
    headers = email.message_from_bytes(data, policy=email.policy.compat32)
    found = re.search(r"<https://mailgate\.test/u/([a-z2-7]+)>", headers["List-Unsubscribe"])
    assert found, headers["List-Unsubscribe"]
    return found.group(1)


async def test_commercial_copies_get_one_click_fields(make_harness: MakeHarness) -> None:
    h = await harness(make_harness)
    await send(h, ["ann@example.org", "bob@example.org"])
    await send(h, ["cy@example.org"], extra="X-Mailgate-Category: transactional\r\n")
    await h.wait_delivered(3)
    by_rcpt = {m.rcpt_tos[0]: email.message_from_bytes(m.data) for m in h.sink.messages}
    ann, bob = by_rcpt["ann@example.org"], by_rcpt["bob@example.org"]
    assert ann["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "<mailto:fbl@mailgate.test?subject=unsubscribe%20" in ann["List-Unsubscribe"]
    assert ann["List-Unsubscribe"] != bob["List-Unsubscribe"]  # one token per recipient
    assert by_rcpt["cy@example.org"]["List-Unsubscribe"] is None  # transactional: none


async def test_unsubscribe_then_send_is_refused(make_harness: MakeHarness) -> None:
    h = await harness(make_harness)
    await send(h, ["ann@example.org"])
    await h.wait_delivered(1)
    token = token_of(h.sink.messages[0].data)

    status, page = await http(h.gateway.public_port, "GET", f"/u/{token}")
    assert status == 200 and 'method="post"' in page
    assert await h.gateway.storage.find_suppression(DEALER, "ann@example.org",
                                                    h.gateway.clock.now()) is None  # fmt: skip

    status, page = await one_click(h, token)
    assert status == 200 and "Unsubscribed" in page
    # Commercial mail: ann passes RCPT (transactional mail may still reach her) and is
    # left out at DATA; bob's copy goes.
    assert await send(h, ["ann@example.org", "bob@example.org"]) == [250, 250]
    await h.wait_delivered(2)
    assert sorted(m.rcpt_tos[0] for m in h.sink.messages) == [
        "ann@example.org",  # the first message, before the unsubscribe
        "bob@example.org",
    ]
    # Ann alone, commercial: refused with the reason.
    client = await h.client()
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        assert (await client.cmd("RCPT TO:<ann@example.org>")).code == 250
        refused = await client.data(dot_stuff(message()))
    finally:
        await client.close()
    assert (refused.code, refused.enhanced) == (550, "5.7.1"), refused
    assert "unsubscribed" in refused.text
    # Transactional mail (a receipt) still reaches her.
    client = await h.client()
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        assert (await client.cmd("RCPT TO:<ann@example.org>")).code == 250
        receipt = message(subject="Your receipt", extra="X-Mailgate-Category: transactional\r\n")
        assert (await client.data(dot_stuff(receipt))).code == 250
    finally:
        await client.close()
    await h.wait_delivered(3)
    assert h.sink.messages[-1].rcpt_tos == ["ann@example.org"]
    entry = await h.gateway.storage.find_suppression(
        DEALER, "ann@example.org", h.gateway.clock.now()
    )
    assert entry is not None and entry.reason == "unsubscribe request"
    # Another dealer may still write to ann.
    rival = await h.client("rival-crm")
    try:
        assert (await rival.cmd("MAIL FROM:<sales@rival-motors.test>")).code == 250
        assert (await rival.cmd("RCPT TO:<ann@example.org>")).code == 250
    finally:
        await rival.close()

    # A second click is answered the same and records nothing more.
    assert (await one_click(h, token))[0] == 200
    entries = await h.gateway.storage.list_suppressions(DEALER)
    assert len(entries) == 1
    since = h.gateway.clock.now().replace(year=2000)
    events = await h.gateway.storage.recent_events(
        DEALER, frozenset({EventKind.UNSUBSCRIBE}), since
    )
    assert len(events) == 1


async def test_forged_tokens_change_nothing(make_harness: MakeHarness) -> None:
    h = await harness(make_harness)
    await send(h, ["ann@example.org"])
    await h.wait_delivered(1)
    token = token_of(h.sink.messages[0].data)
    other_key = UnsubscribeLinks(b"not the gateway's key", BASE)
    forged = [
        token[:-1] + ("a" if token[-1] != "a" else "b"),  # one character changed
        other_key.token(DEALER, "ann@example.org", "0123456789"),  # valid shape, wrong key
        other_key.token(DEALER, "bob@example.org", "0123456789"),
        "a" * 40,
        "not-base32!",
    ]
    for bad in forged:
        assert (await one_click(h, bad))[0] == 404, bad
        assert (await http(h.gateway.public_port, "GET", f"/u/{bad}"))[0] == 404
    assert await h.gateway.storage.list_suppressions(DEALER) == []


async def test_replay_after_the_suppression_is_lifted_does_not_resuppress(
    make_harness: MakeHarness,
) -> None:
    h = await harness(make_harness)
    await send(h, ["ann@example.org"])
    await h.wait_delivered(1)
    token = token_of(h.sink.messages[0].data)
    assert (await one_click(h, token))[0] == 200
    now = h.gateway.clock.now()
    assert await h.gateway.storage.lift_suppression(
        DEALER, "ann@example.org", "ops", "customer opted in again", now
    )
    assert (await one_click(h, token))[0] == 200
    assert await h.gateway.storage.find_suppression(DEALER, "ann@example.org", now) is None
    assert await send(h, ["ann@example.org"]) == [250]


async def test_crm_header_policy(make_harness: MakeHarness) -> None:
    h = await harness(make_harness)
    policy = h.gateway.settings.server.policies_dir / "dealers" / "rival-motors.toml"
    policy.write_text(policy.read_text() + '\n[unsubscribe]\nexisting = "replace"\n')
    h.gateway.reload_policies()
    crm = "List-Unsubscribe: <https://crm.example/unsub?id=42>\r\n"
    await send(h, ["keep@example.org"], extra=crm)  # example-motors: keep (the default)
    client = await h.client("rival-crm")
    try:
        assert (await client.cmd("MAIL FROM:<sales@rival-motors.test>")).code == 250
        assert (await client.cmd("RCPT TO:<replace@example.org>")).code == 250
        body = message(sender="sales@rival-motors.test", extra=crm)
        assert (await client.data(dot_stuff(body))).code == 250
    finally:
        await client.close()
    await h.wait_delivered(2)
    by_rcpt = {m.rcpt_tos[0]: email.message_from_bytes(m.data) for m in h.sink.messages}
    kept = by_rcpt["keep@example.org"]
    assert kept.get_all("List-Unsubscribe") == ["<https://crm.example/unsub?id=42>"]
    assert kept["List-Unsubscribe-Post"] is None
    replaced = by_rcpt["replace@example.org"]
    assert len(replaced.get_all("List-Unsubscribe") or []) == 1
    assert " ".join(replaced["List-Unsubscribe"].split()).startswith(f"<{BASE}/u/")
    assert replaced["List-Unsubscribe-Post"] == POST_VALUE


@pytest.mark.parametrize(
    ("existing", "mode", "expected"),
    [
        (None, "keep", "<ours>"),
        ("<https://crm/u>", "keep", None),
        ("<https://crm/u>", "replace", "<ours>"),
        ("<https://crm/u>", "add", "<ours>, <https://crm/u>"),
    ],
)
def test_header_plan(existing: str | None, mode: str, expected: str | None) -> None:
    plan = header_plan(existing, "<ours>", mode)  # type: ignore[arg-type]
    added = dict(plan.add)
    assert added.get("List-Unsubscribe") == expected
    assert ("List-Unsubscribe-Post" in added) == (expected is not None)


def test_tokens_round_trip_and_do_not_enumerate() -> None:
    links = UnsubscribeLinks(b"k" * 32, BASE)
    a = links.token(DEALER, "Ann@Example.org", "m1")
    b = links.token(DEALER, "ann@example.org", "m2")
    assert a != b and re.fullmatch("[a-z2-7]+", a)
    request = links.verify(a)
    assert request is not None and (request.dealer_id, request.recipient, request.message_id) == (
        DEALER, "ann@example.org", "m1",
    )  # fmt: skip
    assert links.verify(a.upper()) == request  # base32 is case-insensitive


async def test_mailto_unsubscribes_through_the_inbound_listener(make_harness: MakeHarness) -> None:
    h = await harness(make_harness)
    await send(h, ["ann@example.org"])
    await h.wait_delivered(1)
    token = token_of(h.sink.messages[0].data)
    client = await RawSmtp.connect("127.0.0.1", h.gateway.inbound_port)
    try:
        assert (await client.cmd("EHLO mail.example.org")).code == 250
        assert (await client.cmd("MAIL FROM:<ann@example.org>")).code == 250
        assert (await client.cmd("RCPT TO:<fbl@mailgate.test>")).code == 250
        body = (
            f"From: <ann@example.org>\r\nTo: <fbl@mailgate.test>\r\n"
            f"Subject: unsubscribe {token}\r\n\r\n\r\n"
        ).encode()
        assert (await client.data(dot_stuff(body))).code == 250
    finally:
        await client.close()
    entry = await h.gateway.storage.find_suppression(
        DEALER, "ann@example.org", h.gateway.clock.now()
    )
    assert entry is not None and entry.reason == "unsubscribe request"
