"""Relay benchmark: the gateway against Postfix + OpenDKIM and a minimal relay.

For each target (``gateway``, ``postfix``, ``minimal``), each client mode (``reuse``: one
login per session, then MAIL/RCPT/DATA in a loop; ``per-message``: a new connection,
STARTTLS and AUTH for every message) and each repeat, a fresh SMTP sink and a fresh target
are started on loopback; ``--concurrency`` real SMTP sessions submit ``--messages``
messages of ``--size`` bytes, each to a recipient of its own; the run ends when the sink
has counted every accepted message. The gateway and Postfix sign every message with the
same RSA-2048 key (the gateway itself, Postfix through OpenDKIM), and the first messages
of each run are DKIM-verified at the sink. Targets alternate between repeats, and the
report gives the median of each figure, because on a shared machine only comparisons
within one run mean much.

Run from the repository root with the project's virtualenv (Postfix as root, packages
from ``bench/setup.sh``)::

    .venv/bin/python bench/relay.py --messages 4000 --concurrency 20 --size 10240

See bench/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import functools
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import ssl
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

from bench import postfix_peer  # noqa: E402
from tests.smtpclient import RawSmtp, Resp  # noqa: E402

HOST = "127.0.0.1"
DEALER = "example-motors"
USERNAME = "example-crm"
PASSWORD = "bench-password-0123456789"
SENDER = "sales@example-motors.test"
DOMAIN = "example-motors.test"
SELECTOR = "bench"
TARGETS = ("gateway", "postfix", "minimal")
MODES = ("reuse", "per-message")
DKIM_SAMPLE = 20  # messages per run whose signatures are verified at the sink
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


# ``--bodies personalised``: each body opens with a line filled in per message, as a CRM
# merges a name, a model year and a stock number into a template (always this long).
_NAMES = ("John", "Maria", "Wei", "Aisha", "Carlos", "Priya", "Tom", "Fatima")


def _greeting(n: int) -> bytes:
    name = _NAMES[n % len(_NAMES)]
    line = f"Hi {name},{' ' * (8 - len(name))} your {2015 + n % 10} Civic (stock {n:09d}) is due."
    return line.encode() + b"\r\n\r\n"


class MessageFactory:
    """Builds ``size``-byte messages that differ only in their headers.

    With ``personalised`` the body's first line differs too (``_greeting``): every body
    is then a text of its own, as a CRM's merged template is, and no part of the
    gateway's work on one body can be reused for the next.
    """

    def __init__(self, size: int, run_id: str, personalised: bool = False) -> None:
        self.size = size
        self.run_id = run_id
        self.personalised = personalised
        self._date = format_datetime(datetime.now(UTC))
        probe = self._headers(10**9 - 1) + (_greeting(0) if personalised else b"")
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
        if self.personalised:
            return self._headers(n) + _greeting(n) + self._body
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


@functools.cache
def _client_tls() -> ssl.SSLContext:
    """The client's TLS context: no verification (the targets' certificates are self-signed)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


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
        per_message: bool = False,
    ) -> None:
        self.per_message = per_message  # a new connection (STARTTLS, AUTH) for each message
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
            await self._login(client)
        except AssertionError as exc:
            await client.close()
            raise ConnectionError(f"login failed: {exc}") from exc
        self.stats.connections += 1
        return client

    async def _login(self, client: RawSmtp) -> None:
        """EHLO, STARTTLS, EHLO, AUTH PLAIN, with one client TLS context for the whole run.

        ``RawSmtp.login`` builds a new context per connection, and loading the system's CA
        certificates for it costs some 20 ms of the driver's CPU: more than the handshake.
        """
        assert (await client.cmd("EHLO crm.bench.test")).code == 250
        assert (await client.cmd("STARTTLS")).code == 220
        await client.writer.start_tls(_client_tls())
        assert (await client.cmd("EHLO crm.bench.test")).code == 250
        resp = await client.auth_plain(USERNAME, PASSWORD)
        assert resp.code == 235, resp

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
                    if outcome != KEEP or self.per_message:
                        await self._quit(client)
                        client = None
                    if outcome != RESEND:
                        break
                else:
                    self.stats.abandoned += 1
        finally:
            if client is not None:
                await client.close()

    async def _quit(self, client: RawSmtp) -> None:
        """QUIT, read the 221 and close, as a CRM does; never wait for the TLS shutdown.

        ``RawSmtp.close`` waits up to 2 s for the transport to finish closing, which a
        TLS connection often takes in full: in per-message mode that wait, not the
        target, would set the pace.
        """
        with contextlib.suppress(OSError, TimeoutError, ConnectionError, ValueError):
            await client.cmd("QUIT", self.reply_timeout)
        with contextlib.suppress(Exception):
            client.writer.close()

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
    mode: str
    backend: str
    processes: int
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
    dkim_checked: int = 0
    dkim_valid: int = 0


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


