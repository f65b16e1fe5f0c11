"""The admin API against a running gateway: every endpoint, auth, and bad input (4xx only)."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.admin.api import ENDPOINTS, AdminApi
from gateway.types import MessageId, MessageState
from tests.integration.admin import Answer, add_token, call, store_message
from tests.integration.conftest import Harness

MakeHarness = Callable[..., Awaitable[Harness]]
DEALER = "example-motors"


@pytest.fixture
async def api(harness: Harness) -> tuple[Harness, str]:
    return harness, add_token(harness.gateway)


def concrete(path: str) -> str:
    return path.replace("{dealer}", DEALER).replace("{id}", "no-such-message")


async def test_openapi_describes_exactly_the_served_endpoints(api: tuple[Harness, str]) -> None:
    h, _token = api
    answer = await call(h.gateway, "GET", "/api/openapi.json")  # no token needed
    assert answer.status == 200
    spec = answer.body
    assert spec["openapi"].startswith("3.1")
    described = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert described == {(e.method, e.path) for e in ENDPOINTS}
    for path, ops in spec["paths"].items():
        for op in ops.values():
            assert {"401", "403", "503"} <= set(op["responses"]), path
            for ref in _refs(op):
                name = ref.rsplit("/", 1)[-1]
                assert name in spec["components"]["schemas"], (path, name)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        for value in node.values():
            found += _refs(value)
        return found
    if isinstance(node, list):
        return [r for item in node for r in _refs(item)]
    return []


async def test_every_endpoint_needs_a_valid_token(api: tuple[Harness, str]) -> None:
    h, token = api
    for ep in ENDPOINTS:
        for header in (None, "mgt_wrong-token-value", token[:-2] + "xx"):
            answer = await call(h.gateway, ep.method, concrete(ep.path), token=header)
            assert answer.status == 401, (ep.method, ep.path, header)
            assert answer.body["error"]
            assert answer.headers["www-authenticate"].startswith("Bearer")
    # unknown paths too, so the API's shape is not probed without a token
    assert (await call(h.gateway, "GET", "/api/nothing-here")).status == 401
    assert (await call(h.gateway, "GET", "/api/nothing-here", token=token)).status == 404


async def test_remote_clients_are_refused_unless_allowed(api: tuple[Harness, str]) -> None:
    h, token = api
    assert h.gateway.admin is not None
    from gateway.admin.tokens import TokenCheck

    tokens = TokenCheck(h.gateway.settings.admin_token_file)
    for allow, expected in ((False, 403), (True, 200)):
        app = AdminApi(h.gateway.admin, tokens, allow_remote=allow)
        status = await _asgi_get(app, "/api/health", token, client=("192.0.2.7", 40000))
        assert status == expected


async def _asgi_get(app: AdminApi, path: str, token: str, client: tuple[str, int]) -> int:
    from starlette.applications import Starlette

    asgi = Starlette(routes=app.routes())
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "headers": [(b"authorization", f"Bearer {token}".encode())], "client": client,
        "server": ("127.0.0.1", 8025), "root_path": "",
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    await asgi(scope, receive, send)
    return int(sent[0]["status"])


async def test_health_and_dealers(api: tuple[Harness, str]) -> None:
    h, token = api
    health = await call(h.gateway, "GET", "/api/health", token=token)
    assert health.status == 200 and health.body["ok"] is True
    assert health.body["storage"] == "ok" and health.body["dealers"] >= 2

    listing = await call(h.gateway, "GET", "/api/dealers", token=token)
    ids = [d["id"] for d in listing.body["dealers"]]
    assert DEALER in ids and "rival-motors" in ids
    dealer = next(d for d in listing.body["dealers"] if d["id"] == DEALER)
    assert dealer["state"] == "active" and dealer["suspended"] is False
    assert (
        dealer["rates"]["complaints"]["suspend_rate"] > dealer["rates"]["complaints"]["warn_rate"]
    )
    assert dealer["rates"]["complaints"]["level"] == "low-volume"

    shown = await call(h.gateway, "GET", f"/api/dealers/{DEALER}", token=token)
    assert shown.status == 200
    assert "example-crm" in shown.body["policy"]["auth_users"]
    assert shown.body["history"] == []
    missing = await call(h.gateway, "GET", "/api/dealers/nobody", token=token)
    assert missing.status == 404 and "nobody" in missing.body["error"]


async def test_suspend_resume_and_events(api: tuple[Harness, str]) -> None:
    h, token = api
    path = f"/api/dealers/{DEALER}"
    no_reason = await call(h.gateway, "POST", f"{path}/suspend", token=token, body={})
    assert no_reason.status == 400 and "reason" in no_reason.body["error"]
    blank = await call(h.gateway, "POST", f"{path}/suspend", token=token, body={"reason": "  "})
    assert blank.status == 400
    bad_for = await call(
        h.gateway, "POST", f"{path}/suspend", token=token, body={"reason": "x", "for": "soon"}
    )
    assert bad_for.status == 400 and "duration" in bad_for.body["error"]

    done = await call(
        h.gateway, "POST", f"{path}/suspend", token=token,
        body={"reason": "spam run from the spring campaign", "for": "24h", "by": "alice"},
    )  # fmt: skip
    assert done.status == 200, done.body
    assert done.body["state"] == "suspended" and done.body["actor"] == "admin"
    assert done.body["by"] == "alice (token ops)" and done.body["expires_at"]
    again = await call(h.gateway, "POST", f"{path}/suspend", token=token, body={"reason": "x"})
    assert again.status == 409

    shown = await call(h.gateway, "GET", path, token=token)
    assert shown.body["state"] == "suspended" and shown.body["suspended"] is True
    assert shown.body["reason"] == "spam run from the spring campaign"
    # the running gateway refuses the dealer's mail at once
    client = await h.client()
    try:
        reply = await client.cmd("MAIL FROM:<sales@example-motors.test>")
        assert reply.code >= 400
    finally:
        await client.close()

    resumed = await call(
        h.gateway, "POST", f"{path}/resume", token=token, body={"reason": "cleaned the list"}
    )
    assert resumed.status == 200 and resumed.body["state"] == "resumed"
    twice = await call(h.gateway, "POST", f"{path}/resume", token=token, body={"reason": "x"})
    assert twice.status == 409

    events = await call(h.gateway, "GET", f"{path}/events?limit=10", token=token)
    assert events.status == 200
    assert [t["state"] for t in events.body["transitions"]] == ["resumed", "suspended"]
    assert events.body["events"] == []
    filtered = await call(h.gateway, "GET", f"{path}/events?kind=complaint", token=token)
    assert filtered.status == 200
    daily = await call(h.gateway, "GET", f"{path}/daily?days=7", token=token)
    assert daily.status == 200 and isinstance(daily.body["days"], list)
    link = await call(h.gateway, "GET", f"{path}/status-link", token=token)
    assert link.status == 200 and link.body["url"].rsplit("/", 2)[-2] == DEALER


async def test_suppressions_search_add_lift_import_export(api: tuple[Harness, str]) -> None:
    h, token = api
    added = await call(
        h.gateway, "POST", "/api/suppressions", token=token,
        body={"list": DEALER, "addresses": ["A@x.example", "<b@x.example>", "not an address"],
              "reason": "asked by phone"},
    )  # fmt: skip
    assert added.status == 200
    assert [r["result"] for r in added.body["results"]] == ["suppressed", "suppressed", "invalid"]
    glob = await call(
        h.gateway, "POST", "/api/suppressions", token=token,
        body={"list": "*", "addresses": ["g@y.example"], "reason": "legal"},
    )  # fmt: skip
    assert glob.body["results"][0]["result"] == "suppressed"

    # the running gateway now refuses the suppressed recipient at RCPT
    client = await h.client()
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        assert (await client.cmd("RCPT TO:<a@x.example>")).code == 550
    finally:
        await client.close()

    found = await call(h.gateway, "GET", "/api/suppressions?q=x.example", token=token)
    assert sorted(e["address"] for e in found.body["entries"]) == ["a@x.example", "b@x.example"]
    only_global = await call(h.gateway, "GET", "/api/suppressions?list=*", token=token)
    assert [e["address"] for e in only_global.body["entries"]] == ["g@y.example"]
    paged = await call(h.gateway, "GET", "/api/suppressions?limit=1", token=token)
    assert len(paged.body["entries"]) == 1 and paged.body["next_after"] is not None
    nxt = await call(
        h.gateway, "GET", f"/api/suppressions?limit=1&after={paged.body['next_after']}",
        token=token,
    )  # fmt: skip
    assert nxt.body["entries"][0]["id"] > paged.body["entries"][0]["id"]

    lifted = await call(
        h.gateway, "DELETE", "/api/suppressions", token=token,
        body={"list": DEALER, "address": "a@x.example", "reason": "opted in again"},
    )  # fmt: skip
    assert lifted.status == 200 and lifted.body["lifted"] is True
    gone = await call(
        h.gateway, "DELETE", "/api/suppressions", token=token,
        body={"list": DEALER, "address": "a@x.example", "reason": "again"},
    )  # fmt: skip
    assert gone.status == 404
    with_lifted = await call(h.gateway, "GET", "/api/suppressions?all=true&q=a@x", token=token)
    assert with_lifted.body["entries"][0]["lift_reason"] == "opted in again"

    imported = await call(
        h.gateway, "POST", "/api/suppressions/import", token=token,
        body={"list": DEALER, "reason": "crm export", "source": "crm.csv",
              "entries": [{"address": f"i{n}@imp.example"} for n in range(50)]
              + [{"address": "b@x.example"}, {"address": "junk"}]},
    )  # fmt: skip
    assert imported.body == {"added": 50, "skipped": 1, "invalid": 1}
    csv_body = b"address,reason\nc1@csv.example,bounced\nc2@csv.example,\nnope,\n"
    from_csv = await call(
        h.gateway, "POST", f"/api/suppressions/import?list={DEALER}&reason=old+list",
        token=token, raw=csv_body, content_type="text/csv",
    )  # fmt: skip
    assert from_csv.status == 200 and from_csv.body == {"added": 2, "skipped": 0, "invalid": 1}

    export = await call(
        h.gateway, "GET", f"/api/suppressions/export?list={DEALER}&all=true", token=token
    )
    assert export.status == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.raw.decode())))
    assert len(rows) == 2 + 50 + 2
    reasons = {r["address"]: r["reason"] for r in rows}
    assert reasons["c1@csv.example"] == "bounced" and reasons["c2@csv.example"] == "old list"
    assert all(r["list"] == DEALER for r in rows)


async def test_held_messages(api: tuple[Harness, str]) -> None:
    h, token = api
    gw = h.gateway
    held = await store_message(
        gw, "held.api.1", MessageState.HELD, findings=("stray-attachment",), note="held by policy"
    )
    other = await store_message(gw, "held.api.2", MessageState.HELD, rcpt="two@example.org")
    listing = await call(gw, "GET", "/api/held", token=token)
    assert {m["id"] for m in listing.body["messages"]} == {held, other}
    by_dealer = await call(gw, "GET", "/api/held?dealer=rival-motors", token=token)
    assert by_dealer.body["messages"] == []

    shown = await call(gw, "GET", f"/api/held/{held}", token=token)
    assert shown.status == 200 and shown.body["state"] == "held"
    explained = shown.body["findings_explained"][0]
    assert explained["code"] == "stray-attachment" and explained["advice"]
    assert any(line.startswith("Subject:") for line in shown.body["header"])

    released = await call(gw, "POST", f"/api/held/{held}/release", token=token)
    assert released.status == 200 and released.body["state"] == "queued"
    await h.wait_delivered(1)
    assert h.sink.messages[0].rcpt_tos == ["customer@example.org"]
    # no longer held: release and show say so
    assert (await call(gw, "POST", f"/api/held/{held}/release", token=token)).status == 404
    assert (await call(gw, "GET", f"/api/held/{held}", token=token)).status == 404

    no_reason = await call(gw, "DELETE", f"/api/held/{other}", token=token, body={})
    assert no_reason.status == 400
    deleted = await call(gw, "DELETE", f"/api/held/{other}", token=token, body={"reason": "junk"})
    assert deleted.status == 200 and deleted.body == {"id": other, "deleted": True}
    assert await gw.storage.get(other) is None


async def test_queue(api: tuple[Harness, str]) -> None:
    h, token = api
    gw = h.gateway
    h.sink.handler.rcpt_replies["gone@example.org"] = ["550 5.1.1 no such user"]
    failed = await store_message(
        gw, "queue.api.failed", MessageState.QUEUED, rcpt="gone@example.org"
    )
    gw.worker.notify()
    await wait_state(h, failed, MessageState.FAILED)
    held = await store_message(gw, "queue.api.held", MessageState.HELD)
    listing = await call(gw, "GET", "/api/queue?state=failed", token=token)
    assert [m["id"] for m in listing.body["messages"]] == [failed]
    assert (await call(gw, "GET", "/api/queue?state=lost", token=token)).status == 400
    shown = await call(gw, "GET", f"/api/queue/{failed}", token=token)
    assert shown.status == 200 and shown.body["state"] == "failed"

    conflict = await call(gw, "POST", f"/api/queue/{held}/retry", token=token)
    assert conflict.status == 409 and "release" in conflict.body["error"]
    retried = await call(gw, "POST", f"/api/queue/{failed}/retry", token=token)
    assert retried.status == 200 and retried.body["state"] == "queued"
    await wait_state(h, failed, MessageState.DELIVERED)
    assert any(m.rcpt_tos == ["gone@example.org"] for m in h.sink.messages)
    again = await call(gw, "POST", f"/api/queue/{failed}/retry", token=token)
    assert again.status == 409

    no_reason = await call(gw, "DELETE", f"/api/queue/{held}", token=token)
    assert no_reason.status == 400
    deleted = await call(
        gw, "DELETE", f"/api/queue/{held}", token=token, body={"reason": "customer asked"}
    )
    assert deleted.status == 200
    assert (await call(gw, "GET", f"/api/queue/{held}", token=token)).status == 404


async def wait_state(h: Harness, message_id: str, state: MessageState) -> None:
    for _ in range(200):
        stored = await h.gateway.storage.get(MessageId(message_id))
        if stored is not None and stored.state is state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{message_id} never reached {state}")


async def test_policy_reload_validates_then_swaps(api: tuple[Harness, str]) -> None:
    h, token = api
    gw = h.gateway
    dealers = gw.settings.server.policies_dir / "dealers"
    (dealers / "third-motors.toml").write_text(
        'dealer_id = "third-motors"\nname = "Third"\nauth_users = ["third-crm"]\n'
        'from_domains = ["third-motors.test"]\ncontacts = ["gm@third-motors.test"]\n'
    )
    ok = await call(gw, "POST", "/api/policies/reload", token=token)
    assert ok.status == 200 and ok.body["ok"] is True and "third-motors" in ok.body["dealers"]
    (dealers / "broken-motors.toml").write_text('dealer_id = "someone-else"\nbogus = 1\n')
    refused = await call(gw, "POST", "/api/policies/reload", token=token)
    assert refused.status == 422 and refused.body["ok"] is False
    assert refused.body["problems"] and "broken-motors" not in refused.body["dealers"]
    assert gw.policies.current.dealer("third-motors") is not None
    assert gw.policies.current.dealer("broken-motors") is None


BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int]] = [
    ("GET", "/api/dealers/example-motors?history=-1", {}, 400),
    ("GET", "/api/dealers/example-motors?history=abc", {}, 400),
    ("GET", "/api/dealers/example-motors/events?since=yesterday", {}, 400),
    ("GET", "/api/dealers/example-motors/events?kind=praise", {}, 400),
    ("GET", "/api/dealers/example-motors/events?limit=100000", {}, 400),
    ("GET", "/api/dealers/example-motors/daily?days=0", {}, 400),
    ("GET", "/api/suppressions?all=maybe", {}, 400),
    ("GET", "/api/suppressions?list=nobody", {}, 404),
    ("GET", "/api/suppressions/export?list=nobody", {}, 404),
    ("GET", "/api/held?dealer=nobody", {}, 404),
    ("GET", "/api/queue?limit=0", {}, 400),
    ("POST", "/api/dealers/nobody/suspend", {"body": {"reason": "x"}}, 404),
    ("POST", "/api/dealers/example-motors/suspend", {"raw": b"{not json"}, 400),
    ("POST", "/api/dealers/example-motors/suspend", {"raw": b"[1, 2]"}, 400),
    ("POST", "/api/dealers/example-motors/suspend", {"body": {"reason": 5}}, 400),
    ("POST", "/api/dealers/example-motors/suspend", {"body": {"reason": "x", "extra": 1}}, 400),
    ("POST", "/api/dealers/example-motors/suspend", {"body": {"reason": "x", "for": "-5h"}}, 400),
    ("POST", "/api/dealers/example-motors/suspend",
     {"raw": b"reason=x", "content_type": "application/x-www-form-urlencoded"}, 415),
    ("POST", "/api/suppressions", {"body": {"list": "*", "addresses": [], "reason": "r"}}, 400),
    ("POST", "/api/suppressions", {"body": {"list": "*", "addresses": "a@b.example"}}, 400),
    ("POST", "/api/suppressions",
     {"body": {"list": "*", "addresses": ["a@b.example"], "reason": "r",
               "expires_at": "2001-01-01T00:00:00Z"}}, 400),
    ("POST", "/api/suppressions/import", {"raw": b"\xff\xfe", "content_type": "text/csv"}, 400),
    ("POST", "/api/suppressions/import?list=*",
     {"raw": b"address,resaon\na@b.example,x\n", "content_type": "text/csv"}, 400),
    ("POST", "/api/suppressions/import", {"body": {"list": "*", "entries": "x"}}, 400),
    ("DELETE", "/api/suppressions", {"body": {"list": "*", "address": "x", "reason": "r"}}, 400),
    ("POST", "/api/held/nothing/release", {}, 404),
    ("POST", "/api/held/nothing/release", {"body": {"unexpected": True}}, 400),
    ("DELETE", "/api/queue/nothing", {"body": {"reason": "r"}}, 404),
    ("GET", "/api/queue/%00", {}, 404),
    ("PUT", "/api/dealers", {}, 405),
    ("DELETE", "/api/policies/reload", {}, 405),
    ("GET", "/api/dealers/example-motors/unknown", {}, 404),
]  # fmt: skip


async def test_bad_input_gets_a_4xx_with_a_message(api: tuple[Harness, str]) -> None:
    h, token = api
    for method, path, kwargs, expected in BAD_REQUESTS:
        answer: Answer = await call(h.gateway, method, path, token=token, **kwargs)
        assert answer.status == expected, (method, path, answer.status, answer.raw[:300])
        assert isinstance(answer.body, dict) and answer.body["error"], (method, path)


JUNK = ["", "-1", "0", "1e9", "99999999999999999999", "x" * 300, "%00", "%C3%A9", "null",
        "%5B%5D", "true", "2026-13-45T99:00", "*", "..%2F..%2Fetc"]  # fmt: skip


async def test_junk_in_every_parameter_never_gives_5xx(api: tuple[Harness, str]) -> None:
    h, token = api
    for ep in ENDPOINTS:
        for junk in JUNK:
            path = ep.path.replace("{dealer}", junk or "x").replace("{id}", junk or "x")
            query = "&".join(f"{p.name}={junk}" for p in ep.query)
            target = path + (f"?{query}" if query else "")
            for body in (None, {"reason": junk, "list": junk, "address": junk}):
                answer = await call(h.gateway, ep.method, target, token=token, body=body)
                assert answer.status < 500, (ep.method, target, body, answer.raw[:300])
