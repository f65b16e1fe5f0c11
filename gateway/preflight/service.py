"""The check service of a running gateway: the policy in force, its clock and its limits.

``Preflight.check(dealer_id, submission)`` runs ``core.check`` with the dealer's policy as
it is now, the submission listener's limits and size maximum, and the gateway's hostname,
so a check says what this gateway would do with the message at this moment. The work is
pure CPU: it runs in a thread, at most ``CONCURRENT`` at a time and within the checks'
time budget (``submission.check_time_budget``), so checks handed in over HTTP can neither
stall the event loop nor take every core from the SMTP sessions. Nothing is stored.
"""

from __future__ import annotations

import asyncio

from gateway.clock import Clock
from gateway.intake.prepare import Limits
from gateway.policy.model import DealerPolicy
from gateway.policy.store import PolicyStore
from gateway.preflight.core import Checked, Submission, check, timed_out

CONCURRENT = 2


class Preflight:
    """Checks submissions against the gateway's current policy; see the module docstring."""

    def __init__(
        self,
        policies: PolicyStore,
        clock: Clock,
        limits: Limits,
        *,
        hostname: str,
        max_bytes: int,
        budget: float = 5.0,
    ) -> None:
        self._policies = policies
        self._clock = clock
        self._limits = limits
        self._hostname = hostname
        self._budget = budget
        self._slots = asyncio.Semaphore(CONCURRENT)
        self.max_bytes = max_bytes

    def dealer(self, dealer_id: str) -> DealerPolicy | None:
        """The dealer's policy in force, or ``None``."""
        return self._policies.current.dealer(dealer_id)

    def check_now(self, dealer: DealerPolicy, submission: Submission) -> Checked:
        """``core.check`` on this thread (for callers that already run in one)."""
        return check(
            submission,
            dealer,
            limits=self._limits,
            now=self._clock.now(),
            hostname=self._hostname,
            max_bytes=self.max_bytes,
        )

    def _done(self, work: asyncio.Future[Checked]) -> None:
        self._slots.release()
        if not work.cancelled():
            work.exception()  # an overrun's outcome was already answered; retrieved

    async def check(self, dealer: DealerPolicy, submission: Submission) -> Checked:
        """What the gateway would do with ``submission``; a deferral when the checks overrun."""
        await self._slots.acquire()
        work = asyncio.ensure_future(asyncio.to_thread(self.check_now, dealer, submission))
        # A thread cannot be stopped: one that overruns keeps its slot until it ends.
        work.add_done_callback(self._done)
        try:
            async with asyncio.timeout(self._budget):
                return await asyncio.shield(work)
        except TimeoutError:
            return timed_out(dealer.dealer_id, submission)
