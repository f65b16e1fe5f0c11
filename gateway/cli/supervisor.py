"""``mailgate serve`` on every core: one supervisor process and N forked gateway workers.

Python runs one thread of Python at a time per process, so one gateway process uses one
core however many the machine has. The supervisor runs N complete gateways
(``gateway.app.Gateway``), each in its own process, on one data directory and one store:

* **One owner.** The supervisor takes the data-directory lock (``DataDirLock``) before
  anything reads the node id and holds it until the last worker has exited; workers take
  none. A worker is forked with the lock's descriptor and dies with the supervisor
  (``PR_SET_PDEATHSIG``), so a killed supervisor is a killed gateway, never a gateway
  whose orphans still deliver while a new one starts.
* **Shared listeners.** The supervisor binds the submission, HTTP and report listeners once
  (``bind_listeners``) and every worker accepts on those same sockets: the kernel hands a
  connection to whichever worker accepts first, so an idle worker takes the load of a busy
  one and a dead one's share goes to the others at once.
* **One node id per worker.** Worker ``i`` is node ``<node>-w<i>``, the same id for every
  restart of that slot. Delivery leases name their node, so the lease and fencing design
  that keeps delivery once-only across gateway nodes keeps it across processes; a
  restarted worker releases the leases its slot held, as a restarted node does, and the
  supervisor releases those of its own id and of every slot of the previous run before
  the first worker starts (slots beyond today's count included, from ``processes.last``).
* **Restarts.** A worker that dies is restarted in its slot, at once if it had run for a
  while, else after a back-off that doubles up to ``MAX_BACKOFF``. A worker that dies
  before it ever served on the first start stops the whole gateway (a configuration
  problem, which restarting cannot fix).
* **Signals.** SIGTERM and SIGINT are forwarded to every worker, which drain as a single
  gateway does (sessions in DATA finish, in-flight deliveries finish, leases are given
  back); the supervisor exits when the last one has. SIGHUP is forwarded (every worker
  reloads its policies); a reload through the admin API reaches one worker, which sends
  the supervisor SIGUSR1 so that the others reload too.
* **Metrics.** Workers record in prometheus-client's multiprocess files under
  ``<data_dir>/metrics`` (emptied at start), and whichever worker answers ``/metrics``
  adds up every process's files, so a restarted worker's counts are not lost
  (gateway/metrics.py).
* **Shared limits.** ``submission.max_connections``, ``submission.data_memory`` and
  ``delivery.workers`` are totals for the gateway: each worker gets its share (rounded
  up). Per-address limits (``max_connections_per_ip``, AUTH failures) stay per process.

With SQLite every worker has its own writer connection; WAL lets one write at a time,
each worker still groups its own callers' commits, and the busy timeout orders the
workers (bench/relay.py measures it). With PostgreSQL the workers are simply nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import selectors
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from gateway import metrics as metrics_files
from gateway.app import Gateway, Listeners, Worker, bind_listeners, prepare_shared_files
from gateway.datadir import DataDirLock, load_or_create_node_id
from gateway.errors import GatewayError
from gateway.policy.store import PolicyStore
from gateway.settings import Settings
from gateway.storage.base import open_storage

log = logging.getLogger("gateway.supervisor")

METRICS_DIR = "metrics"
LAST_COUNT_FILE = "processes.last"  # how many slots the previous run had
SETTLED = 10.0  # seconds: a worker that ran this long is restarted without delay
MAX_BACKOFF = 30.0
_PR_SET_PDEATHSIG = 1
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)


def default_processes() -> int:
    """One worker per core this process may run on (the CPU affinity, as in a container)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def worker_node(node: str, slot: int) -> str:
    """The node id of worker ``slot``: stable across restarts of that slot."""
    return f"{node}-w{slot}"


def worker_settings(settings: Settings, node: str, slot: int, processes: int) -> Settings:
    """``settings`` for worker ``slot`` of ``processes``: its node id and its share of totals."""

    def share(total: int) -> int:
        return max(1, math.ceil(total / processes))

    sub, delivery = settings.submission, settings.delivery
    return settings.model_copy(
        update={
            "server": settings.server.model_copy(update={"node_id": worker_node(node, slot)}),
            "submission": sub.model_copy(
                update={
                    "max_connections": share(sub.max_connections),
                    "data_memory": share(sub.data_memory),
                }
            ),
            "delivery": delivery.model_copy(update={"workers": share(delivery.workers)}),
        }
    )


