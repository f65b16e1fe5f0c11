"""Accepting on a listening socket that several worker processes share, fairly.

Every worker of ``mailgate serve`` (gateway/cli/supervisor.py) watches the same listening
socket. asyncio's own accept loop takes up to ``backlog`` connections each time the socket
is readable, so a burst (a CRM opening its 20 sessions at once) lands on whichever worker
woke first, and with long sessions that worker then carries all of them while the others
sit idle: measured with two workers and 20 reused sessions, 0.85 and 0.08 of a core.
``SharedAcceptor`` takes one connection at a time instead and then looks away for
``TURN_SECONDS``, so the workers that are free take turns, and a busy one, which comes
back to its loop late, takes fewer. (Without the pause a worker that the scheduler runs
first can still take a whole burst before another wakes: 19 of 20 in one of nine tries
on a loaded 2-core machine.) The pause caps one worker at 500 new connections a second,
far above what SMTP sessions that each carry mail arrive at.

A failure to accept for lack of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) pauses this
worker's accepting for a second, as asyncio does, and is logged.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

log = logging.getLogger("gateway.smtp")

PAUSE_SECONDS = 1.0
TURN_SECONDS = 0.002


class SharedAcceptor:
    """Accepts connections on ``sock`` one per loop turn and serves each with ``factory``."""

    def __init__(self, sock: socket.socket, factory: Callable[[], asyncio.Protocol]) -> None:
        self._sock = sock
        self._factory = factory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._sock.getsockname()[1])

    def start(self) -> None:
        """Start accepting (on the running loop)."""
        self._loop = asyncio.get_running_loop()
        self._watch()

    def _watch(self) -> None:
        if not self._closed and self._loop is not None:
            self._loop.add_reader(self._sock.fileno(), self._ready)

    def _ready(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return  # another worker took it
        except OSError as exc:
            log.error("accepting a connection failed, pausing %.0fs: %s", PAUSE_SECONDS, exc)
            assert self._loop is not None
            self._loop.remove_reader(self._sock.fileno())
            self._loop.call_later(PAUSE_SECONDS, self._watch)
            return
        conn.setblocking(False)
        assert self._loop is not None
        self._loop.remove_reader(self._sock.fileno())
        self._loop.call_later(TURN_SECONDS, self._watch)
        task = self._loop.create_task(self._serve(conn))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _serve(self, conn: socket.socket) -> None:
        assert self._loop is not None
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except Exception as exc:  # the peer left already, or the transport failed
            log.debug("an accepted connection could not be served: %s", exc)
            conn.close()

    def close(self) -> None:
        """Stop accepting and close this worker's copy of the socket."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    async def wait_closed(self) -> None:
        """Wait for connections accepted before ``close`` to be handed to their protocol."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