@dataclass(frozen=True)
class BenchKeys:
    """What every run of one benchmark shares: the DKIM key, and Postfix's certificate."""

    directory: Path
    dkim_key: Path  # RSA-2048, PEM (PKCS#8): the gateway's dealer key and OpenDKIM's
    dkim_record: str  # the TXT record verifiers read: v=DKIM1; k=rsa; p=...
    cert: Path  # self-signed P-256, like the gateway's own
    cert_key: Path

    @classmethod
    def create(cls, directory: Path) -> BenchKeys:
        """Generate the keys into ``directory`` (readable by Postfix's and OpenDKIM's users)."""
        import base64

        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        dkim_key = directory / "dkim.pem"
        dkim_key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        record = f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
        cert, cert_key = _self_signed(directory, postfix_peer.HOSTNAME)
        return cls(directory, dkim_key, record, cert, cert_key)


def _self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o644)  # Postfix's smtpd reads it as the postfix user
    return cert_path, key_path


def dkim_results(directory: Path, record: str) -> tuple[int, int]:
    """(messages checked, signatures valid) over the messages the sink kept."""
    import dkim

    checked = valid = 0
    for path in sorted(directory.glob("*.eml")):
        checked += 1
        with contextlib.suppress(Exception):
            if dkim.verify(path.read_bytes(), dnsfunc=lambda *_a, **_k: record.encode()):
                valid += 1
    return checked, valid


def bench_policies(work: Path, keys: BenchKeys) -> Path:
    """The repository's policies, with the example dealer signing with the bench key."""
    policies = work / "policies"
    shutil.copytree(REPO / "policies", policies)
    (policies / "keys").mkdir(exist_ok=True)
    shutil.copy(keys.dkim_key, policies / "keys" / "bench.pem")
    dealer = policies / "dealers" / f"{DEALER}.toml"
    dealer.write_text(
        dealer.read_text()
        + f'\n[[dkim]]\ndomain = "{DOMAIN}"\nselector = "{SELECTOR}"\n'
        + 'key_file = "keys/bench.pem"\n'
    )
    return policies