def _die_with_parent() -> None:
    """Have the kernel SIGKILL this process when the supervisor dies (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class _Slot:
    """One worker slot: its current process, if any, and its restart bookkeeping."""

    index: int
    pid: int = 0
    ready_fd: int = -1
    started: float = 0.0
    ready: bool = False
    ever_ready: bool = False
    backoff: float = 0.0
    restart_at: float | None = None


@dataclass
class Supervisor:
    """Runs ``processes`` gateway workers until SIGTERM; see the module docstring."""

    settings: Settings
    processes: int
    slots: list[_Slot] = field(default_factory=list)
    _signals: list[int] = field(default_factory=list)
    _draining: bool = False
    _failed: bool = False
    _listeners: Listeners | None = None
    _close_in_child: list[int] = field(default_factory=list)

    @property
    def metrics_dir(self) -> Path:
        """Where the workers' multiprocess metric files live."""
        return self.settings.server.data_dir / METRICS_DIR

    def run(self) -> int:
        """Own the data directory, start the workers, serve until told to stop; exit code."""
        data_dir = self.settings.server.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = DataDirLock(data_dir)
        lock.acquire()
        try:
            node = self.settings.server.node_id or load_or_create_node_id(
                self.settings.node_id_file, socket.gethostname()
            )
            self._prepare(node)
            self._listeners = bind_listeners(self.settings)
            try:
                return self._serve(node)
            finally:
                self._listeners.close()
        finally:
            lock.release()

    # -- before the first fork -------------------------------------------------------------

    def _prepare(self, node: str) -> None:
        """Everything the workers would otherwise race for, done once, before any fork."""
        PolicyStore(self.settings.server.policies_dir)  # raises PolicyError: nothing starts
        prepare_shared_files(self.settings)
        metrics_files.reset_directory(self.metrics_dir)
        last_file = self.settings.server.data_dir / LAST_COUNT_FILE
        try:
            last = int(last_file.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            last = 0
        owners = [node] + [worker_node(node, i) for i in range(max(last, self.processes))]
        asyncio.run(self._release(owners))
        last_file.write_text(f"{self.processes}\n")
        # A fork copies only the calling thread; a store thread still winding down in the
        # parent would leave its locks held in every child.
        for thread in threading.enumerate():
            if thread is not threading.main_thread():
                thread.join(5.0)

    async def _release(self, owners: list[str]) -> None:
        # Opening the store here also applies its migrations once, before the workers.
        storage = await open_storage(self.settings.storage_url)
        try:
            for owner in owners:
                released = await storage.release_owned(owner)
                if released:
                    log.warning("released %d leases %s held before this start", released, owner)
        finally:
            await storage.close()

    # -- the supervisor's loop -------------------------------------------------------------

    def _serve(self, node: str) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        selector = selectors.DefaultSelector()
        selector.register(wake_r, selectors.EVENT_READ)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _FORWARDED}
        old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        self._close_in_child = [wake_r, wake_w]
        try:
            self.slots = [_Slot(i) for i in range(self.processes)]
            for slot in self.slots:
                self._start(slot, node, selector)
            log.info("supervisor pid %d: %d workers of node %s", os.getpid(), self.processes, node)
            while not (self._draining and not any(s.pid for s in self.slots)):
                self._step(node, selector, wake_r)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            selector.close()
            os.close(wake_r)
            os.close(wake_w)
        log.info("supervisor: every worker has exited")
        return 1 if self._failed else 0

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _step(self, node: str, selector: selectors.BaseSelector, wake_r: int) -> None:
        now = time.monotonic()
        due = [s.restart_at for s in self.slots if s.restart_at is not None]
        timeout = max(0.0, min(due) - now) if due else 1.0
        for key, _ in selector.select(min(timeout, 1.0)):
            fd = int(key.fd)
            if fd == wake_r:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 512):
                        pass
                continue
            self._ready_byte(fd, selector)
        while self._signals:
            self._handle(self._signals.pop(0))
        self._reap(selector)
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None and slot.restart_at <= now and not self._draining:
                slot.restart_at = None
                self._start(slot, node, selector)

    def _handle(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            if not self._draining:
                log.info("supervisor: %s, draining %d workers", signal.Signals(signum).name,
                         sum(1 for s in self.slots if s.pid))  # fmt: skip
            self._drain()
        elif signum in (signal.SIGHUP, signal.SIGUSR1):
            # SIGUSR1: a worker applied a reload through the admin API; the rest follow.
            self._send_all(signal.SIGHUP)

    def _drain(self) -> None:
        self._draining = True
        for slot in self.slots:
            slot.restart_at = None
        self._send_all(signal.SIGTERM)
        if self._listeners is not None:
            # Only the workers' copies remain: once they stop accepting, connections are
            # refused instead of waiting in a queue nobody reads.
            self._listeners.close()

    def _send_all(self, signum: int) -> None:
        for slot in self.slots:
            if slot.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signum)

    def _ready_byte(self, fd: int, selector: selectors.BaseSelector) -> None:
        slot = next((s for s in self.slots if s.ready_fd == fd), None)
        try:
            data = os.read(fd, 16)
        except OSError:
            data = b""
        if slot is not None and data:
            slot.ready = slot.ever_ready = True
            slot.backoff = 0.0
            log.info("worker %d ready (pid %d)", slot.index, slot.pid)
        if not data:  # the worker closed it (ready, exiting or dead)
            selector.unregister(fd)
            os.close(fd)
            if slot is not None:
                slot.ready_fd = -1

    def _reap(self, selector: selectors.BaseSelector) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            metrics_files.process_died(self.metrics_dir, pid)
            code = os.waitstatus_to_exitcode(status)
            lived = time.monotonic() - slot.started
            slot.pid = 0
            if slot.ready_fd >= 0:
                selector.unregister(slot.ready_fd)
                os.close(slot.ready_fd)
                slot.ready_fd = -1
            if self._draining:
                if code != 0:
                    self._failed = True
                log.info("worker %d (pid %d) exited %d", slot.index, pid, code)
                continue
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"
            if not slot.ever_ready:
                log.error("worker %d (pid %d) %s before it served; stopping", slot.index, pid, how)
                self._failed = True
                self._drain()
                continue
            slot.backoff = 0.0 if lived >= SETTLED else min(MAX_BACKOFF, max(0.5, 2 * slot.backoff))
            slot.restart_at = time.monotonic() + slot.backoff
            log.error("worker %d (pid %d) %s after %.1fs; restarting it in %.1fs",
                      slot.index, pid, how, lived, slot.backoff)  # fmt: skip

    # -- a worker --------------------------------------------------------------------------

    def _start(self, slot: _Slot, node: str, selector: selectors.BaseSelector) -> None:
        assert self._listeners is not None
        ready_r, ready_w = os.pipe()
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                os.close(ready_r)
                self._become_worker(slot.index, supervisor)
                code = _worker_main(
                    worker_settings(self.settings, node, slot.index, self.processes),
                    Worker(
                        slot.index, self._listeners, lambda: os.kill(supervisor, signal.SIGUSR1)
                    ),
                    self.metrics_dir,
                    ready_w,
                )
            finally:
                logging.shutdown()
                os._exit(code)
        os.close(ready_w)
        slot.pid, slot.ready_fd, slot.started, slot.ready = pid, ready_r, time.monotonic(), False
        selector.register(ready_r, selectors.EVENT_READ)
        log.info(
            "worker %d started (pid %d, node %s)", slot.index, pid, worker_node(node, slot.index)
        )

    def _become_worker(self, index: int, supervisor: int) -> None:
        """In the child: shed the supervisor's signal handling and die with it."""
        signal.set_wakeup_fd(-1)
        for sig in _FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        for fd in self._close_in_child:
            os.close(fd)
        for other in self.slots:
            if other.ready_fd >= 0:
                os.close(other.ready_fd)
        _die_with_parent()
        if os.getppid() != supervisor:  # it died before the prctl took effect
            os._exit(1)
        tag = _WorkerTag(index)
        for handler in logging.getLogger().handlers:
            handler.addFilter(tag)


class _WorkerTag(logging.Filter):
    """Names the worker in each record: ``[w1] gateway.smtp`` as the logger, ``worker`` = 1."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self._index = index
        self._prefix = f"[w{index}] "

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefix):
            record.name = self._prefix + record.name
            record.worker = self._index
        return True


def _worker_main(settings: Settings, role: Worker, metrics_dir: Path, ready_fd: int) -> int:
    """Run one gateway worker to its end; the process's exit code."""
    metrics_files.enable_multiprocess(metrics_dir)

    def ready() -> None:
        os.write(ready_fd, b"r")
        os.close(ready_fd)

    async def main() -> None:
        gateway = await Gateway.build(settings, role=role)
        await gateway.run(on_ready=ready)

    try:
        asyncio.run(main())
    except GatewayError as exc:
        log.error("worker %d: %s", role.slot, exc)
        return 1
    except Exception:
        log.exception("worker %d failed", role.slot)
        return 1
    return 0


def serve(settings: Settings, processes: int) -> int:
    """Run the gateway in ``processes`` worker processes under a supervisor; exit code."""
    return Supervisor(settings, processes).run()
