"""The real gateway as a subprocess (``python -m gateway serve``): crash, fault, load tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import PASSWORD, dot_stuff, message, policies_dir
from tests.smtpclient import RawSmtp

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class GatewayProcess:
    """One gateway process with its own config file, log file and ports."""

    def __init__(self, config: Path, submission_port: int, log: Path) -> None:
        self.config = config
        self.port = submission_port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 20.0, prefix: Sequence[str] = ()) -> None:
        """Start and wait until the submission port answers.

        ``prefix`` runs the gateway under a wrapper (``strace -f …``); ``self.proc`` is then
        the wrapper's process, not the gateway's.
        """
        log = self.log.open("ab")
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "gateway", "--config", str(self.config), "serve"],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited {self.proc.returncode}:\n{self.output()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                if loop.time() > deadline:
                    raise RuntimeError(f"gateway not listening:\n{self.output()}") from None
                await asyncio.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


def node_config(
    tmp_path: Path,
    name: str,
    sink_port: int,
    storage_url: str,
    settings: dict[str, dict[str, Any]] | None = None,
    **delivery: Any,
) -> GatewayProcess:
    """A gateway's config file and ports; ``settings`` adds to or overrides its sections."""
    port = free_port()
    data_dir = tmp_path / name
    data_dir.mkdir(parents=True, exist_ok=True)
    policies = tmp_path / "policies"
    if not policies.exists():
        policies_dir(tmp_path)
    sections: dict[str, dict[str, Any]] = {
        "server": {
            "hostname": f"{name}.test",
            "data_dir": str(data_dir),
            "policies_dir": str(policies),
            "node_id": name,
            # One process unless a test asks for more (tests/integration/test_processes.py):
            # these tests are about one gateway process, its syscalls and its crashes.
            "processes": 1,
        },
        "submission": {"listen": f"127.0.0.1:{port}", "shutdown_grace": "5s"},
        "http": {"listen": f"127.0.0.1:{free_port()}"},
        "public": {"listen": f"127.0.0.1:{free_port()}"},
        "upstream": {"host": "127.0.0.1", "port": sink_port, "tls": "none"},
        "delivery": {
            "workers": 2,
            "poll_interval": "0.1s",
            "first_retry": "1s",
            "connect_timeout": "2s",
            "command_timeout": "10s",
            "data_timeout": "10s",
            **delivery,
        },
        "storage": {"url": storage_url},
    }
    for section, values in (settings or {}).items():
        sections[section] = {**sections.get(section, {}), **values}
    config = write_config(data_dir / "mailgate.toml", sections)
    return GatewayProcess(config, port, data_dir / "gateway.log")


async def set_password(proc: GatewayProcess) -> None:
    """Create the node's store (``mailgate init``) and the dealer's login, before it starts."""
    for cmd in (
        ["-m", "gateway", "--config", str(proc.config), "init"],
        [
            "-m", "gateway", "--config", str(proc.config), "credentials", "set",
            "example-motors", "example-crm", "--password", PASSWORD,
        ],
    ):  # fmt: skip
        child = await asyncio.create_subprocess_exec(
            sys.executable, *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await child.communicate()
        assert child.returncode == 0, out.decode()


async def start_sqlite_node(
    tmp_path: Path,
    procs: list[GatewayProcess],
    sink_port: int,
    db: Path,
    settings: dict[str, dict[str, Any]] | None = None,
    **delivery: Any,
) -> GatewayProcess:
    """One gateway process on a SQLite file, with the dealer's login set, listening."""
    node = node_config(tmp_path, "node", sink_port, f"sqlite:///{db}", settings, **delivery)
    procs.append(node)
    await set_password(node)
    await node.start()
    return node


async def send(port: int, to: str, subject: str) -> str:
    client = await RawSmtp.connect("127.0.0.1", port)
    try:
        await client.login("example-crm", PASSWORD)
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        assert (await client.cmd(f"RCPT TO:<{to}>")).code == 250
        return str(await client.data(dot_stuff(message(to=to, subject=subject))))
    finally:
        await client.close()


async def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, *logs: GatewayProcess
) -> None:
    def detail() -> str:
        return "".join(f"\n--- {p.log}:\n{p.output()[-3000:]}" for p in logs)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}{detail()}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def procs() -> AsyncIterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    yield started
    for proc in started:
        proc.kill()