def gateway_config(
    work: Path,
    port: int,
    http_port: int,
    sink_port: int,
    storage_url: str,
    concurrency: int,
    policies: Path,
    processes: int,
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
            f"policies_dir = {q(policies)}",
            'log_level = "warning"',
            f"processes = {processes}",
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
            'public_url = "https://mailgate.bench.test"',  # links in alerts; none are sent
            "",
            "[public]",
            f"listen = {q(f'{HOST}:{free_port()}')}",
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
    processes: int = 0  # the gateway's worker processes (0: one per core)
    personalised: bool = False  # each body different (--bodies personalised)


async def run_target(
    target: str,
    mode: str,
    repeat: int,
    opts: Options,
    keys: BenchKeys,
    say: Callable[[str], None],
) -> RunResult:
    """Start a sink and ``target``, drive the load, wait for delivery, stop everything."""
    work = Path(tempfile.mkdtemp(prefix=f"mailgate-bench-{target}-", dir=keys.directory))
    sink_port, port = free_port(), free_port()
    status_path = work / "sink.json"
    sink_log, target_log = work / "sink.log", work / f"{target}.log"
    kept = work / "kept"
    pg: PgDatabase | None = None
    peer: postfix_peer.PostfixPeer | None = None
    procs: list[subprocess.Popen[bytes]] = []
    roots: list[int] = []  # the processes whose trees are the target (CPU, memory)
    try:
        sink = CHILDREN.spawn(
            [sys.executable, str(BENCH / "sink.py"), "--listen", f"{HOST}:{sink_port}",
             "--status", str(status_path), "--max-seconds", "3600",
             "--keep", str(DKIM_SAMPLE), "--keep-dir", str(kept)],
            sink_log, child_env(), work,
        )  # fmt: skip
        procs.append(sink)
        await wait_for_banner(sink_port, sink, sink_log, opts.startup_timeout)

        http_port = 0
        if target == "postfix":
            peer = postfix_peer.PostfixPeer(
                work, port, sink_port,
                username=USERNAME, password=PASSWORD, domain=DOMAIN, selector=SELECTOR,
                key_file=keys.dkim_key, cert_file=keys.cert, cert_key_file=keys.cert_key,
            )  # fmt: skip
            try:
                milter = CHILDREN.spawn(peer.opendkim_argv(), target_log, child_env(), work)
                procs.append(milter)
                peer.wait_for_milter()
                peer.configure()
                peer.start()
                proc = milter
                roots = [peer.master_pid(), milter.pid]
            except RuntimeError as exc:
                raise BenchError(f"postfix: {exc}") from exc
            target_log = peer.maillog
        elif target == "minimal":
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
                gateway_config(
                    work, port, http_port, sink_port, storage_url, opts.concurrency,
                    bench_policies(work, keys), opts.processes,
                ),
                encoding="utf-8",
            )  # fmt: skip
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
        if target != "postfix":
            procs.append(proc)
            roots = [proc.pid]
        await wait_for_banner(port, proc, target_log, opts.startup_timeout)

        factory = MessageFactory(
            opts.size, f"bench{os.getpid()}r{repeat}{target[0]}{mode[0]}", opts.personalised
        )
        load = Load(
            port, opts.messages, opts.concurrency, factory,
            reply_timeout=60.0, max_failures=opts.max_failures,
            per_message=mode == "per-message",
        )  # fmt: skip
        db_before = await pg.backend_cpu() if pg else {}
        cpu_before = sum(tree_cpu_seconds(root) for root in roots)
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
        cpu = sum(tree_cpu_seconds(root) for root in roots) - cpu_before
        db_cpu: float | None = None
        if pg is not None:
            db_after = await pg.backend_cpu()
            db_cpu = sum(t - db_before.get(pid, 0.0) for pid, t in db_after.items())
        rss = sum(peak_rss_mib(pid) for root in roots for pid in process_tree(root))
        workers = max(1, len(process_tree(roots[0])) - 1) if target == "gateway" else 1
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
        if peer is not None:
            if not peer.queue_empty():
                say("  ! postfix: the queue is not empty after the sink counted every message")
            peer.stop()
        CHILDREN.stop(proc, grace=10.0)
        if proc.returncode not in (0, -signal.SIGTERM):
            say(f"  ! {target} exited with {proc.returncode} on SIGTERM")
        dkim_checked, dkim_valid = dkim_results(kept, keys.dkim_record)
        CHILDREN.stop(sink)
        status = read_status(status_path) or status

        accepted = stats.accepted
        return RunResult(
            target=target,
            mode=mode,
            backend=opts.backend if target == "gateway" else "files",
            processes=workers,
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
            dkim_checked=dkim_checked,
            dkim_valid=dkim_valid,
        )
    finally:
        if peer is not None:
            peer.stop()
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


def row_key(result: RunResult) -> str:
    """The table row a run belongs to: target and client mode."""
    return f"{result.target} {result.mode}"


