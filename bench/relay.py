"""Relay benchmark: the gateway against a minimal relay made of the same parts.

For each target (``gateway``, ``minimal``) and each repeat, a fresh SMTP sink and a fresh
target process are started on loopback; ``--concurrency`` real SMTP sessions (EHLO,
STARTTLS, EHLO, AUTH PLAIN once, then MAIL/RCPT/DATA in a loop) submit ``--messages``
messages of ``--size`` bytes; the run ends when the sink has counted every accepted
message. Targets alternate between repeats, and the report gives the median of each
figure, because on a shared machine only comparisons within one run mean much.

Run from the repository root with the project's virtualenv::

    .venv/bin/python bench/relay.py --messages 4000 --concurrency 20 --size 10240

See bench/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.smtpclient import RawSmtp, Resp  # noqa: E402

HOST = "127.0.0.1"
DEALER = "example-motors"
USERNAME = "example-crm"
PASSWORD = "bench-password-0123456789"
SENDER = "sales@example-motors.test"
CLK_TCK = os.sysconf("SC_CLK_TCK")
EXPECTED_LOG_LINES = (
    # The gateway generates a self-signed certificate when none is configured, and says so.
    re.compile(r"NO TLS CERTIFICATE CONFIGURED"),
)
LOG_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback|Exception")


class BenchError(Exception):
    """The benchmark could not run (a target did not start, too many failures, ...)."""


# --------------------------------------------------------------------------------------
# Child processes


class Children:
    """Every child process the benchmark started, each in its own process group."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def spawn(
        self, argv: Sequence[str], log: Path, env: dict[str, str], cwd: Path
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` with stdout and stderr going to ``log``."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """SIGTERM the process group, then SIGKILL it after ``grace`` seconds."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
        # Also whatever the child left behind in its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        """Stop every child still known (used on exit, failure and Ctrl-C)."""
        for proc in list(self._procs):
            self.stop(proc, grace=2.0)


CHILDREN = Children()
atexit.register(CHILDREN.stop_all)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for children: ours without MAILGATE_* overrides, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


async def wait_for_banner(
    port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    """Wait until ``port`` answers with a 220 banner; fail if the process exits first."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(
                f"{' '.join(map(str, proc.args))} exited with {proc.returncode}:\n{log_tail(log)}"
            )
        try:
            client = await RawSmtp.connect(HOST, port, timeout=5)
        except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
            last = repr(exc)
            await asyncio.sleep(0.2)
            continue
        banner = client.banner
        await client.close()
        if banner is not None and banner.code == 220:
            return
        last = str(banner)
        await asyncio.sleep(0.2)
    raise BenchError(
        f"port {port} gave no 220 banner in {timeout:.0f} s ({last}):\n{log_tail(log)}"
    )


# --------------------------------------------------------------------------------------
# /proc accounting


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(entry.name)] = int(rest[1])
    tree, frontier = [root], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        tree.extend(children)
        frontier.extend(children)
    return tree


def cpu_seconds(pid: int, children: bool = True) -> float:
    """User plus system CPU seconds of ``pid`` (all threads), plus its reaped children."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields after "(comm)": state is index 0, so utime (field 14) is index 11.
    ticks = int(rest[11]) + int(rest[12])
    if children:
        ticks += int(rest[13]) + int(rest[14])
    return ticks / CLK_TCK


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root``, its reaped children and its live descendants."""
    return sum(cpu_seconds(pid) for pid in process_tree(root))


def peak_rss_mib(pid: int) -> float:
    """VmHWM (peak resident set) of ``pid`` in MiB, 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# --------------------------------------------------------------------------------------
# Messages

_PARAGRAPHS = (
    "Thank you for choosing Example Motors for your vehicle's scheduled maintenance. "
    "Your appointment is confirmed; please bring your keys, the service booklet and any "
    "wheel-lock key to the service desk when you arrive.",
    "Our technicians will perform the manufacturer's recommended inspection, rotate the "
    "tires, check the brake pads and rotors, top up all fluids and reset the service "
    "indicator. If we find anything else that needs attention we will call you first.",
    "A courtesy shuttle runs every thirty minutes within a five mile radius, and loaner "
    "vehicles are available on request for visits expected to take longer than three "
    "hours. Complimentary coffee and wireless internet are available in the lounge.",
    "This month every completed service includes a free multi-point inspection report "
    "and ten percent off genuine accessories. Ask your service advisor about extended "
    "warranty coverage and prepaid maintenance plans for your model.",
)


def _wrap(text: str, width: int = 72) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(current)
    return lines


def _filler() -> Iterator[bytes]:
    """Endless body lines (CRLF-terminated, never starting with a dot)."""
    while True:
        for paragraph in _PARAGRAPHS:
            for line in _wrap(paragraph):
                yield line.encode() + b"\r\n"
            yield b"\r\n"


class MessageFactory:
    """Builds ``size``-byte messages that differ only in their headers."""

    def __init__(self, size: int, run_id: str) -> None:
        self.size = size
        self.run_id = run_id
        self._date = format_datetime(datetime.now(UTC))
        probe = self._headers(10**9 - 1)
        room = max(size - len(probe), 200)
        body = bytearray()
        lines = _filler()
        while len(body) < room:
            body += next(lines)
        # Trim to size on a line boundary, then pad the last line to the exact size.
        while len(body) > room:
            body = body[: body.rfind(b"\r\n", 0, len(body) - 2) + 2]
        pad = room - len(body)
        if pad >= 3:
            body += b"-" * (pad - 2) + b"\r\n"
        self._body = bytes(body)

    def _headers(self, n: int) -> bytes:
        return (
            f"Date: {self._date}\r\n"
            f'From: "Example Motors Service" <{SENDER}>\r\n'
            f"To: <{self.recipient(n)}>\r\n"
            f"Subject: Your service appointment, reference {n:09d}\r\n"
            f"Message-ID: <{self.run_id}.{n:09d}@example-motors.test>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n"
            "Content-Transfer-Encoding: 7bit\r\n"
            "\r\n"
        ).encode()

    @staticmethod
    def recipient(n: int) -> str:
        """The unique recipient of message ``n``."""
        return f"customer{n:09d}@example.org"

    def message(self, n: int) -> bytes:
        """Message ``n``, ending with CRLF (the terminating ``.`` CRLF not included)."""
        return self._headers(n) + self._body


# --------------------------------------------------------------------------------------
# Load


@dataclass
class LoadStats:
    """What the client saw during the load phase."""

    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    connections: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    reconnects: Counter[str] = field(default_factory=Counter)  # 421 before DATA: resent
    abandoned: int = 0


KEEP, RESEND, DROP = "keep", "resend", "drop"


class Load:
    """``concurrency`` sessions share ``total`` messages; each logs in once per connection."""

    def __init__(
        self,
        port: int,
        total: int,
        concurrency: int,
        factory: MessageFactory,
        reply_timeout: float,
        max_failures: int,
    ) -> None:
        self.port = port
        self.total = total
        self.concurrency = concurrency
        self.factory = factory
        self.reply_timeout = reply_timeout
        self.max_failures = max_failures
        self.stats = LoadStats()
        self._next = 0
        self._failures = 0

    def _take(self) -> int | None:
        if self._next >= self.total:
            return None
        self._next += 1
        return self._next - 1

    def _fail(self, what: str) -> None:
        self.stats.errors[what] += 1
        self._failures += 1
        if self._failures > self.max_failures:
            raise BenchError(f"more than {self.max_failures} failures: {dict(self.stats.errors)}")

    @staticmethod
    def _reply_key(stage: str, resp: Resp) -> str:
        text = re.sub(r"\b[0-9a-z]{10,}\b", "...", resp.lines[0] if resp.lines else "")
        return f"{stage} {resp.code} {text}"[:160]

    def _refused(self, stage: str, resp: Resp) -> None:
        self.stats.refused[self._reply_key(stage, resp)] += 1

    async def _connect(self) -> RawSmtp:
        client = await RawSmtp.connect(HOST, self.port, timeout=self.reply_timeout)
        if client.banner is None or client.banner.code != 220:
            await client.close()
            raise ConnectionError(f"banner {client.banner}")
        try:
            await client.login(USERNAME, PASSWORD)
        except AssertionError as exc:
            await client.close()
            raise ConnectionError(f"login failed: {exc}") from exc
        self.stats.connections += 1
        return client

    async def _send_one(self, client: RawSmtp, n: int) -> str:
        """Submit message ``n``.

        Returns ``KEEP`` (answered, connection usable), ``RESEND`` (421 before the message
        was taken: reconnect and send it again) or ``DROP`` (421 after DATA: reconnect).
        """
        message = self.factory.message(n)
        timeout = self.reply_timeout
        steps = (
            ("MAIL", f"MAIL FROM:<{SENDER}> SIZE={len(message)}", (250,)),
            ("RCPT", f"RCPT TO:<{self.factory.recipient(n)}>", (250, 251)),
            ("DATA", "DATA", (354,)),
        )
        for stage, line, good in steps:
            resp = await client.cmd(line, timeout)
            if resp.code in good:
                continue
            if resp.code == 421:
                self.stats.reconnects[self._reply_key(stage, resp)] += 1
                return RESEND
            self._refused(stage, resp)
            if stage != "DATA":
                await client.cmd("RSET", timeout)
            return KEEP
        await client.send(message[:-2])
        start = time.perf_counter()
        await client.send(b"\r\n.\r\n")
        resp = await client.read_reply(timeout)
        elapsed = time.perf_counter() - start
        if resp.code == 250:
            self.stats.accepted += 1
            self.stats.latencies.append(elapsed)
            return KEEP
        self._refused("DATA-end", resp)
        return DROP if resp.code == 421 else KEEP

    async def _session(self) -> None:
        client: RawSmtp | None = None
        try:
            while (n := self._take()) is not None:
                for _attempt in range(3):
                    if client is None:
                        try:
                            client = await self._connect()
                        except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
                            self._fail(f"connect: {type(exc).__name__}: {exc}"[:160])
                            await asyncio.sleep(0.5)
                            continue
                    try:
                        outcome = await self._send_one(client, n)
                    except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
                        self._fail(f"session: {type(exc).__name__}: {exc}"[:160])
                        with contextlib.suppress(Exception):
                            client.writer.close()
                        client = None
                        continue  # the message may or may not have been taken: resend it
                    if outcome != KEEP:
                        await client.close()
                        client = None
                    if outcome != RESEND:
                        break
                else:
                    self.stats.abandoned += 1
        finally:
            if client is not None:
                await client.close()

    async def run(self) -> LoadStats:
        """Run every session to the end."""
        await asyncio.gather(*(self._session() for _ in range(self.concurrency)))
        return self.stats


# --------------------------------------------------------------------------------------
# Targets


@dataclass
class RunResult:
    """One run of one target."""

    target: str
    backend: str
    repeat: int
    messages: int
    concurrency: int
    size: int
    accepted: int
    delivered: int
    duplicates: int
    refused: dict[str, int]
    errors: dict[str, int]
    reconnects: dict[str, int]
    abandoned: int
    connections: int
    load_seconds: float
    deliver_seconds: float
    accepted_per_s: float
    delivered_per_s: float
    cpu_seconds: float
    cpu_per_1000: float
    db_cpu_seconds: float | None
    driver_cpu_seconds: float
    sink_cpu_seconds: float
    p50_ms: float
    p99_ms: float
    peak_rss_mib: float
    delivered_bytes: int
    log_problems: list[str]
    metrics: dict[str, float]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def read_status(path: Path) -> dict[str, Any]:
    """The sink's last status, or an empty one."""
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data
    except (OSError, ValueError):
        return {}


def log_problems(path: Path, limit: int = 25) -> list[str]:
    """Distinct warning/error lines from a target's log (timestamps stripped)."""
    seen: Counter[str] = Counter()
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        if not LOG_PROBLEM.search(line) or any(p.search(line) for p in EXPECTED_LOG_LINES):
            continue
        key = re.sub(r"^\d{4}-\d\d-\d\d[ T][\d:,.]+\s*", "", line)
        seen[key[:300]] += 1
    return [f"{count}x {line}" for line, count in seen.most_common(limit)]


async def http_get(port: int, path: str, timeout: float = 5.0) -> str:
    """A plain HTTP/1.0 GET on loopback; the body, or '' on failure."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(4 * 1024 * 1024), timeout)
        writer.close()
    except (OSError, TimeoutError):
        return ""
    return raw.partition(b"\r\n\r\n")[2].decode("utf-8", errors="replace")


def interesting_metrics(text: str) -> dict[str, float]:
    """Non-zero ``mailgate_*`` samples (no histogram buckets) from a /metrics page."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("mailgate_") or "_bucket{" in line or "_created" in line:
            continue
        name, _, value = line.rpartition(" ")
        try:
            number = float(value)
        except ValueError:
            continue
        if number:
            out[name] = number
    return out


class PgDatabase:
    """A fresh PostgreSQL database for one gateway run, dropped afterwards."""

    def __init__(self, admin_url: str, name: str) -> None:
        self.admin_url = admin_url
        self.name = name
        parts = urllib.parse.urlsplit(admin_url)
        self.url = urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))

    async def _execute(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create(self) -> None:
        """CREATE DATABASE."""
        await self._execute(f'CREATE DATABASE "{self.name}"')

    async def drop(self) -> None:
        """DROP DATABASE, disconnecting whoever is still connected."""
        with contextlib.suppress(Exception):
            await self._execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    async def backend_cpu(self) -> dict[int, float]:
        """CPU seconds of each server process connected to this database."""
        import asyncpg

        conn = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1", self.name
            )
        finally:
            await conn.close()
        return {row["pid"]: cpu_seconds(row["pid"], children=False) for row in rows}


def gateway_argv(command: str = "") -> tuple[list[str], dict[str, str]]:
    """How to run the ``mailgate`` command: ``command`` if given, else the installed script,
    else ``python -m gateway`` from this checkout."""
    if command:
        return shlex.split(command), {"PYTHONPATH": str(REPO)}
    script = Path(sys.executable).parent / "mailgate"
    if script.exists():
        return [str(script)], {}
    return [sys.executable, "-m", "gateway"], {"PYTHONPATH": str(REPO)}


def gateway_config(
    work: Path, port: int, http_port: int, sink_port: int, storage_url: str, concurrency: int
) -> str:
    """A mailgate.toml for one run."""

    def q(value: object) -> str:
        return json.dumps(str(value))

    conns = max(50, concurrency + 10)
    return "\n".join(
        [
            "[server]",
            f"hostname = {q('mailgate.bench.test')}",
            f"data_dir = {q(work / 'var')}",
            f"policies_dir = {q(REPO / 'policies')}",
            'log_level = "warning"',
            "",
            "[submission]",
            f"listen = {q(f'{HOST}:{port}')}",
            f"max_connections = {max(200, conns)}",
            f"max_connections_per_ip = {conns}",
            'shutdown_grace = "2s"',
            "",
            "[upstream]",
            f"host = {q(HOST)}",
            f"port = {sink_port}",
            'tls = "none"',
            "",
            "[storage]",
            f"url = {q(storage_url)}",
            "",
            "[http]",
            f"listen = {q(f'{HOST}:{http_port}')}",
            "",
        ]
    )


@dataclass
class Options:
    """The command-line options that shape one run."""

    messages: int
    concurrency: int
    size: int
    backend: str
    pg_url: str
    gateway_cmd: str
    startup_timeout: float
    load_timeout: float
    drain_timeout: float
    keep: bool
    max_failures: int


async def run_target(
    target: str, repeat: int, opts: Options, say: Callable[[str], None]
) -> RunResult:
    """Start a sink and ``target``, drive the load, wait for delivery, stop everything."""
    work = Path(tempfile.mkdtemp(prefix=f"mailgate-bench-{target}-"))
    sink_port, port = free_port(), free_port()
    status_path = work / "sink.json"
    sink_log, target_log = work / "sink.log", work / f"{target}.log"
    pg: PgDatabase | None = None
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sink = CHILDREN.spawn(
            [sys.executable, str(BENCH / "sink.py"), "--listen", f"{HOST}:{sink_port}",
             "--status", str(status_path), "--max-seconds", "3600"],
            sink_log, child_env(), work,
        )  # fmt: skip
        procs.append(sink)
        await wait_for_banner(sink_port, sink, sink_log, opts.startup_timeout)

        http_port = 0
        if target == "minimal":
            proc = CHILDREN.spawn(
                [sys.executable, str(BENCH / "minimal_relay.py"), "--listen", f"{HOST}:{port}",
                 "--spool", str(work / "spool"), "--upstream", f"{HOST}:{sink_port}",
                 "--password", PASSWORD, "--workers", "10", "--max-seconds", "3600"],
                target_log, child_env(), work,
            )  # fmt: skip
        else:
            http_port = free_port()
            if opts.backend == "postgres":
                pg = PgDatabase(opts.pg_url, f"mailgate_bench_{os.getpid()}_{repeat}")
                await pg.drop()
                await pg.create()
                storage_url = pg.url
            else:
                storage_url = f"sqlite:///{work / 'var' / 'mailgate.db'}"
            (work / "var").mkdir()
            config = work / "mailgate.toml"
            config.write_text(
                gateway_config(work, port, http_port, sink_port, storage_url, opts.concurrency),
                encoding="utf-8",
            )
            argv, extra = gateway_argv(opts.gateway_cmd)
            env = child_env(extra)
            for step in (["init"], ["credentials", "set", DEALER, USERNAME,
                                    "--password", PASSWORD]):  # fmt: skip
                cred = subprocess.run(
                    [*argv, "--config", str(config), *step],
                    cwd=work, env=env, capture_output=True, timeout=120, check=False,
                )  # fmt: skip
                if cred.returncode != 0:
                    break
            if cred.returncode != 0:
                raise BenchError(
                    f"mailgate credentials set failed ({cred.returncode}):\n"
                    f"{cred.stdout.decode(errors='replace')}{cred.stderr.decode(errors='replace')}"
                )
            proc = CHILDREN.spawn([*argv, "--config", str(config), "serve"], target_log, env, work)
        procs.append(proc)
        await wait_for_banner(port, proc, target_log, opts.startup_timeout)

        factory = MessageFactory(opts.size, f"bench{os.getpid()}r{repeat}{target[0]}")
        load = Load(
            port, opts.messages, opts.concurrency, factory,
            reply_timeout=60.0, max_failures=opts.max_failures,
        )  # fmt: skip
        db_before = await pg.backend_cpu() if pg else {}
        cpu_before = tree_cpu_seconds(proc.pid)
        sink_cpu_before = cpu_seconds(sink.pid)
        driver_before = time.process_time()
        load_start = time.monotonic()
        try:
            stats = await asyncio.wait_for(load.run(), opts.load_timeout)
        except TimeoutError as exc:
            raise BenchError(
                f"{target}: load not finished in {opts.load_timeout:.0f} s "
                f"({load.stats.accepted} accepted)"
            ) from exc
        load_seconds = time.monotonic() - load_start
        driver_cpu = time.process_time() - driver_before

        status: dict[str, Any] = {}
        deadline = time.monotonic() + opts.drain_timeout
        while time.monotonic() < deadline:
            status = read_status(status_path)
            if status.get("count", 0) >= stats.accepted:
                break
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        cpu = tree_cpu_seconds(proc.pid) - cpu_before
        db_cpu: float | None = None
        if pg is not None:
            db_after = await pg.backend_cpu()
            db_cpu = sum(t - db_before.get(pid, 0.0) for pid, t in db_after.items())
        rss = peak_rss_mib(proc.pid)
        sink_cpu = cpu_seconds(sink.pid) - sink_cpu_before
        delivered = int(status.get("count", 0))
        if delivered >= stats.accepted and status.get("last"):
            deliver_seconds = max(float(status["last"]) - load_start, load_seconds)
        else:
            deliver_seconds = math.nan
            say(
                f"  ! {target}: only {delivered} of {stats.accepted} delivered after "
                f"{opts.drain_timeout:.0f} s"
            )
        metrics = interesting_metrics(await http_get(http_port, "/metrics")) if http_port else {}
        # Stop the target before reading its log, so everything it had to say is there.
        CHILDREN.stop(proc, grace=10.0)
        if proc.returncode not in (0, -signal.SIGTERM):
            say(f"  ! {target} exited with {proc.returncode} on SIGTERM")
        CHILDREN.stop(sink)
        status = read_status(status_path) or status

        accepted = stats.accepted
        return RunResult(
            target=target,
            backend=opts.backend if target == "gateway" else "files",
            repeat=repeat,
            messages=opts.messages,
            concurrency=opts.concurrency,
            size=len(factory.message(0)),
            accepted=accepted,
            delivered=delivered,
            duplicates=int(status.get("duplicates", 0)),
            refused=dict(stats.refused),
            errors=dict(stats.errors),
            reconnects=dict(stats.reconnects),
            abandoned=stats.abandoned,
            connections=stats.connections,
            load_seconds=load_seconds,
            deliver_seconds=deliver_seconds,
            accepted_per_s=accepted / load_seconds if load_seconds else math.nan,
            delivered_per_s=accepted / deliver_seconds if accepted else math.nan,
            cpu_seconds=cpu,
            cpu_per_1000=cpu / accepted * 1000 if accepted else math.nan,
            db_cpu_seconds=db_cpu,
            driver_cpu_seconds=driver_cpu,
            sink_cpu_seconds=sink_cpu,
            p50_ms=percentile(stats.latencies, 0.50) * 1000,
            p99_ms=percentile(stats.latencies, 0.99) * 1000,
            peak_rss_mib=rss,
            delivered_bytes=int(status.get("bytes", 0)),
            log_problems=log_problems(target_log),
            metrics=metrics,
        )
    finally:
        for p in reversed(procs):
            CHILDREN.stop(p)
        if pg is not None:
            await pg.drop()
        if opts.keep:
            say(f"  (kept {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Report

SUMMARY_FIELDS = (
    "accepted_per_s", "delivered_per_s", "cpu_per_1000", "p50_ms", "p99_ms", "peak_rss_mib",
    "load_seconds", "deliver_seconds", "cpu_seconds", "driver_cpu_seconds", "sink_cpu_seconds",
)  # fmt: skip


def median(values: Sequence[float | None]) -> float:
    """Median of the finite values, NaN if there are none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def summarize(results: Sequence[RunResult]) -> dict[str, dict[str, Any]]:
    """Median figures per target, plus totals of what went wrong."""
    out: dict[str, dict[str, Any]] = {}
    for target in dict.fromkeys(r.target for r in results):
        runs = [r for r in results if r.target == target]
        summary: dict[str, Any] = {f: median([getattr(r, f) for r in runs]) for f in SUMMARY_FIELDS}
        db = [r.db_cpu_seconds / r.accepted * 1000 for r in runs if r.db_cpu_seconds and r.accepted]
        summary["db_cpu_per_1000"] = median(db) if db else None
        summary["backend"] = runs[0].backend
        summary["runs"] = len(runs)
        summary["accepted"] = sum(r.accepted for r in runs)
        summary["delivered"] = sum(r.delivered for r in runs)
        summary["submitted"] = sum(r.messages for r in runs)
        summary["duplicates"] = sum(r.duplicates for r in runs)
        refused: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        reconnects: Counter[str] = Counter()
        for r in runs:
            refused.update(r.refused)
            errors.update(r.errors)
            reconnects.update(r.reconnects)
        summary["refused"] = dict(refused)
        summary["errors"] = dict(errors)
        summary["reconnects"] = dict(reconnects)
        summary["abandoned"] = sum(r.abandoned for r in runs)
        out[target] = summary
    return out


def fmt(value: float | None, digits: int = 1) -> str:
    """A number for the table; '-' for missing."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.{digits}f}"


def ratios(summary: dict[str, dict[str, Any]]) -> dict[str, float]:
    """gateway / minimal for throughput (higher is better for the gateway)."""
    if "gateway" not in summary or "minimal" not in summary:
        return {}
    g, m = summary["gateway"], summary["minimal"]
    out = {}
    for key in ("accepted_per_s", "delivered_per_s"):
        out[key] = g[key] / m[key] if m[key] and math.isfinite(m[key]) else math.nan
    out["cpu_per_1000"] = g["cpu_per_1000"] / m["cpu_per_1000"] if m["cpu_per_1000"] else math.nan
    return out


def paired_ratios(results: Sequence[RunResult]) -> list[dict[str, float]]:
    """gateway / minimal delivered and accepted throughput within each repeat."""
    out = []
    for repeat in sorted({r.repeat for r in results}):
        by_target = {r.target: r for r in results if r.repeat == repeat}
        g, m = by_target.get("gateway"), by_target.get("minimal")
        if g is None or m is None:
            continue
        out.append(
            {
                "repeat": repeat + 1,
                "accepted_per_s": g.accepted_per_s / m.accepted_per_s,
                "delivered_per_s": g.delivered_per_s / m.delivered_per_s,
            }
        )
    return out


def markdown(
    summary: dict[str, dict[str, Any]],
    opts: Options,
    repeat: int,
    paired: Sequence[dict[str, float]] = (),
) -> str:
    """The report as a markdown table."""
    head = (
        "| target | backend | accepted msg/s | delivered msg/s | CPU s / 1k msgs "
        "| DB CPU s / 1k | p50 ms | p99 ms | peak RSS MiB | delivered / submitted | refused |"
    )
    rows = [head, "|" + "---|" * 11]
    for target, s in summary.items():
        rows.append(
            f"| {target} | {s['backend']} | {fmt(s['accepted_per_s'])} "
            f"| {fmt(s['delivered_per_s'])} | {fmt(s['cpu_per_1000'], 2)} "
            f"| {fmt(s['db_cpu_per_1000'], 2)} | {fmt(s['p50_ms'])} | {fmt(s['p99_ms'])} "
            f"| {fmt(s['peak_rss_mib'], 0)} | {s['delivered']}/{s['submitted']} "
            f"| {sum(s['refused'].values())} |"
        )
    r = ratios(summary)
    lines = [
        f"{opts.messages} messages of {opts.size} bytes, {opts.concurrency} sessions, "
        f"median of {repeat} run(s) per target:",
        "",
        *rows,
    ]
    if r:
        lines += [
            "",
            f"gateway / minimal: accepted {fmt(r['accepted_per_s'] * 100, 0)}%, "
            f"delivered {fmt(r['delivered_per_s'] * 100, 0)}% of the floor's throughput; "
            f"CPU per message {fmt(r['cpu_per_1000'], 1)}x "
            f"(target: throughput >= 50%)",
        ]
    if len(paired) > 1:
        each = ", ".join(
            f"{fmt(p['accepted_per_s'] * 100, 0)}%/{fmt(p['delivered_per_s'] * 100, 0)}%"
            for p in paired
        )
        lines.append(f"per repeat (accepted/delivered): {each}")
    for target, s in summary.items():
        groups = (
            ("refused", s["refused"]),
            ("client errors", s["errors"]),
            ("reconnected and resent after", s["reconnects"]),
        )
        for label, items in groups:
            for text, count in sorted(items.items(), key=lambda kv: -kv[1])[:10]:
                lines.append(f"- {target} {label}: {count}x {text}")
        if s["abandoned"]:
            lines.append(f"- {target}: {s['abandoned']} messages abandoned after 3 attempts")
        if s["duplicates"]:
            lines.append(f"- {target}: the sink saw {s['duplicates']} duplicate Message-IDs")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        description="Drive real SMTP sessions at the gateway and at a minimal relay."
    )
    p.add_argument("--messages", type=int, default=4000, help="messages per run")
    p.add_argument("--concurrency", type=int, default=20, help="concurrent SMTP sessions")
    p.add_argument("--size", type=int, default=10240, help="message size in bytes")
    p.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument(
        "--pg-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="admin URL of the PostgreSQL server (a database is created and dropped per run)",
    )
    p.add_argument(
        "--gateway-cmd",
        default="",
        help="command that runs the mailgate CLI (default: the virtualenv's mailgate script)",
    )
    p.add_argument("--targets", default="gateway,minimal", help="comma-separated targets")
    p.add_argument("--repeat", type=int, default=1, help="runs per target (median reported)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--startup-timeout", type=float, default=90.0, help="seconds for a start")
    p.add_argument("--load-timeout", type=float, default=900.0, help="seconds for the load")
    p.add_argument("--drain-timeout", type=float, default=180.0, help="seconds for delivery")
    p.add_argument("--max-failures", type=int, default=100, help="client errors before abort")
    p.add_argument("--keep", action="store_true", help="keep each run's work directory")
    args = p.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(targets) - {"gateway", "minimal"}
    if unknown or not targets:
        p.error(f"--targets: unknown {sorted(unknown)} (gateway, minimal)")
    if args.messages < 1 or args.concurrency < 1 or args.repeat < 1 or args.size < 512:
        p.error("--messages, --concurrency, --repeat must be >= 1 and --size >= 512")
    args.target_list = targets
    return args


def git_commit() -> str:
    """The repository's HEAD commit, or ''."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        return out.stdout.strip()
    return ""


async def amain(args: argparse.Namespace, err: TextIO) -> int:
    """Run every repeat of every target, print the table, write the JSON."""

    def say(text: str) -> None:
        print(text, file=err, flush=True)

    opts = Options(
        messages=args.messages,
        concurrency=args.concurrency,
        size=args.size,
        backend=args.backend,
        pg_url=args.pg_url,
        gateway_cmd=args.gateway_cmd,
        startup_timeout=args.startup_timeout,
        load_timeout=args.load_timeout,
        drain_timeout=args.drain_timeout,
        keep=args.keep,
        max_failures=args.max_failures,
    )
    started = datetime.now(UTC)
    load_avg = os.getloadavg()
    results: list[RunResult] = []
    failures: list[str] = []
    for repeat in range(args.repeat):
        order = args.target_list if repeat % 2 == 0 else list(reversed(args.target_list))
        for target in order:
            say(f"run {repeat + 1}/{args.repeat}: {target} ...")
            try:
                result = await run_target(target, repeat, opts, say)
            except BenchError as exc:
                failures.append(f"{target} run {repeat + 1}: {exc}")
                say(f"  ! {target} failed: {exc}")
                continue
            results.append(result)
            say(
                f"  {target}: {fmt(result.accepted_per_s)} accepted/s, "
                f"{fmt(result.delivered_per_s)} delivered/s, "
                f"{fmt(result.cpu_per_1000, 2)} CPU s/1k, p50 {fmt(result.p50_ms)} ms, "
                f"p99 {fmt(result.p99_ms)} ms, {result.delivered}/{result.messages} delivered"
            )
            for line in result.log_problems[:10]:
                say(f"  log: {line[:240]}")
    summary = summarize(results)
    paired = paired_ratios(results)
    print(markdown(summary, opts, args.repeat, paired))
    if failures:
        print("\nFailed runs:")
        for line in failures:
            print(f"- {line[:2000]}")
    if args.json:
        document = {
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "started": started.isoformat(),
            "commit": git_commit(),
            "machine": {
                "cpus": os.cpu_count(),
                "load_avg_at_start": load_avg,
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "options": asdict(opts) | {"targets": args.target_list, "repeat": args.repeat},
            "summary": summary,
            "ratio_gateway_over_minimal": ratios(summary),
            "ratio_per_repeat": paired,
            "runs": [asdict(r) for r in results],
            "failures": failures,
        }
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    return 1 if failures or not results else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: everything started is stopped on exit, failure, Ctrl-C or SIGTERM."""
    args = parse_args(argv)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # A shell starts background jobs with SIGINT ignored; Ctrl-C/kill -INT must still stop us.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return asyncio.run(amain(args, sys.stderr))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        CHILDREN.stop_all()


if __name__ == "__main__":
    sys.exit(main())
