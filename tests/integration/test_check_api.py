"""``POST /api/check`` on a running gateway: the verdict intake gives, explained and located.

Admitted with an admin token (loopback) or with the dealer's status-link token (from any
client, that dealer only); nothing handed in is stored or sent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.admin.api import AdminApi
from gateway.admin.tokens import TokenCheck
from tests.integration.admin import add_token, call
from tests.integration.conftest import Harness

MakeHarness = Callable[..., Awaitable[Harness]]
DEALER = "example-motors"
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "messages" / "inspection"
TEMPLATE = "<html><body><p>Dear {FirstName},</p><p>Your car is ready.</p></body></html>"


async def test_admin_token_checks_a_template_and_a_message(harness: Harness) -> None:
    gw = harness.gateway
    token = add_token(gw)
    answer = await call(gw, "POST", f"/api/check?dealer={DEALER}", token=token,
                        body={"html": TEMPLATE, "subject": "Hello [FIRST NAME]"})  # fmt: skip
    assert answer.status == 200, answer.raw
    result = answer.body
    assert result["dealer"] == DEALER and result["stored"] is False
    assert result["verdict"] == "tag"
    assert result["verdict_text"] == (
        "the gateway would deliver it with an X-Mailgate-Findings header"
    )
    field = next(f for f in result["findings"] if f["code"] == "unfilled-merge-field")
    assert field["severity"] == "warning" and field["action"] == "tag"
    assert field["why"] and field["fix"]
    places = {(loc["where"], loc["text"]) for loc in field["locations"]}
    assert places == {("subject", "[FIRST NAME]"), ("HTML", "{FirstName}")}

    raw = (SAMPLES / "unknown1-html.eml").read_bytes()
    answer = await call(gw, "POST", f"/api/check?dealer={DEALER}", token=token, raw=raw,
                        content_type="message/rfc822")  # fmt: skip
    assert answer.status == 200, answer.raw
    assert answer.body["verdict"] == "repair"
    stray = next(f for f in answer.body["findings"] if f["code"] == "stray-attachment")
    assert stray["locations"][0]["kind"] == "attachment"
    assert stray["locations"][0]["text"] == "unknown1.txt"

    # the same message in base64 inside JSON, and a raw HTML body with ?subject=
    encoded = base64.b64encode(raw).decode()
    answer = await call(gw, "POST", f"/api/check?dealer={DEALER}", token=token,
                        body={"eml_base64": encoded})  # fmt: skip
    assert answer.status == 200 and answer.body["verdict"] == "repair"
    answer = await call(gw, "POST", f"/api/check?dealer={DEALER}&subject=Hi%20%7BName%7D",
                        token=token, raw=TEMPLATE.encode(), content_type="text/html")  # fmt: skip
    assert answer.status == 200
    field = next(f for f in answer.body["findings"] if f["code"] == "unfilled-merge-field")
    assert ("subject", "{Name}") in {(loc["where"], loc["text"]) for loc in field["locations"]}

    # nothing was stored or sent
    assert await gw.storage.list_messages(dealer_id=None, limit=10) == []
    assert harness.sink.messages == []


async def test_bad_requests_are_400_and_unknown_dealers_404(harness: Harness) -> None:
    gw = harness.gateway
    token = add_token(gw)
    for body in ({}, {"html": "x", "eml": "y"}, {"eml_base64": "%%%"}, {"nope": 1}):
        answer = await call(gw, "POST", f"/api/check?dealer={DEALER}", token=token, body=body)
        assert answer.status == 400, (body, answer.body)
    answer = await call(gw, "POST", "/api/check", token=token, body={"html": TEMPLATE})
    assert answer.status == 400 and "'dealer' is required" in answer.body["error"]
    answer = await call(gw, "POST", "/api/check?dealer=nobody", token=token, body={"html": "x"})
    assert answer.status == 404
    answer = await call(gw, "POST", f"/api/check?dealer={DEALER}", token=token, raw=b"x",
                        content_type="image/png")  # fmt: skip
    assert answer.status == 415


async def test_status_link_token_admits_its_dealer_only(harness: Harness) -> None:
    gw = harness.gateway
    assert gw.status_links is not None
    mine = gw.status_links.token(DEALER)
    theirs = gw.status_links.token("rival-motors")
    body = {"html": TEMPLATE}
    answer = await call(gw, "POST", f"/api/check?dealer={DEALER}", token=mine, body=body)
    assert answer.status == 200 and answer.body["dealer"] == DEALER
    for token, dealer in ((theirs, DEALER), (mine, "rival-motors"), (mine, "")):
        answer = await call(gw, "POST", f"/api/check?dealer={dealer}", token=token, body=body)
        assert answer.status == 401, (dealer, answer.body)
    # the status-link token opens no other endpoint
    answer = await call(gw, "GET", f"/api/dealers/{DEALER}?dealer={DEALER}", token=mine)
    assert answer.status == 401


async def test_status_link_token_is_served_to_remote_clients(harness: Harness) -> None:
    gw = harness.gateway
    assert gw.admin is not None and gw.status_links is not None
    admin_token = add_token(gw)
    app = AdminApi(gw.admin, TokenCheck(gw.settings.admin_token_file),
                   dealer_links=gw.status_links.valid)  # fmt: skip
    body = json.dumps({"html": TEMPLATE}).encode()
    remote = ("192.0.2.7", 40000)
    status, result = await asgi_post(app, f"dealer={DEALER}", gw.status_links.token(DEALER),
                                     body, remote)  # fmt: skip
    assert status == 200 and result["verdict"] == "tag"
    status, _ = await asgi_post(app, f"dealer={DEALER}", admin_token, body, remote)
    assert status == 403  # admin tokens stay loopback-only


async def test_size_limits(make_harness: MakeHarness) -> None:
    h = await make_harness(submission={"max_message_size": 20_000})
    gw = h.gateway
    token = add_token(gw)
    big = "<p>" + "x" * 30_000 + "</p>"
    answer = await call(gw, "POST", f"/api/check?dealer={DEALER}", token=token,
                        body={"html": big})  # fmt: skip
    assert answer.status == 200
    assert answer.body["verdict"] == "reject" and answer.body["refused"] == "message-too-big"
    assert answer.body["reply"].startswith("552 5.3.4") and answer.body["why"]
    huge = b"x" * (2 * 1024 * 1024)  # over what the endpoint reads at all
    answer = await call(gw, "POST", f"/api/check?dealer={DEALER}", token=token, raw=huge,
                        content_type="message/rfc822")  # fmt: skip
    assert answer.status == 413 and "larger than" in answer.body["error"]


async def test_openapi_describes_the_check(harness: Harness) -> None:
    spec = (await call(harness.gateway, "GET", "/api/openapi.json")).body
    op = spec["paths"]["/api/check"]["post"]
    assert set(op["requestBody"]["content"]) == {"application/json", "message/rfc822",
                                                  "text/html"}  # fmt: skip
    assert {"200", "400", "404", "413", "415"} <= set(op["responses"])
    assert "Check" in spec["components"]["schemas"]


async def asgi_post(
    app: AdminApi, query: str, token: str, body: bytes, client: tuple[str, int]
) -> tuple[int, Any]:
    from starlette.applications import Starlette

    asgi = Starlette(routes=app.routes())
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/check", "raw_path": b"/api/check",
        "query_string": query.encode(), "root_path": "", "client": client,
        "server": ("127.0.0.1", 8080),
        "headers": [(b"authorization", f"Bearer {token}".encode()),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asgi(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(payload)
