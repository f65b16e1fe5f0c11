"""One thread that runs a connection's calls in order and hands each result to its loop.

``loop.run_in_executor`` builds a ``concurrent.futures.Future`` per call, chains it to an
asyncio future with callbacks both ways and takes the executor's locks, and every message
makes several store calls (the recipients' history, suppressions, the dealer's status,
the enqueue; a login, its credential). ``CallThread`` keeps one asyncio future per call,
passes ``(function, future)`` through a ``queue.SimpleQueue`` (a C queue) and settles the
future with one ``call_soon_threadsafe``: a fifth less CPU per awaited no-op call on the
development machine (about 62 against 78 µs, the thread's wake-up included).

What a call sees is what ``run_in_executor`` gave: calls run one at a time in the order
submitted; a call whose future was cancelled before the thread reached it does not run
(one that had started runs to its end, and its result is dropped); an exception raised
by the function is raised to the awaiting coroutine.

The thread is a daemon: at interpreter exit a call still queued is not run, which loses
nothing, because no reply has been given for it (a 250 follows only a returned enqueue).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Call = tuple[Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class CallThread:
    """Runs submitted functions on one thread of its own, in order."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Queue ``fn``; the future (of the running loop) gets its result or exception."""
        if self._stopped:
            raise RuntimeError(f"{self._name}: submit after stop")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()
        self._calls.put((fn, future, loop))
        return future

    def stop(self) -> None:
        """Let the thread end once the calls queued before this one have run."""
        if not self._stopped:
            self._stopped = True
            self._calls.put(None)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (after ``stop``)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            fn, future, loop = call
            # Read off the loop's thread: a cancel that lands just after this runs the call
            # anyway, as a started call does, and _settle (on the loop) then drops its result.
            if future.cancelled():
                continue
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting coroutine, as asyncio does
                error = exc
            # A closed loop raises RuntimeError: nobody awaits this call any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, result, error)
            del call, fn, future, result, error  # no reference kept while waiting
