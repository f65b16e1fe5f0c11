"""Storage faults against the real gateway process (reliability F13, F14, F16).

Each case runs ``python -m gateway serve`` as a subprocess and breaks its storage for real:

* F13: the data directory is a small tmpfs that the test fills up, first below the
  free-space floor (``452 4.3.1`` at MAIL), then completely while the floor says there is
  room (SQLite gets ``SQLITE_FULL`` and the end of DATA must get ``451 4.3.0``);
* F14: an ``LD_PRELOAD`` shim (``faults/fsync_eio.c``, compiled here with gcc) makes
  ``fsync``/``fdatasync`` fail with EIO while a trigger file exists;
* F16: another process holds the SQLite write lock, or another PostgreSQL connection holds
  ``ACCESS EXCLUSIVE`` on ``messages``, for longer than the store waits.

Every case then checks the suite's invariants (``check_invariants``): each ``250 ...
queued as`` is delivered or still queued, nothing reached the sink unacknowledged (and
nothing twice), nothing refused was stored or delivered, no reply shows internals, and the
process still takes and delivers a fresh transaction. Replies are asserted by basic and
enhanced code: a 5xx for our own storage fault would make the CRM drop the mail for good
(RFC 5321 §6.1; reliability rule 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.storage.postgres.connection import LOCK_TIMEOUT
from gateway.storage.sqlite.connection import BUSY_TIMEOUT_MS
from tests.contract.conftest import PostgresBackend, pg
from tests.integration.conftest import PASSWORD, dot_stuff, message
from tests.procs import (
    GatewayProcess,
    free_port,
    node_config,
    procs,
    set_password,
    start_sqlite_node,
    wait_for,
    write_config,
)
from tests.sinks import Sink
from tests.smtpclient import RawSmtp, Resp

__all__ = ["pg", "procs"]  # fixtures, imported for pytest

pytestmark = pytest.mark.timeout(120)

SENDER = "sales@example-motors.test"
FAULTS = Path(__file__).resolve().parent / "faults"
_LEAKS = re.compile(r"Traceback|File \"|Error:|Exception|\.py\b|line \d+", re.IGNORECASE)
_QUEUED = re.compile(r"queued as (\S+)")
# How long a NOOP may take while the store is stuck: the event loop must stay free.
PROMPT = 1.0


# -- a client that keeps every reply -----------------------------------------------------


class RecordingSmtp(RawSmtp):
    """``RawSmtp`` that keeps every reply it reads, the banner included."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self.log: list[Resp] = []

    @classmethod
    async def open(cls, port: int) -> RecordingSmtp:
        """Connect to the gateway on loopback and read (and keep) the banner."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        client = cls(reader, writer)
        client.banner = await client.read_reply()
        return client

    async def read_reply(self, timeout: float = 10) -> Resp:
        resp = await super().read_reply(timeout)
        self.log.append(resp)
        return resp


@dataclass
class Attempt:
    """One submission: its recipient, its MAIL reply, its last reply and how long DATA took."""

    rcpt: str
    mail: Resp
    final: Resp
    data_seconds: float
    replies: list[Resp]

    @property
    def queued_id(self) -> str | None:
        m = _QUEUED.search(self.final.text) if self.final.code == 250 else None
        return m.group(1) if m else None


@dataclass
class Ledger:
    """Every submission a case made, so the invariants can be checked against all of them."""

    port: int
    attempts: list[Attempt] = field(default_factory=list)

    async def submit(self, rcpt: str, subject: str, body: str | None = None) -> Attempt:
        """Log in, MAIL, RCPT, DATA; stops at the first refusal. Each recipient is unique."""
        assert all(a.rcpt != rcpt for a in self.attempts), f"{rcpt} used twice in one case"
        client = await RecordingSmtp.open(self.port)
        try:
            await client.login("example-crm", PASSWORD)
            mail = await client.cmd(f"MAIL FROM:<{SENDER}>")
            final, seconds = mail, 0.0
            if mail.code == 250:
                final = await client.cmd(f"RCPT TO:<{rcpt}>")
                assert final.code == 250, final
                extra = {} if body is None else {"body": body}
                started = time.monotonic()
                final = await client.data(
                    dot_stuff(message(to=rcpt, subject=subject, **extra)), timeout=60
                )
                seconds = time.monotonic() - started
        finally:
            await client.close()
        attempt = Attempt(rcpt, mail, final, seconds, client.log)
        self.attempts.append(attempt)
        return attempt

    @property
    def acknowledged(self) -> list[Attempt]:
        return [a for a in self.attempts if a.queued_id is not None]

    @property
    def refused(self) -> list[Attempt]:
        return [a for a in self.attempts if a.final.code != 250]


def assert_reply(resp: Resp, code: int, enhanced: str) -> None:
    assert (resp.code, resp.enhanced) == (code, enhanced), resp


def assert_tempfail(attempt: Attempt, code: int, enhanced: str) -> None:
    """A storage fault gets exactly this 4xx: never 250 (not stored), never 5xx (not final)."""
    assert attempt.final.code != 250 and attempt.final.code < 500, attempt.final
    assert_reply(attempt.final, code, enhanced)


# -- what the store holds ------------------------------------------------------------------

Row = tuple[str, str, str]  # (id, rcpt, state)
Rows = Callable[[], Awaitable[list[Row]]]


def sqlite_rows(db: Path) -> Rows:
    async def rows() -> list[Row]:
        # Read-only, from this (other) process: WAL readers never wait for the gateway.
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return [
                (str(i), str(r), str(s))
                for i, r, s in conn.execute("SELECT id, rcpt, state FROM messages WHERE system = 0")
            ]

    return rows


def postgres_rows(url: str) -> Rows:
    async def rows() -> list[Row]:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            found = await conn.fetch("SELECT id, rcpt, state FROM messages WHERE NOT system")
        finally:
            await conn.close()
        return [(str(r["id"]), str(r["rcpt"]), str(r["state"])) for r in found]

    return rows


async def wait_delivered(sink: Sink, rcpts: set[str], node: GatewayProcess, timeout: float) -> None:
    def arrived() -> bool:
        return rcpts <= {r for m in sink.messages for r in m.rcpt_tos}

    await wait_for(arrived, timeout, f"delivery to {sorted(rcpts)}", node)


async def check_invariants(
    ledger: Ledger, sink: Sink, rows: Rows, node: GatewayProcess, canary: str
) -> None:
    """The suite's invariants after a case (reliability section b, "Harness")."""
    assert node.proc is not None and node.proc.poll() is None, "the gateway died"
    for attempt in ledger.attempts:
        for resp in attempt.replies:
            assert not _LEAKS.search(resp.text), f"internals in a reply: {resp}"
    # A fresh transaction is taken and delivered: the fault left nothing wedged.
    fresh = await ledger.submit(canary, "canary")
    assert_reply(fresh.final, 250, "2.0.0")
    await wait_delivered(sink, {canary}, node, 20)
    await asyncio.sleep(0.5)  # a duplicate or a stray delivery would show up now

    stored = await rows()
    delivered = [r for m in sink.messages for r in m.rcpt_tos]
    acknowledged = {a.rcpt: a.queued_id for a in ledger.acknowledged}
    for rcpt, submission in acknowledged.items():
        mine = [(i, s) for i, r, s in stored if r == rcpt]
        assert mine, f"{rcpt} got 250 queued as {submission} but is not in the store"
        assert all(i.startswith(f"{submission}.") for i, _ in mine), (submission, mine)
        # Delivered (and marked so) or still waiting its turn: never lost.
        assert all(s in ("queued", "delivered") for _, s in mine), mine
        assert rcpt in delivered or all(s == "queued" for _, s in mine), (rcpt, mine)
    for rcpt in delivered:
        assert rcpt in acknowledged, f"{rcpt} reached the sink but was never acknowledged"
    assert len(delivered) == len(set(delivered)), f"delivered twice: {sorted(delivered)}"
    for attempt in ledger.refused:
        assert attempt.rcpt not in delivered, f"{attempt.rcpt} was refused yet delivered"
        assert all(r != attempt.rcpt for _, r, _ in stored), f"{attempt.rcpt} refused yet stored"


