"""F3 and F24 (reliability.md, section F): what the disk has seen when ``250`` goes out.

Promise (a)(1): 250 only after the spool entry and its index row are durable. With the
SQLite store both are one row of ``messages`` (its data, and its primary-key entry)
committed in WAL mode with ``synchronous=FULL``. "Durable" therefore means: the WAL frames
holding the row, up to the transaction's commit frame, are written and the WAL file is
fsynced; and a WAL file created during the run must also have had its directory synced,
or the file itself may be missing after a power cut.

One real gateway process runs under strace while six messages are submitted on three
concurrent connections. Both tests read that one trace:

* F3 proves the order for every ``250 … queued as``: row pwrite, commit frame pwrite,
  WAL fsync, then the reply on the client socket.
* F24 rebuilds the database files a power cut at the last 250 would leave (a LazyFS-like
  model: every write not followed by a sync of its file is lost) and opens them with sqlite3.

Reading the trace: order is the order of lines in the trace file; ``-ttt`` times are only
used for the figures. strace handles one ptrace stop at a time and prints each stop before
it lets that thread run on: a syscall's completion is printed while its thread is still
held at syscall exit. The SQLite commit runs on the store's writer thread and the 250 is
written by the event loop thread, which can only do so after the writer returned from
fdatasync and the commit's future was resolved; so in a correct gateway the sync's
completion line always comes before the line where the reply's write starts. When another
thread's stop comes between a syscall's entry and exit, strace splits the line into
``<unfinished ...>`` (entry) and ``<... resumed>`` (exit); the parser keeps both positions
and the checks compare a sync's *completion* with the reply's *start*. The converse is not
airtight: two stops that happen within microseconds of each other may be reported out of
kernel order, so a gateway that raced its 250 against the sync could, in principle, pass one
run. A WAL sync takes milliseconds here, so such a bug shows in practice. The timestamps
would not help: strace takes them when it prints, so they carry the same ordering.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.integration.conftest import PASSWORD, dot_stuff, message
from tests.procs import REPO, free_port, node_config, set_password
from tests.smtpclient import RawSmtp

pytestmark = pytest.mark.timeout(120)

CONNECTIONS = 3
PER_CONNECTION = 2

# Syscalls that write, sync, or change which file an fd or a name refers to. A "?" prefix
# makes strace accept names that the machine's architecture lacks (aarch64 has no dup2,
# rename or unlink). fcntl is here for F_DUPFD; accept4 marks the client sockets.
TRACED = (
    "openat", "close", "dup", "?dup2", "dup3", "fcntl", "accept4",
    "pwrite64", "pwritev", "pwritev2", "write", "writev", "sendto", "sendmsg",
    "fsync", "fdatasync", "sync_file_range", "ftruncate", "fallocate",
    "?unlink", "unlinkat", "?rename", "renameat", "renameat2",
)  # fmt: skip
SYNCS = ("fsync", "fdatasync")
CLIENT = "<client socket>"
QUEUED = re.compile(rb"250 2\.0\.0 queued as (\S+)\r\n")

_LINE = re.compile(r"^(\d+) +(\d+\.\d+) (.*)$")
_CALL = re.compile(r"^(\w+)\((.*)$", re.DOTALL)
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_UNFINISHED = " <unfinished ...>"
_RESULT = re.compile(r"^(.*)\) += (-?\d+|0x[0-9a-f]+|\?)(?: .*)?$")
# With -xx every byte of every string argument is printed as \xHH; "..." means cut at -s.
_STRING = re.compile(r'"((?:\\x[0-9a-f]{2})*)"(\.\.\.)?')
_PWRITE = re.compile(r'^(\d+), "((?:\\x[0-9a-f]{2})*)"(\.\.\.)?, (\d+), (\d+)$')
_OPENAT = re.compile(r'^(AT_FDCWD|\d+), "((?:\\x[0-9a-f]{2})*)", ([A-Z_|0-9x]+)(?:, \d+)?$')


# -- the trace -----------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Call:
    """One completed syscall of the trace."""

    tid: int
    name: str
    args: str  # the argument text, strings still \xHH-escaped
    ret: int | None  # None: it never returned (the process was killed inside it)
    entry: int  # trace position of its start: its line, or its "unfinished" half
    done: int  # trace position of its completion: its line, or its "resumed" half
    when: float  # -ttt time of the completion line (figures only)
    path: str | None = None  # what its fd names (for openat: what it opened)

    def __repr__(self) -> str:
        # Short: a failing assertion prints these, and a WAL page is 16 kB of escapes.
        return (
            f"<{self.name}({self.args[:40]}…) = {self.ret} tid {self.tid} "
            f"at {self.entry}..{self.done} on {self.path}>"
        )

    @property
    def fd(self) -> int | None:
        head = self.args.split(",", 1)[0]
        return int(head) if head.isdigit() else None

    def strings(self) -> list[bytes]:
        """The string arguments, decoded; fails on one that strace cut short."""
        out: list[bytes] = []
        for match in _STRING.finditer(self.args):
            assert not match[2], f"strace cut a string argument short (raise -s): {self}"
            out.append(_unhex(match[1]))
        return out


def _unhex(escaped: str) -> bytes:
    return bytes.fromhex(escaped.replace("\\x", ""))


def parse_trace(text: str) -> list[Call]:
    """Calls in order of completion; positions are 2 × line number (odd ones stay free)."""
    calls: list[Call] = []
    pending: dict[int, tuple[str, str, int]] = {}
    for index, line in enumerate(text.splitlines()):
        pos = 2 * index
        head = _LINE.match(line)
        if head is None:
            raise ValueError(f"unexpected trace line {index + 1}: {line[:200]!r}")
        tid, when, rest = int(head[1]), float(head[2]), head[3]
        if rest.startswith(("+++", "---")):  # exits and signals
            continue
        resumed = _RESUMED.match(rest)
        if resumed is not None:
            name, start, entry = pending.pop(tid)
            assert name == resumed[1], line
            text_ = start + resumed[2]
        elif rest.endswith(_UNFINISHED):
            call = _CALL.match(rest[: -len(_UNFINISHED)])
            assert call is not None, line
            pending[tid] = (call[1], call[2], pos)
            continue
        else:
            call = _CALL.match(rest)
            assert call is not None, line
            name, text_, entry = call[1], call[2], pos
        result = _RESULT.match(text_)
        assert result is not None, line
        ret = None if result[2] == "?" else int(result[2], 0)
        calls.append(Call(tid, name, result[1], ret, entry, pos, when))
    return calls


def name_fds(calls: Sequence[Call], cwd: Path) -> list[Call]:
    """Each call with the path its fd refers to, from the openat/accept4/dup/close calls.

    Calls are taken in order of completion and the table is for one process: the gateway
    starts no children, and its threads share one fd table.
    """
    fds: dict[int, str] = {}
    named: list[Call] = []
    for call in calls:
        path = fds.get(call.fd) if call.fd is not None else None
        ok = call.ret is not None and call.ret >= 0
        if call.name == "openat" and ok and call.ret is not None:
            opened = _OPENAT.match(call.args)
            assert opened is not None, call
            base = cwd if opened[1] == "AT_FDCWD" else Path(fds[int(opened[1])])
            path = os.path.normpath(base / _unhex(opened[2]).decode())
            fds[call.ret] = path
        elif call.name == "accept4" and ok and call.ret is not None:
            path = fds[call.ret] = CLIENT
        elif call.name in ("dup", "dup2", "dup3") and ok and call.ret is not None and path:
            fds[call.ret] = path
        elif call.name == "fcntl" and "F_DUPFD" in call.args and ok and call.ret is not None:
            if path:
                fds[call.ret] = path
        elif call.name == "close" and call.fd is not None:
            fds.pop(call.fd, None)
        named.append(replace(call, path=path))
    return named


# -- F3: the order -------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Pwrite:
    call: Call
    offset: int
    data: bytes

    def __repr__(self) -> str:
        return f"<{len(self.data)} bytes at offset {self.offset}: {self.call!r}>"


def pwrites(calls: Sequence[Call], path: str) -> list[Pwrite]:
    out: list[Pwrite] = []
    for call in calls:
        if call.name != "pwrite64" or call.path != path:
            continue
        match = _PWRITE.match(call.args)
        assert match is not None, call
        assert not match[3], f"strace cut a pwrite short (raise -s): {call}"
        data = _unhex(match[2])
        assert call.ret == len(data) == int(match[4]), f"short or failed pwrite: {call}"
        out.append(Pwrite(call, int(match[5]), data))
    return out


def replies(calls: Sequence[Call]) -> dict[str, Call]:
    """Submission id → the write of its ``250 … queued as`` on a client socket."""
    out: dict[str, Call] = {}
    for call in calls:
        if call.path != CLIENT or call.name not in ("write", "writev", "sendto", "sendmsg"):
            continue
        data = b"".join(call.strings())
        for match in QUEUED.finditer(data):
            assert call.ret == len(data), f"the 250 went out short: {call}"
            submission = match[1].decode()
            assert submission not in out, f"two replies for {submission}"
            out[submission] = call
    return out


def _first_sync(calls: Sequence[Call], path: str, after: int, what: str) -> Call:
    """The first successful fsync/fdatasync of ``path`` that started after ``after``."""
    for call in calls:
        if call.name in SYNCS and call.ret == 0 and call.path == path and call.entry > after:
            return call
    raise AssertionError(f"not in the trace: {what}")


@dataclass(frozen=True)
class Proof:
    """For one 250: the WAL writes and the sync that made its row durable, in order."""

    submission: str
    reply: Call
    row: Call  # first pwrite of a WAL page holding the row (id and message text)
    commit: Call  # pwrite of the commit frame's page that ends that transaction
    sync: Call  # first successful fsync/fdatasync of the WAL after the commit frame
    syncs: int  # successful WAL syncs between the row's pwrite and the 250


def prove_ordering(
    calls: Sequence[Call], db: Path, acked: dict[str, bytes], wal_is_new: bool
) -> list[Proof]:
    """Assert, for every acknowledged message, durable-before-250; return the evidence.

    ``acked`` maps each submission id to a text only its message contains. Raises
    AssertionError on the first message whose 250 started before its commit was synced.
    """
    wal = f"{db}-wal"
    writes = pwrites(calls, wal)
    sent = replies(calls)
    assert set(sent) == set(acked), f"250s in the trace {sorted(sent)} != acked {sorted(acked)}"
    wal_syncs = [c for c in calls if c.name in SYNCS and c.path == wal and c.ret == 0]
    proofs: list[Proof] = []
    for submission, token in acked.items():
        reply = sent[submission]
        key = f"{submission}.1".encode()  # messages.id of its only recipient
        # A page holding the row: small messages sit inside one page with their id.
        row = next(
            (w for w in writes if len(w.data) > 24 and key in w.data and token in w.data), None
        )
        assert row is not None, f"{submission}: its row was never written to the WAL"
        assert row.call.done < reply.entry, f"{submission}: 250 before its row was written"
        # Its frame header is the 24-byte pwrite just before it at offset - 24. SQLite
        # writes each frame as header then page; the frames of one transaction follow each
        # other (one writer at a time), and the commit frame's header carries the database
        # size after the commit (bytes 4-8, zero in the other frames).
        header = next(
            (w for w in reversed(writes)
             if w.call.done < row.call.entry and len(w.data) == 24
             and w.offset == row.offset - 24),
            None,
        )  # fmt: skip
        assert header is not None, f"{submission}: no WAL frame header before its row"
        commit_header = next(
            (w for w in writes
             if w.call.entry >= header.call.entry and len(w.data) == 24
             and int.from_bytes(w.data[4:8], "big") != 0),
            None,
        )  # fmt: skip
        assert commit_header is not None, f"{submission}: its transaction never committed"
        commit = next(
            (w for w in writes
             if w.call.entry > commit_header.call.done and w.offset == commit_header.offset + 24),
            None,
        )  # fmt: skip
        assert commit is not None, f"{submission}: no page after its commit frame header"
        assert commit.call.done < reply.entry, f"{submission}: 250 before its commit frame"
        sync = _first_sync(
            calls, wal, commit.call.done, f"{submission}: a WAL sync after its commit frame"
        )
        assert sync.done < reply.entry, (
            f"{submission}: 250 started (trace position {reply.entry}) before the WAL sync "
            f"that covers its commit completed (position {sync.done}): {sync}"
        )
        if wal_is_new:
            # A file made in this run exists after a power cut only once its directory entry
            # is synced (SQLite syncs the directory after the WAL's first sync).
            created = next(c for c in calls if c.name == "openat" and c.path == wal)
            dir_sync = _first_sync(
                calls,
                str(db.parent),
                created.done,
                "a data directory sync after the WAL's creation",
            )
            assert dir_sync.done < reply.entry, f"{submission}: 250 before the WAL's dir sync"
        between = sum(1 for c in wal_syncs if row.call.done < c.entry and c.done < reply.entry)
        proofs.append(Proof(submission, reply, row.call, commit.call, sync, between))
    return proofs


# -- F24: the power cut --------------------------------------------------------------------


class Unmodelled(AssertionError):
    """The trace holds a file operation the power-cut model does not replay."""


@dataclass(frozen=True)
class Cut:
    files: dict[str, bool]  # database file name → exists after the cut
    replayed: int  # writes that reached the disk
    lost: int  # writes still unsynced at the cut


def power_cut(calls: Sequence[Call], db: Path, snapshot: Path, cut: int, out: Path) -> Cut:
    """Write to ``out`` the database files as a power cut at trace position ``cut`` leaves them.

    The model, after LazyFS (dsrhaslab/lazyfs) with its cache cleared at the cut:
    * start from ``snapshot``, the files as they were with the gateway stopped;
    * a pwrite or ftruncate reaches the disk only if an fsync/fdatasync of the same file
      started after it completed and itself completed before the cut; all others are lost;
    * a file created during the run exists only if its directory was synced after the
      creation and before the cut;
    * the -shm file is never replayed: SQLite rebuilds the wal-index from the WAL.

    What it does not capture: unsynced writes that partly survive (any subset, in any order,
    which real disks allow and SQLite's WAL checksums are there for); torn sectors inside a
    synced write's neighbours; a device or cache that acknowledges a flush it has not done;
    metadata other than creation (size changes ride with the data syncs here); and
    fdatasync is taken to be as good as fsync, which holds for data and the file size.
    """
    names = {db.name, f"{db.name}-wal", f"{db.name}-journal"}
    data_dir = str(db.parent)
    durable: dict[str, bytearray] = {}
    linked: set[str] = set()
    created: dict[str, int] = {}
    pending: dict[str, list[tuple[int, int, bytes | None]]] = {n: [] for n in names}
    replayed = 0
    for name in names:
        if (snapshot / name).exists():
            durable[name] = bytearray((snapshot / name).read_bytes())
            linked.add(name)

    def ours(path: str | None) -> str | None:
        if path is None or os.path.dirname(path) != data_dir:
            return None
        base = os.path.basename(path)
        return base if base in names else None

    for call in calls:
        if call.done >= cut:
            break
        target = ours(call.path)
        if call.name in ("unlink", "unlinkat", "rename", "renameat", "renameat2"):
            touched = [s for s in call.strings() if os.path.basename(s.decode()) in names]
            if touched and call.ret == 0:
                raise Unmodelled(f"unlink/rename of a database file before the cut: {call}")
            continue
        if target is None or call.ret is None or call.ret < 0:
            continue
        if call.name == "openat":
            if "O_TRUNC" in call.args:
                raise Unmodelled(f"open with O_TRUNC: {call}")
            if target not in durable:
                durable[target] = bytearray()
                created[target] = call.done
        elif call.name == "pwrite64":
            (write,) = pwrites([call], call.path or "")
            pending[target].append((call.done, write.offset, write.data))
        elif call.name == "ftruncate":
            pending[target].append((call.done, int(call.args.split(", ")[1]), None))
        elif call.name in SYNCS:
            content = durable[target]
            keep: list[tuple[int, int, bytes | None]] = []
            for done, offset, data in pending[target]:
                if done > call.entry:  # another thread's write that the sync may miss
                    keep.append((done, offset, data))
                    continue
                replayed += 1
                if data is None:
                    del content[offset:]
                    content.extend(b"\0" * (offset - len(content)))
                else:
                    content.extend(b"\0" * (offset - len(content)))
                    content[offset : offset + len(data)] = data
            pending[target] = keep
        elif call.name in ("write", "writev", "pwritev", "pwritev2", "fallocate"):
            raise Unmodelled(f"{call.name} on a database file: {call}")
        # close, fcntl locks, dup: nothing reaches the disk
    for call in calls:
        if call.done >= cut:
            break
        if call.name in SYNCS and call.ret == 0 and call.path == data_dir:
            linked.update(n for n, at in created.items() if at < call.entry)
    out.mkdir(parents=True)
    for name in linked:
        (out / name).write_bytes(bytes(durable[name]))
    lost = sum(len(ops) for ops in pending.values())
    return Cut({name: name in linked for name in sorted(names)}, replayed, lost)


def stored_messages(db: Path) -> dict[str, bytes]:
    """messages.id → data, read by a fresh SQLite that recovers whatever WAL it finds."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return {row[0]: bytes(row[1]) for row in conn.execute("SELECT id, data FROM messages")}
    finally:
        conn.close()


# -- the run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TracedRun:
    calls: list[Call]
    acked: dict[str, bytes]  # submission id → the text only its message holds, in reply order
    db: Path
    snapshot: Path  # the data directory's database files before the traced run
    wal_is_new: bool
    seconds: float


async def _submit(port: int, connection: int, tag: str) -> list[tuple[str, bytes]]:
    """Several messages on one plaintext session; (submission id, its token) per 250."""
    client = await RawSmtp.connect("127.0.0.1", port)
    out: list[tuple[str, bytes]] = []
    try:
        assert (await client.cmd("EHLO crm.test")).code == 250
        assert (await client.auth_plain("example-crm", PASSWORD)).code == 235
        for n in range(PER_CONNECTION):
            token = f"durability-{tag}-{connection}-{n}"
            to = f"c{connection}-{n}@example.org"
            assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
            assert (await client.cmd(f"RCPT TO:<{to}>")).code == 250
            body = f"Hello,\r\n\r\n{token}\r\n"
            reply = await client.data(dot_stuff(message(to=to, subject=token, body=body)))
            found = re.fullmatch(r"2\.0\.0 queued as (\S+)", reply.text)
            assert reply.code == 250 and found is not None, reply
            out.append((found[1], token.encode()))
    finally:
        await client.close()
    return out


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def _traced_run(tmp: Path, strace: str) -> TracedRun:
    # Upstream down (nothing listens on the sink port): every write on a client socket is
    # then an SMTP reply, and no outgoing session writes message text to a socket. Each
    # message still gets one delivery attempt that fails at connect and is recorded by a
    # write transaction of its own (first_retry 1 h: one attempt each), so enqueue commits
    # share the writer thread with other commits, as in production.
    node = node_config(tmp, "node", free_port(), f"sqlite:///{tmp}/node/mailgate.db",
                       first_retry="1h")  # fmt: skip
    # Plaintext AUTH on loopback, so the 250 is readable in the trace (under STARTTLS it is
    # a TLS record). The storage path does not depend on the transport.
    config = node.config.read_text().replace(
        "[submission]\n", "[submission]\nrequire_tls = false\n"
    )
    assert "require_tls" in config
    node.config.write_text(config)
    await set_password(node)
    db = tmp / "node" / "mailgate.db"
    snapshot = tmp / "snapshot"
    snapshot.mkdir()
    for name in (db.name, f"{db.name}-wal", f"{db.name}-journal"):
        if (db.parent / name).exists():
            shutil.copy2(db.parent / name, snapshot / name)
    trace = tmp / "strace.out"
    prefix = [
        strace, "-f", "-ttt", "-xx", "-s", "65536", "-o", str(trace),
        # Only the traced syscalls stop the process: startup stays within a few seconds.
        "--seccomp-bpf", "-e", "trace=" + ",".join(TRACED),
    ]  # fmt: skip
    started = time.monotonic()
    try:
        await node.start(timeout=30, prefix=prefix)
        tag = uuid.uuid4().hex[:8]
        batches = await asyncio.gather(*(_submit(node.port, c, tag) for c in range(CONNECTIONS)))
        # The client can read a reply before strace has handled the exit of the send that
        # wrote it; a SIGKILL in that gap leaves the send "= ?" in the trace. Let strace
        # catch up first.
        await asyncio.sleep(0.5)
    finally:
        # SIGKILL the gateway, not strace: strace then writes the rest and exits; killed
        # itself it would leave the gateway running, detached. The power cut is modelled at
        # the last 250, so nothing after it matters; a clean shutdown would only add calls.
        if node.proc is not None:
            if node.proc.poll() is None:
                for pid in _children(node.proc.pid):
                    os.kill(pid, signal.SIGKILL)
            try:
                node.proc.wait(20)
            except subprocess.TimeoutExpired:
                node.kill()
    elapsed = time.monotonic() - started
    calls = name_fds(parse_trace(trace.read_text()), REPO)
    sent = replies(calls)
    acked = dict(sorted((pair for batch in batches for pair in batch),
                        key=lambda pair: sent[pair[0]].entry))  # fmt: skip
    wal_is_new = not (snapshot / f"{db.name}-wal").exists()
    return TracedRun(calls, acked, db, snapshot, wal_is_new, elapsed)


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedRun]:
    strace = shutil.which("strace")
    if strace is None:
        pytest.fail("strace is not installed (apt-get install -y strace); F3/F24 need it")
    yield asyncio.run(_traced_run(tmp_path_factory.mktemp("durability"), strace))


