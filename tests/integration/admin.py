"""Helpers for the admin API tests: a token, raw HTTP calls, and stored messages."""

from __future__ import annotations

import asyncio
import http.client
import json
from dataclasses import dataclass
from typing import Any

from gateway.admin.tokens import create_token
from gateway.app import Gateway
from gateway.types import DealerId, MessageId, MessageState, NewMessage
from tests.integration.conftest import message


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]
    raw: bytes


def add_token(gateway: Gateway, name: str = "ops") -> str:
    return create_token(gateway.settings.admin_token_file, name)


def request(
    port: int,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: Any = None,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> Answer:
    """One synchronous HTTP request (run it in a thread: the gateway shares the loop)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None:
        headers["Content-Type"] = content_type
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        hdrs = {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()
    decoded: Any = None
    if hdrs.get("content-type", "").startswith("application/json"):
        decoded = json.loads(payload)
    return Answer(response.status, decoded, hdrs, payload)


async def call(gateway: Gateway, method: str, path: str, **kwargs: Any) -> Answer:
    """A request to the operators' listener (admin API, metrics, health)."""
    return await asyncio.to_thread(request, gateway.http_port, method, path, **kwargs)


async def call_public(gateway: Gateway, method: str, path: str, **kwargs: Any) -> Answer:
    """A request to the public listener (unsubscribe links, status pages)."""
    return await asyncio.to_thread(request, gateway.public_port, method, path, **kwargs)


async def store_message(
    gateway: Gateway,
    message_id: str,
    state: MessageState,
    *,
    dealer: str = "example-motors",
    rcpt: str = "customer@example.org",
    findings: tuple[str, ...] = (),
    note: str = "",
) -> MessageId:
    await gateway.storage.enqueue(
        [
            NewMessage(
                id=MessageId(message_id),
                dealer_id=DealerId(dealer),
                mail_from="sales@example-motors.test",
                rcpt=rcpt,
                data=message(to=rcpt),
                received_at=gateway.clock.now(),
                state=state,
                findings=findings,
                note=note,
            )
        ]
    )
    return MessageId(message_id)
