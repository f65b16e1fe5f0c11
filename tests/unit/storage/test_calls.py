"""The store's call thread: order, results, errors, cancellation and its end."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gateway.storage.sqlite.calls import CallThread


async def test_calls_run_in_order_on_one_thread_of_their_own() -> None:
    calls = CallThread("calls-test")
    seen: list[tuple[int, str]] = []

    def call(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        return n * n

    results = await asyncio.gather(*(calls.submit(lambda n=n: call(n)) for n in range(50)))
    assert results == [n * n for n in range(50)]
    assert [n for n, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"calls-test"}
    calls.stop()
    calls.join(5)


async def test_an_exception_reaches_the_caller_and_the_thread_goes_on() -> None:
    calls = CallThread("calls-test")

    def fail() -> None:
        raise ValueError("no such row")

    with pytest.raises(ValueError, match="no such row"):
        await calls.submit(fail)
    assert await calls.submit(lambda: "next") == "next"
    calls.stop()
    calls.join(5)


async def test_a_call_cancelled_while_queued_does_not_run() -> None:
    calls = CallThread("calls-test")
    gate = threading.Event()
    ran: list[str] = []
    first = calls.submit(lambda: gate.wait(5))
    second = calls.submit(lambda: ran.append("second"))
    third = calls.submit(lambda: ran.append("third"))
    second.cancel()
    gate.set()
    assert await first is True
    await third
    assert ran == ["third"]
    calls.stop()
    calls.join(5)


async def test_a_started_call_runs_to_its_end_when_its_caller_gives_up() -> None:
    calls = CallThread("calls-test")
    started, gate = threading.Event(), threading.Event()
    done: list[bool] = []

    def slow() -> None:
        started.set()
        gate.wait(5)
        done.append(True)

    task = asyncio.ensure_future(calls.submit(slow))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    gate.set()
    assert await calls.submit(lambda: done) == [True]
    calls.stop()
    calls.join(5)


async def test_stop_ends_the_thread_after_the_queued_calls() -> None:
    calls = CallThread("calls-test")
    result = calls.submit(lambda: "queued before stop")
    calls.stop()
    assert await result == "queued before stop"
    calls.join(5)
    assert not any(t.name == "calls-test" for t in threading.enumerate())
    with pytest.raises(RuntimeError, match="after stop"):
        calls.submit(lambda: None)
