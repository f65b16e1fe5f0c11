"""The message-data memory budget: shares, waiting for room, refusal, release."""

from __future__ import annotations

import asyncio

from gateway.metrics import Metrics
from gateway.smtp.budget import PER_MESSAGE, PER_RECIPIENT, DataBudget, declared_size, share


def test_share_uses_the_declared_size_capped_at_the_limit() -> None:
    assert share(1000, 10_000, 1) == 1000 * PER_MESSAGE
    assert share(50_000, 10_000, 1) == 10_000 * PER_MESSAGE  # a lie above the limit: the limit
    assert share(None, 10_000, 1) == 10_000 * PER_MESSAGE  # nothing declared: the worst case


def test_share_grows_with_the_recipients() -> None:
    # Intake keeps one signed copy per recipient until the store commits.
    assert share(1000, 10_000, 100) == 1000 * (PER_MESSAGE + 99 * PER_RECIPIENT)


def test_declared_size_reads_only_a_valid_size_parameter() -> None:
    assert declared_size(["BODY=8BITMIME", "SIZE=1234"]) == 1234
    assert declared_size(["size=77"]) == 77
    assert declared_size(["SIZE=12x"]) is None
    assert declared_size(["BODY=7BIT"]) is None


async def test_room_is_shared_and_given_back() -> None:
    metrics = Metrics()
    budget = DataBudget(100, metrics, wait=5)
    first = await budget.acquire(60)
    waiter = asyncio.create_task(budget.acquire(60))
    await asyncio.sleep(0.05)
    assert not waiter.done()  # 60 + 60 > 100: the second waits
    assert metrics.registry.get_sample_value("mailgate_smtp_data_budget_bytes") == 60
    await budget.release(first)
    assert await asyncio.wait_for(waiter, 1) == 60
    await budget.release(60)
    assert budget.used == 0


async def test_a_session_that_waits_too_long_is_refused_and_counted() -> None:
    metrics = Metrics()
    budget = DataBudget(100, metrics, wait=0.1)
    held = await budget.acquire(100)
    assert await budget.acquire(1) == 0
    assert metrics.registry.get_sample_value("mailgate_smtp_data_budget_refusals_total") == 1
    await budget.release(held)
    assert await budget.acquire(1) == 1


async def test_a_share_larger_than_the_budget_runs_alone() -> None:
    budget = DataBudget(100, Metrics(), wait=0.1)
    assert await budget.acquire(10_000) == 100
    assert await budget.acquire(1) == 0  # nothing else fits beside it
