"""Held messages: expiry of what no operator released (async, over ``Storage``).

A held message waits for an operator (``mailgate held release``/``delete``). One nobody
looked at within ``delivery.held_expiry`` is deleted, each with a log line naming the
message, the dealer and why it was held, and counted in
``mailgate_held_expired_total{dealer}``. The age is taken from when the message was last
changed (``updated_at``: when it was held), not from when it was received.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from gateway.metrics import Metrics
from gateway.storage.base import Storage
from gateway.types import MessageState

log = logging.getLogger("gateway.delivery")

BATCH = 10_000  # held messages read per pass; the rest go on the next pass


async def expire_held(
    storage: Storage, now: datetime, older_than: timedelta, metrics: Metrics | None = None
) -> int:
    """Delete held messages held longer than ``older_than``; return how many."""
    cutoff = now - older_than
    expired = 0
    for message in await storage.list_messages(state=MessageState.HELD, limit=BATCH):
        if message.updated_at > cutoff:
            continue
        if not await storage.delete(message.id):
            continue  # released or deleted meanwhile
        expired += 1
        if metrics is not None:
            metrics.held_expired.labels(message.dealer_id).inc()
        log.warning(
            "expired held message id=%s dealer=%s held since %s findings=%s note=%s",
            message.id, message.dealer_id, message.updated_at.isoformat(),
            ",".join(message.findings) or "-", message.note or "-",
        )  # fmt: skip
    return expired