# -- F13: disk full ------------------------------------------------------------------------


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs to be the gateway's data directory: a disk the test can fill."""
    path = tmp_path / "spool"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(path)],
                   check=True)  # fmt: skip
    try:
        yield path
    finally:
        # Lazy: the gateway (killed by the procs fixture afterwards) may still hold files.
        subprocess.run(["umount", "-l", str(path)], check=False)


async def start_spool_node(
    tmp_path: Path,
    procs: list[GatewayProcess],
    sink_port: int,
    spool: Path,
    min_free_disk: str | None = None,
    data_dir_on_spool: bool = True,
) -> GatewayProcess:
    """A SQLite gateway whose data directory and database are on ``spool``.

    The config file and the process log stay on the ordinary disk, so the log survives
    the disk-full phases and explains any failure.
    """
    node = node_config(tmp_path, "node", sink_port, f"sqlite:///{spool / 'mailgate.db'}")
    config: dict[str, dict[str, Any]] = tomllib.loads(node.config.read_text())
    if data_dir_on_spool:
        config["server"]["data_dir"] = str(spool)
    # 1 MB messages: the floor is 1.5 MB (Postfix's rule), small against the 16 MB disk.
    config["submission"]["max_message_size"] = "1MB"
    if min_free_disk is not None:
        config["storage"]["min_free_disk"] = min_free_disk
    write_config(node.config, config)
    procs.append(node)
    await set_password(node)
    await node.start()
    return node


