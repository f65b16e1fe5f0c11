"""The memory budget for message data in flight (reliability G5).

aiosmtpd keeps the whole DATA of a session in memory until the final ".", and intake then
holds the parsed message and one signed copy per recipient until the store commits. With
200 connections and a 25 MB limit that is several gigabytes nobody planned for. Each
session therefore reserves its share of one process-wide budget before it answers DATA
with 354, and gives it back once the reply to the final "." is written.

The share is an upper bound known at DATA time: the size the client declared with
``MAIL ... SIZE=`` (RFC 1870), or the size limit when it declared none, times what one
message costs in memory on its way through (measured on an 8 MB message: the resident
peak grew by 16 times its size, from aiosmtpd's line buffer and joined copy, the parsed
tree, the rewritten and signed bytes and the store's copy; each further recipient adds
its signed copy and the store's). Clients that declare SIZE= (aiosmtplib, Python's
smtplib, Postfix) get shares their messages need; those that do not are planned at the
limit. A session that cannot get its share waits a little, and is then told
``452 4.3.1`` to come back later: a refusal the client retries, instead of an
out-of-memory kill that loses every message in flight. A share larger than the whole
budget is cut to the budget, so such a message still goes through, alone.
"""

from __future__ import annotations

import asyncio

from gateway.metrics import Metrics

# How long a DATA command may wait for room before it is refused. Short, because the
# client is waiting for the 354 and its own timeout for it is 2 minutes (RFC 5321 §4.5.3.2).
WAIT_SECONDS = 10.0
# Bytes held per byte of message, and per further recipient (see the module docstring).
PER_MESSAGE = 16
PER_RECIPIENT = 2


def share(declared_size: int | None, size_limit: int, recipients: int) -> int:
    """The bytes one DATA transaction may hold at its peak."""
    size = declared_size if declared_size is not None else size_limit
    size = min(size, size_limit) if size_limit else size
    return max(size, 1) * (PER_MESSAGE + PER_RECIPIENT * (max(recipients, 1) - 1))


def declared_size(mail_options: list[str]) -> int | None:
    """The ``SIZE=`` value of the MAIL command, if the client gave a valid one."""
    for option in mail_options:
        key, _, value = option.partition("=")
        if key.upper() == "SIZE" and value.isdigit():
            return int(value)
    return None


class DataBudget:
    """Bytes of message data the process will hold at once, shared by all listeners."""

    def __init__(self, limit: int, metrics: Metrics, wait: float = WAIT_SECONDS) -> None:
        self.limit = limit
        self.used = 0
        self._wait = wait
        self._metrics = metrics
        self._room = asyncio.Condition()

    async def acquire(self, amount: int) -> int:
        """Reserve up to ``amount`` bytes; return what was reserved, or 0 when refused."""
        amount = min(amount, self.limit)
        async with self._room:
            try:
                await asyncio.wait_for(
                    self._room.wait_for(lambda: self.used + amount <= self.limit), self._wait
                )
            except TimeoutError:
                self._metrics.data_budget_refusals.inc()
                return 0
            self.used += amount
            self._metrics.data_budget_bytes.set(self.used)
            return amount

    async def release(self, amount: int) -> None:
        """Give back what ``acquire`` returned."""
        if amount <= 0:
            return
        async with self._room:
            self.used -= amount
            self._metrics.data_budget_bytes.set(self.used)
            self._room.notify_all()
