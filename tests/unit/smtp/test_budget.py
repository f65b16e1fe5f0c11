"""The message-data memory budget: plans, growth, waiting for room, refusal, release."""

from __future__ import annotations

import asyncio

from gateway.metrics import Metrics
from gateway.smtp.budget import (
    PER_MESSAGE,
    PER_RECIPIENT,
    STEP,
    UNDECLARED,
    DataBudget,
    declared_size,
    planned_size,
    share,
)


def test_the_plan_is_the_declared_size_capped_at_the_limit() -> None:
    assert planned_size(1000, 10_000_000) == 1000
    assert planned_size(50_000_000, 10_000_000) == 10_000_000  # a lie above the limit
    # Nothing declared (smtplib, most CRMs): a modest plan, grown as the bytes arrive,
    # not the share of a message at the limit.
    assert planned_size(None, 25_000_000) == UNDECLARED
    assert planned_size(None, 200_000) == 200_000


def test_share_grows_with_the_recipients() -> None:
    # Intake keeps one signed copy per recipient until the store commits.
    assert share(1000, 1) == 1000 * PER_MESSAGE
    assert share(1000, 100) == 1000 * (PER_MESSAGE + 99 * PER_RECIPIENT)


def test_declared_size_reads_only_a_valid_size_parameter() -> None:
    assert declared_size(["BODY=8BITMIME", "SIZE=1234"]) == 1234
    assert declared_size(["size=77"]) == 77
    assert declared_size(["SIZE=12x"]) is None
    assert declared_size(["BODY=7BIT"]) is None


async def test_room_is_shared_and_given_back() -> None:
    metrics = Metrics()
    budget = DataBudget(100 * PER_MESSAGE, metrics, wait=5)
    first = await budget.reserve(60, 1)
    assert first is not None and first.octets == 60
    waiter = asyncio.create_task(budget.reserve(60, 1))
    await asyncio.sleep(0.05)
    assert not waiter.done()  # 60 + 60 > 100: the second waits
    assert metrics.registry.get_sample_value("mailgate_smtp_data_budget_bytes") == 60 * PER_MESSAGE
    await first.release()
    second = await asyncio.wait_for(waiter, 1)
    assert second is not None
    await second.release()
    assert budget.used == 0


async def test_a_session_that_waits_too_long_is_refused_and_counted() -> None:
    metrics = Metrics()
    budget = DataBudget(100, metrics, wait=0.1)
    held = await budget.reserve(100, 1)
    assert held is not None
    assert await budget.reserve(1, 1) is None
    assert metrics.registry.get_sample_value("mailgate_smtp_data_budget_refusals_total") == 1
    await held.release()
    assert await budget.reserve(1, 1) is not None


async def test_a_plan_larger_than_the_budget_runs_alone() -> None:
    budget = DataBudget(100, Metrics(), wait=0.1)
    assert (alone := await budget.reserve(10_000, 1)) is not None
    assert alone.held == 100
    assert await budget.reserve(1, 1) is None  # nothing else fits beside it


async def test_growth_doubles_and_waits_for_room_unless_oldest() -> None:
    budget = DataBudget((STEP + 100) * PER_MESSAGE, Metrics(), wait=5)
    oldest = await budget.reserve(10, 1)
    younger = await budget.reserve(10, 1)
    assert oldest is not None and younger is not None
    assert await younger.grow(30)
    assert younger.octets == 30 + STEP  # what was read and a step more, so few steps
    # The younger now wants more than the budget holds beside the oldest: it must wait.
    step = asyncio.create_task(younger.grow(30 + STEP + 1))
    await asyncio.sleep(0.05)
    assert not step.done()
    # The oldest never waits, even past the budget, so that growth cannot deadlock.
    assert await asyncio.wait_for(oldest.grow(STEP), 1)
    assert budget.used > budget.limit
    assert not step.done()
    await oldest.release()
    # The younger is now the oldest: its step goes through.
    assert await asyncio.wait_for(step, 1)
    assert younger.octets == 30 + 2 * STEP + 1
    await younger.release()
    assert budget.used == 0


async def test_growth_with_no_room_in_time_is_refused() -> None:
    metrics = Metrics()
    budget = DataBudget(100 * PER_MESSAGE, metrics, wait=0.1)
    oldest = await budget.reserve(90, 1)
    younger = await budget.reserve(10, 1)
    assert oldest is not None and younger is not None
    assert not await younger.grow(20)
    assert metrics.registry.get_sample_value("mailgate_smtp_data_budget_refusals_total") == 1
    assert younger.octets == 10  # a refused step takes nothing
    await younger.release()
    await oldest.release()
    assert budget.used == 0