def summarize(results: Sequence[RunResult]) -> dict[str, dict[str, Any]]:
    """Median figures per target and mode, plus totals of what went wrong."""
    out: dict[str, dict[str, Any]] = {}
    for key in dict.fromkeys(row_key(r) for r in results):
        runs = [r for r in results if row_key(r) == key]
        summary: dict[str, Any] = {f: median([getattr(r, f) for r in runs]) for f in SUMMARY_FIELDS}
        summary["target"], summary["mode"] = runs[0].target, runs[0].mode
        summary["processes"] = runs[0].processes
        summary["dkim_checked"] = sum(r.dkim_checked for r in runs)
        summary["dkim_valid"] = sum(r.dkim_valid for r in runs)
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
        out[key] = summary
    return out


def fmt(value: float | None, digits: int = 1) -> str:
    """A number for the table; '-' for missing."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.{digits}f}"


def ratios(summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per mode, gateway / other target for throughput and CPU per message."""
    out: dict[str, dict[str, float]] = {}
    for mode in MODES:
        g = summary.get(f"gateway {mode}")
        if g is None:
            continue
        for other in ("postfix", "minimal"):
            o = summary.get(f"{other} {mode}")
            if o is None:
                continue
            out[f"{mode} gateway/{other}"] = {
                key: g[key] / o[key] if o[key] and math.isfinite(o[key]) else math.nan
                for key in ("accepted_per_s", "delivered_per_s", "cpu_per_1000")
            }
    return out