# -- the tests -----------------------------------------------------------------------------


@pytest.mark.slow
def test_f3_every_250_follows_the_wal_sync_of_its_commit(traced: TracedRun) -> None:
    proofs = prove_ordering(traced.calls, traced.db, traced.acked, traced.wal_is_new)
    assert len(proofs) == CONNECTIONS * PER_CONNECTION
    commits = len({p.sync.done for p in proofs})
    print(
        f"\nF3: {len(proofs)} messages, {commits} covering WAL syncs, traced run "
        f"{traced.seconds:.1f} s, WAL created in the run: {traced.wal_is_new}"
    )
    for p in proofs:
        print(
            f"  {p.submission}: WAL syncs between row write and 250: {p.syncs}; "
            f"sync done → 250: {(p.reply.when - p.sync.when) * 1000:.2f} ms"
        )
    # The check is not vacuous: the same trace with the last message's covering sync moved
    # to just after its 250 (a gateway that answers before the sync finishes) must fail.
    last = proofs[-1]
    moved = replace(last.sync, entry=last.reply.done + 1, done=last.reply.done + 1)
    reordered = sorted([c for c in traced.calls if c != last.sync] + [moved], key=lambda c: c.done)
    with pytest.raises(AssertionError, match="250 started"):
        prove_ordering(reordered, traced.db, traced.acked, traced.wal_is_new)
    # And so with no sync at all (what synchronous=OFF would give).
    unsynced = [c for c in traced.calls if c.name not in SYNCS]
    with pytest.raises(AssertionError, match="a WAL sync after its commit frame"):
        prove_ordering(unsynced, traced.db, traced.acked, traced.wal_is_new)