def fill(path: Path, leave: int) -> Path:
    """Fill ``path``'s filesystem until at most ``leave`` bytes are free."""
    filler = path / "filler"
    # Allocating the exact amount at once can fail (the gateway writes meanwhile), so most
    # of it is allocated in one go and the rest written a block at a time.
    bulk = shutil.disk_usage(path).free - leave - 256 * 1024
    with filler.open("wb", buffering=0) as out:
        if bulk > 0:
            os.posix_fallocate(out.fileno(), 0, bulk)
        out.seek(0, os.SEEK_END)
        with contextlib.suppress(OSError):
            while shutil.disk_usage(path).free > leave:
                out.write(b"\0" * 4096)
    return filler


def big_body(size: int) -> str:
    """A plain-text body of about ``size`` bytes (fits the 1 MB limit, not a free WAL)."""
    line = "Brochure line {:06d}: the new model's specifications and prices follow here.\r\n"
    return "Hello,\r\n\r\n" + "".join(line.format(i) for i in range(size // len(line)))


@pytest.mark.slow
@pytest.mark.parametrize("data_dir_on_spool", [True, False], ids=["data-dir", "db-only"])
async def test_disk_below_floor_refuses_at_mail_until_space_returns(
    tmp_path: Path, procs: list[GatewayProcess], spool: Path, data_dir_on_spool: bool
) -> None:
    """F13 pre-check: free space under 1.5 x max size gives 452 4.3.1 at MAIL; no restart.

    ``db-only``: storage.url puts the database on the small disk and the data directory
    elsewhere; the floor must be measured where the spool is written.
    """
    sink = await Sink().start()
    node = await start_spool_node(
        tmp_path, procs, sink.port, spool, data_dir_on_spool=data_dir_on_spool
    )
    ledger = Ledger(node.port)
    try:
        filler = fill(spool, leave=512 * 1024)
        assert shutil.disk_usage(spool).free < 1_500_000
        for n in range(2):
            refused = await ledger.submit(f"full{n}@example.org", f"disk full {n}")
            # Refused before any data moves: the CRM keeps the message and retries.
            assert_reply(refused.mail, 452, "4.3.1")
            assert refused.final is refused.mail

        filler.unlink()  # the operator frees space; the gateway notices on the next MAIL
        back = await ledger.submit("after@example.org", "space is back")
        assert_reply(back.mail, 250, "2.1.0")
        assert_reply(back.final, 250, "2.0.0")
        await wait_delivered(sink, {"after@example.org"}, node, 20)
        await check_invariants(ledger, sink, sqlite_rows(spool / "mailgate.db"), node, "c@x.org")
    finally:
        await asyncio.to_thread(node.terminate)  # the sink, on this loop, must answer QUIT
        await sink.stop()


@pytest.mark.slow
async def test_write_failing_on_a_full_disk_answers_451_and_recovers(
    tmp_path: Path, procs: list[GatewayProcess], spool: Path
) -> None:
    """F13 at commit: the floor passes but SQLite gets SQLITE_FULL: 451 4.3.0, then recovery.

    ``min_free_disk = 1`` all but switches the pre-check off (a disk with no byte free is
    still refused at MAIL), so with 64 kB left a 600 kB message really reaches the commit.
    Mail accepted before the disk filled keeps flowing while it is still full: claiming and
    completing it write a few WAL frames, which fit in what is left, or in the WAL file
    space the failed commit allocated (the next commit overwrites those frames in place).
    """
    sink = Sink()
    sink_port = free_port()  # the upstream is down at first: mail waits in the queue
    node = await start_spool_node(tmp_path, procs, sink_port, spool, min_free_disk="1")
    ledger = Ledger(node.port)
    db = spool / "mailgate.db"
    try:
        waiting = await ledger.submit("waiting@example.org", "accepted before the disk filled")
        assert_reply(waiting.final, 250, "2.0.0")

        # 64 kB free: above the 1-byte floor, far below what the next message needs.
        filler = fill(spool, leave=64 * 1024)
        assert 0 < shutil.disk_usage(spool).free <= 64 * 1024
        # 600 kB: more than the WAL file has room for, so the commit must grow it.
        refused = await ledger.submit("big@example.org", "brochure", big_body(600_000))
        assert_reply(refused.mail, 250, "2.1.0")  # the floor of 1 byte passed
        assert_tempfail(refused, 451, "4.3.0")
        assert node.proc is not None and node.proc.poll() is None
        assert "enqueue failed" in node.output()
        assert "database or disk is full" in node.output()  # SQLITE_FULL, not the pre-check

        await sink.start(sink_port)  # queued mail flows although the disk is still full
        await wait_delivered(sink, {"waiting@example.org"}, node, 20)
        assert shutil.disk_usage(spool).free <= 64 * 1024

        filler.unlink()
        again = await ledger.submit("again@example.org", "brochure again", big_body(600_000))
        assert_reply(again.final, 250, "2.0.0")
        await wait_delivered(sink, {"again@example.org"}, node, 20)
        await check_invariants(ledger, sink, sqlite_rows(db), node, "canary@example.org")
    finally:
        await asyncio.to_thread(node.terminate)  # the sink, on this loop, must answer QUIT
        await sink.stop()


# -- F14: EIO from fsync -------------------------------------------------------------------


def build_shim(tmp_path: Path) -> Path:
    """Compile the fsync/fdatasync EIO shim; a missing compiler fails the test, never skips."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail(
            "gcc is needed to build tests/abuse/faults/fsync_eio.c (install build-essential)"
        )
    shim = tmp_path / "fsync_eio.so"
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror",
         "-o", str(shim), str(FAULTS / "fsync_eio.c"), "-ldl"],
        check=True,
    )  # fmt: skip
    return shim


@pytest.mark.slow
async def test_fsync_eio_answers_451_and_the_retry_is_stored_afresh(
    tmp_path: Path, procs: list[GatewayProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """F14: with fsync failing, DATA gets 451 4.3.0; afterwards mail is taken and delivered.

    Why a retry after EIO is safe (fsyncgate): after a failed fsync Linux may mark the
    dirty pages clean, so calling fsync again and trusting its success would be a lie.
    SQLite never does that. In WAL mode the commit writes the frames, then syncs the WAL
    (``synchronous=FULL``), and only after a successful sync publishes the commit in the
    wal-index. A failed sync returns SQLITE_IOERR_FSYNC, the transaction is rolled back and
    the commit is never published; the pager drops its cache and re-reads. The CRM's retry
    is a new transaction whose frames are written again from the start of the unpublished
    region and synced again: fresh data under a fresh fsync. Likewise a checkpoint whose
    fsync of the database fails does not advance the backfill mark, so those pages are
    copied again by the next checkpoint rather than assumed on disk.

    One caveat, measured outside this test: the failed transaction's frames stay in the WAL
    file until the next commit overwrites them. If the process crashed before any other
    write, WAL recovery (which trusts any checksummed frame chain ending in a commit frame)
    would bring that message back, and the CRM's retry would then be a duplicate: one copy
    too many, never one too few (reliability rule 4). Without a crash, as here, a 451'd
    message is never delivered.
    """
    shim = build_shim(tmp_path)
    trigger = tmp_path / "eio-on"
    injected = tmp_path / "eio.log"
    # Inherited by the gateway (GatewayProcess copies os.environ); restored after the test.
    monkeypatch.setenv("LD_PRELOAD", str(shim))
    monkeypatch.setenv("MAILGATE_FSYNC_EIO_TRIGGER", str(trigger))
    monkeypatch.setenv("MAILGATE_FSYNC_EIO_LOG", str(injected))
    sink = await Sink().start()
    db = tmp_path / "node" / "mailgate.db"
    node = await start_sqlite_node(tmp_path, procs, sink.port, db)
    ledger = Ledger(node.port)
    try:
        assert node.proc is not None
        maps = Path(f"/proc/{node.proc.pid}/maps").read_text()
        assert str(shim) in maps, "the shim is not loaded into the gateway"
        before = await ledger.submit("before@example.org", "before the fault")
        assert_reply(before.final, 250, "2.0.0")
        await wait_delivered(sink, {"before@example.org"}, node, 20)

        trigger.touch()
        for n in range(3):
            failed = await ledger.submit(f"eio{n}@example.org", f"fsync fails {n}")
            assert_tempfail(failed, 451, "4.3.0")
        assert node.proc.poll() is None
        assert injected.read_text().strip(), "the shim never failed an fsync"
        trigger.unlink()

        after = await ledger.submit("after@example.org", "after the fault")
        assert_reply(after.final, 250, "2.0.0")
        await wait_delivered(sink, {"after@example.org"}, node, 20)
        await check_invariants(ledger, sink, sqlite_rows(db), node, "canary@example.org")
        delivered = sorted(r for m in sink.messages for r in m.rcpt_tos)
        assert delivered == ["after@example.org", "before@example.org", "canary@example.org"]
    finally:
        await asyncio.to_thread(node.terminate)  # the sink, on this loop, must answer QUIT
        await sink.stop()


# -- F16: a slow (locked) database ------------------------------------------------------------


async def noop_latencies(port: int, until: asyncio.Future[Any]) -> list[float]:
    """EHLO, then NOOP every 0.3 s on other sessions until ``until`` is done; reply times.

    A session is replaced after 50 NOOPs: the listener caps NOOPs per session at 100
    (reliability A13), and a hung store would otherwise show up as that cap instead.
    """
    latencies: list[float] = []
    while not until.done():
        client = await RawSmtp.connect("127.0.0.1", port, timeout=PROMPT * 5)
        try:
            started = time.monotonic()
            assert (await client.cmd("EHLO second.test", timeout=PROMPT * 5)).code == 250
            latencies.append(time.monotonic() - started)
            for _ in range(50):
                if until.done():
                    break
                started = time.monotonic()
                assert_reply(await client.cmd("NOOP", timeout=PROMPT * 5), 250, "2.0.0")
                latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.3)
        finally:
            await client.close()
    return latencies


async def submit_while_stuck(ledger: Ledger, rcpt: str) -> tuple[Attempt, list[float]]:
    """One submission, with a second session's NOOPs timed while it waits on the store."""
    task = asyncio.ensure_future(ledger.submit(rcpt, "while the store is stuck"))
    latencies = await noop_latencies(ledger.port, task)
    return await task, latencies


@pytest.mark.slow
async def test_sqlite_write_lock_held_elsewhere_gives_bounded_451(
    tmp_path: Path, procs: list[GatewayProcess]
) -> None:
    """F16 on SQLite: BEGIN EXCLUSIVE in another process; 451 4.3.0 after the busy timeout."""
    sink = await Sink().start()
    db = tmp_path / "node" / "mailgate.db"
    node = await start_sqlite_node(tmp_path, procs, sink.port, db)
    ledger = Ledger(node.port)
    busy = BUSY_TIMEOUT_MS / 1000
    holder = sqlite3.connect(db, isolation_level=None, timeout=10)
    try:
        # In WAL mode EXCLUSIVE is the write lock (readers go on): AUTH, MAIL and RCPT read
        # and still work; only the commit at the end of DATA has to wait for it.
        holder.execute("BEGIN EXCLUSIVE")
        locked_at = time.monotonic()
        attempt, latencies = await submit_while_stuck(ledger, "locked@example.org")
        assert_tempfail(attempt, 451, "4.3.0")
        # Bounded by the busy timeout alone: a delivery poll queued ahead of the commit on
        # the writer thread used to add its own full timeout (10 s here, before the fix
        # that counts the timeout from when a call is asked for), plus 2 s of slack.
        assert busy * 0.8 <= attempt.data_seconds <= busy + 2, attempt.data_seconds
        assert time.monotonic() - locked_at > busy  # the lock outlived the store's patience
        assert max(latencies) < PROMPT, latencies  # the event loop was never blocked
        assert len(latencies) >= 5, latencies
        holder.execute("ROLLBACK")

        after = await ledger.submit("unlocked@example.org", "lock released")
        assert_reply(after.final, 250, "2.0.0")
        await wait_delivered(sink, {"unlocked@example.org"}, node, 20)
        await check_invariants(ledger, sink, sqlite_rows(db), node, "canary@example.org")
    finally:
        holder.close()
        await asyncio.to_thread(node.terminate)  # the sink, on this loop, must answer QUIT
        await sink.stop()


@pytest.mark.slow
@pytest.mark.postgres
async def test_postgres_table_lock_held_elsewhere_gives_bounded_451(
    tmp_path: Path, procs: list[GatewayProcess], pg: PostgresBackend
) -> None:
    """F16 on PostgreSQL: ACCESS EXCLUSIVE on messages; 451 4.3.0 after ``lock_timeout``."""
    sink = await Sink().start()
    node = node_config(tmp_path, "node", sink.port, pg.url)
    procs.append(node)
    await set_password(node)
    await node.start()
    ledger = Ledger(node.port)
    holder = await asyncpg.connect(pg.url, timeout=5)
    try:
        lock = holder.transaction()
        await lock.start()
        await holder.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        locked_at = time.monotonic()
        attempt, latencies = await submit_while_stuck(ledger, "locked@example.org")
        assert_tempfail(attempt, 451, "4.3.0")
        # The insert waits LOCK_TIMEOUT, then fails; without it the wait was the client's
        # 60 s command timeout, as long as the lock was held.
        assert attempt.data_seconds <= LOCK_TIMEOUT + 3, attempt.data_seconds
        assert time.monotonic() - locked_at > LOCK_TIMEOUT * 0.8
        assert max(latencies) < PROMPT, latencies
        await lock.rollback()

        after = await ledger.submit("unlocked@example.org", "lock released")
        assert_reply(after.final, 250, "2.0.0")
        await wait_delivered(sink, {"unlocked@example.org"}, node, 20)
        await check_invariants(ledger, sink, postgres_rows(pg.url), node, "canary@example.org")
    finally:
        await holder.close()
        await asyncio.to_thread(node.terminate)  # the sink, on this loop, must answer QUIT
        await sink.stop()