def paired_ratios(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """gateway / postfix delivered throughput within each repeat and mode."""
    out: list[dict[str, Any]] = []
    for repeat in sorted({r.repeat for r in results}):
        for mode in MODES:
            by_target = {r.target: r for r in results if r.repeat == repeat and r.mode == mode}
            g, o = by_target.get("gateway"), by_target.get("postfix")
            if g is None or o is None:
                continue
            out.append(
                {
                    "repeat": repeat + 1,
                    "mode": mode,
                    "delivered_per_s": g.delivered_per_s / o.delivered_per_s,
                }
            )
    return out


def markdown(
    summary: dict[str, dict[str, Any]],
    opts: Options,
    repeat: int,
    paired: Sequence[dict[str, Any]] = (),
) -> str:
    """The report as a markdown table."""
    head = (
        "| target | mode | backend | procs | accepted msg/s | delivered msg/s | CPU s / 1k msgs "
        "| DB CPU s / 1k | p50 ms | p99 ms | peak RSS MiB | DKIM valid | delivered / submitted "
        "| refused |"
    )
    rows = [head, "|" + "---|" * 14]
    for s in summary.values():
        dkim = f"{s['dkim_valid']}/{s['dkim_checked']}" if s["target"] != "minimal" else "-"
        rows.append(
            f"| {s['target']} | {s['mode']} | {s['backend']} | {s['processes']} "
            f"| {fmt(s['accepted_per_s'])} "
            f"| {fmt(s['delivered_per_s'])} | {fmt(s['cpu_per_1000'], 2)} "
            f"| {fmt(s['db_cpu_per_1000'], 2)} | {fmt(s['p50_ms'])} | {fmt(s['p99_ms'])} "
            f"| {fmt(s['peak_rss_mib'], 0)} | {dkim} | {s['delivered']}/{s['submitted']} "
            f"| {sum(s['refused'].values())} |"
        )
    lines = [
        f"{opts.messages} messages of {opts.size} bytes, {opts.concurrency} sessions, "
        f"a recipient per message, {'personalised' if opts.personalised else 'the same'} "
        f"bodies, median of {repeat} run(s) per row:",
        "",
        *rows,
        "",
    ]
    for name, r in ratios(summary).items():
        lines.append(
            f"{name}: accepted {fmt(r['accepted_per_s'], 2)}x, "
            f"delivered {fmt(r['delivered_per_s'], 2)}x, CPU per message "
            f"{fmt(r['cpu_per_1000'], 2)}x"
        )
    if len(paired) > 1:
        each = ", ".join(
            f"{p['mode']} r{p['repeat']} {fmt(p['delivered_per_s'], 2)}x" for p in paired
        )
        lines.append(f"gateway / postfix delivered, per repeat: {each}")
    for key, s in summary.items():
        groups = (
            ("refused", s["refused"]),
            ("client errors", s["errors"]),
            ("reconnected and resent after", s["reconnects"]),
        )
        for label, items in groups:
            for text, count in sorted(items.items(), key=lambda kv: -kv[1])[:10]:
                lines.append(f"- {key} {label}: {count}x {text}")
        if s["abandoned"]:
            lines.append(f"- {key}: {s['abandoned']} messages abandoned after 3 attempts")
        if s["duplicates"]:
            lines.append(f"- {key}: the sink saw {s['duplicates']} duplicate Message-IDs")
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
    p.add_argument(
        "--bodies",
        choices=["same", "personalised"],
        default="same",
        help="one body for every message (a campaign), or each body merged per message",
    )
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
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated targets")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated client modes")
    p.add_argument(
        "--gateway-processes",
        type=int,
        default=0,
        help="the gateway's worker processes (server.processes; 0: one per core)",
    )
    p.add_argument("--repeat", type=int, default=1, help="runs per target (median reported)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--startup-timeout", type=float, default=90.0, help="seconds for a start")
    p.add_argument("--load-timeout", type=float, default=900.0, help="seconds for the load")
    p.add_argument("--drain-timeout", type=float, default=180.0, help="seconds for delivery")
    p.add_argument("--max-failures", type=int, default=100, help="client errors before abort")
    p.add_argument("--keep", action="store_true", help="keep each run's work directory")
    args = p.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(targets) - set(TARGETS)
    if unknown or not targets:
        p.error(f"--targets: unknown {sorted(unknown)} ({', '.join(TARGETS)})")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(modes) - set(MODES) or not modes:
        p.error(f"--modes: use {', '.join(MODES)}")
    if "postfix" in targets and (why := postfix_peer.unavailable()):
        p.error(f"--targets postfix: {why}")
    args.mode_list = modes
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
        processes=args.gateway_processes,
        personalised=args.bodies == "personalised",
    )
    keys = BenchKeys.create(Path(tempfile.mkdtemp(prefix="mailgate-bench-")))
    started = datetime.now(UTC)
    load_avg = os.getloadavg()
    results: list[RunResult] = []
    failures: list[str] = []
    runs = [(target, mode) for mode in args.mode_list for target in args.target_list]
    for repeat in range(args.repeat):
        order = runs if repeat % 2 == 0 else list(reversed(runs))
        for target, mode in order:
            say(f"run {repeat + 1}/{args.repeat}: {target} {mode} ...")
            try:
                result = await run_target(target, mode, repeat, opts, keys, say)
            except BenchError as exc:
                failures.append(f"{target} {mode} run {repeat + 1}: {exc}")
                say(f"  ! {target} {mode} failed: {exc}")
                continue
            results.append(result)
            say(
                f"  {target} {mode}: {fmt(result.accepted_per_s)} accepted/s, "
                f"{fmt(result.delivered_per_s)} delivered/s, "
                f"{fmt(result.cpu_per_1000, 2)} CPU s/1k, p50 {fmt(result.p50_ms)} ms, "
                f"p99 {fmt(result.p99_ms)} ms, {result.delivered}/{result.messages} delivered, "
                f"DKIM {result.dkim_valid}/{result.dkim_checked}"
            )
            for line in result.log_problems[:10]:
                say(f"  log: {line[:240]}")
    if not opts.keep:
        shutil.rmtree(keys.directory, ignore_errors=True)
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
            "options": asdict(opts)
            | {"targets": args.target_list, "modes": args.mode_list, "repeat": args.repeat},
            "summary": summary,
            "ratios": ratios(summary),
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
