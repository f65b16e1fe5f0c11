"""The memory budget for message data in flight (reliability G5).

aiosmtpd keeps the whole DATA of a session in memory until the final ".", and intake then
holds the parsed message and one signed copy per recipient until the store commits. With
200 connections and a 25 MB limit that is several gigabytes nobody planned for. Each
DATA transaction therefore holds a reservation against one process-wide budget, from its
354 until the reply to the final "." is written.

What one message costs in memory on its way through was measured on an 8 MB message: the
resident peak grew by 16 times its size (aiosmtpd's line buffer and joined copy, the
parsed tree, the rewritten and signed bytes and the store's copy); each further recipient
adds its signed copy and the store's. The reservation is planned at DATA and grows with
the bytes actually read:

* a client that declared ``MAIL ... SIZE=`` (RFC 1870: aiosmtplib, Postfix) is planned at
  that size; one that declared none (Python's smtplib, most CRMs) at ``UNDECLARED``, not
  at the size limit, so that ordinary undeclared mail does not each hold the share of a
  25 MB message and go through one at a time;
* past the plan, the reservation grows in steps as the data arrives. A step that does not
  fit waits for room, and the session reads nothing more meanwhile (TCP holds the client
  back). If no room comes within ``WAIT_SECONDS`` the rest of the data is read and
  dropped and the final "." is answered ``452 4.3.1``: a refusal the client retries,
  instead of an out-of-memory kill that loses every message in flight.

Growing reservations could otherwise wait on each other for ever (each holds part of the
budget and wants more), so the oldest open transaction never waits: its steps are granted
even past the budget. Memory is thus bounded by the budget plus one message's share. A
DATA that cannot get its plan waits the same way and is then told ``452 4.3.1`` at once.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from gateway.metrics import Metrics

# How long a DATA command (or a step of growth) may wait for room before it is refused.
# Short, because the client is waiting for the 354 and its own timeout for it is
# 2 minutes (RFC 5321 §4.5.3.2); read at construction so that tests can shorten it.
WAIT_SECONDS = 10.0
# Bytes held per byte of message, and per further recipient (see the module docstring).
PER_MESSAGE = 16
PER_RECIPIENT = 2
# The message size planned for when the client declared none.
UNDECLARED = 1024 * 1024
# The least a reservation grows by, in octets of message.
STEP = 256 * 1024


def share(size: int, recipients: int) -> int:
    """The bytes a message of ``size`` octets to ``recipients`` holds at its peak."""
    return max(size, 1) * (PER_MESSAGE + PER_RECIPIENT * (max(recipients, 1) - 1))


def planned_size(declared_size: int | None, size_limit: int) -> int:
    """The message size a DATA transaction is planned at before any byte is read."""
    size = declared_size if declared_size is not None else UNDECLARED
    return min(size, size_limit) if size_limit else size


def declared_size(mail_options: list[str]) -> int | None:
    """The ``SIZE=`` value of the MAIL command, if the client gave a valid one."""
    for option in mail_options:
        key, _, value = option.partition("=")
        if key.upper() == "SIZE" and value.isdigit():
            return int(value)
    return None


class Reservation:
    """What one DATA transaction holds of the budget; grown as its bytes arrive."""

    def __init__(self, budget: DataBudget, number: int, recipients: int) -> None:
        self.held = 0
        self.number = number  # arrival order: the lowest open number is the oldest
        self._budget = budget
        self._per_octet = share(1, recipients)

    @property
    def octets(self) -> int:
        """The message size what is held covers."""
        return self.held // self._per_octet

    async def grow(self, size: int) -> bool:
        """Hold enough for ``size`` octets, with room to spare; ``False`` if refused."""
        # A quarter more than read so far: few steps for a large message (logarithmic in its
        # size), yet none much larger than the message needs, so a step is likely to fit.
        wanted = size + max(size // 4, STEP)
        return await self._budget.grow(self, wanted * self._per_octet - self.held)

    async def release(self) -> None:
        """Give back everything held (once the reply to the final "." is written)."""
        await self._budget.release(self)


class DataBudget:
    """Bytes of message data the process will hold at once, shared by all listeners."""

    def __init__(self, limit: int, metrics: Metrics, wait: float | None = None) -> None:
        self.limit = limit
        self.used = 0
        self._wait = WAIT_SECONDS if wait is None else wait
        self._metrics = metrics
        self._room = asyncio.Condition()
        self._numbers = itertools.count()
        self._open: dict[int, Reservation] = {}  # insertion order is arrival order

    async def reserve(self, size: int, recipients: int) -> Reservation | None:
        """Open a reservation planned at ``size`` octets; ``None`` when refused."""
        reservation = Reservation(self, next(self._numbers), recipients)
        # A plan larger than the whole budget is cut to it: such a message runs alone.
        amount = min(share(size, recipients), self.limit)
        if not await self._take(amount, lambda: self.used + amount <= self.limit):
            return None
        reservation.held = amount
        self._open[reservation.number] = reservation
        return reservation

    async def grow(self, reservation: Reservation, amount: int) -> bool:
        """Add ``amount`` bytes to an open reservation; ``False`` when refused."""
        if amount <= 0:
            return True

        def fits() -> bool:
            oldest = next(iter(self._open)) == reservation.number
            return oldest or self.used + amount <= self.limit

        if not await self._take(amount, fits):
            return False
        reservation.held += amount
        return True

    async def release(self, reservation: Reservation) -> None:
        """Close a reservation and give back what it held."""
        async with self._room:
            self._open.pop(reservation.number, None)
            self.used -= reservation.held
            reservation.held = 0
            self._metrics.data_budget_bytes.set(self.used)
            # Room, and perhaps a new oldest transaction that need not wait any longer.
            self._room.notify_all()

    async def _take(self, amount: int, fits: Callable[[], bool]) -> bool:
        async with self._room:
            try:
                await asyncio.wait_for(self._room.wait_for(fits), self._wait)
            except TimeoutError:
                self._metrics.data_budget_refusals.inc()
                return False
            self.used += amount
            self._metrics.data_budget_bytes.set(self.used)
            return True