@pytest.mark.slow
def test_f24_power_cut_at_the_last_250_keeps_every_acknowledged_message(
    traced: TracedRun, tmp_path: Path
) -> None:
    wal = f"{traced.db.name}-wal"
    last_id = list(traced.acked)[-1]
    cut = replies(traced.calls)[last_id].entry
    at_cut = power_cut(traced.calls, traced.db, traced.snapshot, cut, tmp_path / "at-last-250")
    assert at_cut.files[wal], "the WAL file itself would be lost"
    recovered = stored_messages(tmp_path / "at-last-250" / traced.db.name)
    for submission, token in traced.acked.items():
        data = recovered.get(f"{submission}.1")
        assert data is not None, f"acknowledged {submission} lost in the power cut"
        assert b"Subject: " + token in data and token + b"\r\n" in data, submission

    # Not vacuous: cut just before the sync that covers the last message's commit. The
    # model must then lose that message, and keep every message synced before.
    proofs = prove_ordering(traced.calls, traced.db, traced.acked, traced.wal_is_new)
    last = proofs[-1]
    early = power_cut(
        traced.calls, traced.db, traced.snapshot, last.sync.entry, tmp_path / "before-sync"
    )
    survivors = stored_messages(tmp_path / "before-sync" / traced.db.name)
    assert f"{last_id}.1" not in survivors, "dropping the covering sync lost nothing"
    for p in proofs:
        if p.sync.done < last.sync.entry:
            assert f"{p.submission}.1" in survivors, f"{p.submission} lost though synced"
    kept = sum(f"{p.submission}.1" in survivors for p in proofs)

    # Nor is the file-creation part: without the directory syncs a WAL made in this run
    # is gone, and every message with it.
    if traced.wal_is_new:
        no_dir_sync = [
            c for c in traced.calls if not (c.name in SYNCS and c.path == str(traced.db.parent))
        ]
        unlinked = power_cut(no_dir_sync, traced.db, traced.snapshot, cut, tmp_path / "no-dir")
        assert not unlinked.files[wal]
        assert not set(stored_messages(tmp_path / "no-dir" / traced.db.name)) & {
            f"{s}.1" for s in traced.acked
        }
    print(f"\nF24: {len(traced.acked)} acknowledged, all recovered from {at_cut.replayed} synced "
          f"writes ({at_cut.lost} unsynced dropped); cut before the last covering sync: "
          f"{kept} kept, {len(proofs) - kept} lost ({early.lost} writes dropped)")  # fmt: skip
