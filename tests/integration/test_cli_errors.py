"""What the operator hit in the first hour: each failure is one sentence and a documented code.

``serve`` on a busy port, ``send-test`` against the self-signed certificate without
``--insecure``, ``send-test`` with no password and no terminal, ``duplicates list | head``,
and ``send-test``'s own output (the server's reply lines, never Python reprs). Run as the
operator ran them: as processes, where the exit code and stderr are what a shell sees.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli.common import EXIT_CODES
from gateway.cli.main import build_parser, main
from gateway.cli.manual import walk
from tests.cliwalk import argv_for, run_bad
from tests.integration.admin import add_token
from tests.integration.conftest import PASSWORD, Harness, policies_dir
from tests.procs import free_port, write_config
from tests.shipped import copy_shipped

REPO = Path(__file__).resolve().parents[2]
DOCUMENTED = {code for code, _ in EXIT_CODES}


def mailgate(
    *args: str, cwd: Path | None = None, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False,
        **kwargs,  # type: ignore[call-overload]
    )  # fmt: skip


def one_sentence(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("mailgate: "), err
    return lines[0]


def send_test(harness: Harness, *extra: str) -> list[str]:
    return [
        "send-test", "--server", f"127.0.0.1:{harness.port}", "--user", "example-crm",
        "--from", "sales@example-motors.test", "--to", "customer@example.org", *extra,
    ]  # fmt: skip


def test_serve_names_the_busy_address_and_its_setting(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        config = write_config(
            tmp_path / "mailgate.toml",
            {
                "server": {
                    "hostname": "mailgate.test",
                    "data_dir": str(tmp_path / "var"),
                    "policies_dir": str(policies_dir(tmp_path)),
                    "log_level": "warning",
                },
                "submission": {"listen": f"127.0.0.1:{free_port()}"},
                "http": {"listen": f"127.0.0.1:{busy}"},
            },
        )
        done = mailgate("--config", str(config), "serve")
    assert done.returncode == 3
    line = [x for x in done.stderr.splitlines() if x.startswith("mailgate: ")]
    assert line == [
        f"mailgate: cannot listen on 127.0.0.1:{busy} (http.listen): the address is in use by "
        "another process (a gateway already running?); stop it or set another address"
    ], done.stderr
    assert "Traceback" not in done.stderr


async def test_send_test_prints_the_server_replies(harness: Harness) -> None:
    done = await asyncio.to_thread(
        mailgate, *send_test(harness, "--insecure", "--password", PASSWORD)
    )
    assert done.returncode == 0, done.stderr
    steps = [line.split()[0] for line in done.stdout.splitlines()]
    assert steps == ["connect", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA"], done.stdout
    last = done.stdout.splitlines()[-1]
    assert last.startswith("DATA       250 2.0.0 ") and "queued as" in last, done.stdout
    assert "SMTPResponse" not in done.stdout and "(" not in last.split("queued", 1)[0]
    await harness.wait_delivered(1)


async def test_send_test_json(harness: Harness) -> None:
    args = send_test(harness, "--insecure", "--password", PASSWORD, "--json")
    done = await asyncio.to_thread(mailgate, *args)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["ok"] is True
    assert [r["step"] for r in data["replies"]][-1] == "DATA"
    assert data["replies"][-1]["code"] == 250


async def test_send_test_without_insecure_says_what_to_do(harness: Harness) -> None:
    done = await asyncio.to_thread(mailgate, *send_test(harness, "--password", PASSWORD))
    assert done.returncode == 2
    line = one_sentence(done.stderr)
    assert f"the certificate of 127.0.0.1:{harness.port} is not trusted" in line
    assert "use --insecure" in line and "submission.tls_cert" in line


async def test_send_test_without_password_or_terminal(harness: Harness) -> None:
    done = await asyncio.to_thread(
        mailgate, *send_test(harness, "--insecure"), stdin=subprocess.DEVNULL
    )
    assert done.returncode == 2
    assert one_sentence(done.stderr) == (
        "mailgate: no password: give --password, set MAILGATE_PASSWORD, or run on a terminal"
    )


async def test_send_test_refusals_carry_the_reply(harness: Harness) -> None:
    wrong = await asyncio.to_thread(
        mailgate, *send_test(harness, "--insecure", "--password", "wrong-one-12")
    )
    assert wrong.returncode == 4
    assert one_sentence(wrong.stderr).startswith("mailgate: AUTH refused: 535 5.7.8 ")
    args = send_test(harness, "--insecure", "--password", PASSWORD)
    args[args.index("sales@example-motors.test")] = "sales@not-this-dealer.example"
    refused = await asyncio.to_thread(mailgate, *args)
    line = one_sentence(refused.stderr)
    assert refused.returncode == 1 and " refused: 5" in line, line
    assert "SMTP" not in line.split("refused")[0]  # a step name, not an exception class


def test_send_test_with_nothing_listening() -> None:
    port = free_port()
    done = mailgate("send-test", "--server", f"127.0.0.1:{port}", "--user", "u", "--password",
                    "p" * 12, "--from", "a@b.example", "--to", "c@d.example")  # fmt: skip
    assert done.returncode == 3
    assert one_sentence(done.stderr).startswith(f"mailgate: cannot connect to 127.0.0.1:{port} ")


def test_a_closed_pipe_is_not_a_traceback(tmp_path: Path) -> None:
    """``mailgate duplicates list | head``, and the same for the biggest output there is."""
    config = write_config(
        tmp_path / "mailgate.toml",
        {
            "server": {
                "data_dir": str(tmp_path / "var"),
                "policies_dir": str(copy_shipped(tmp_path / "policies")),
            }
        },
    )
    assert main(["--config", str(config), "init"]) == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env["PYTHONPATH"] = str(REPO)
    for command in (f"--config {config} duplicates list", "man", "--help", "completion zsh"):
        # `true` exits without reading: every write of the command meets a closed pipe.
        script = (
            f"{sys.executable} -m gateway {command} 2>{tmp_path}/err | true; "
            'echo "status=${PIPESTATUS[0]}"'
        )
        done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
        err = (tmp_path / "err").read_text()
        assert err == "", (command, err)
        status = int(done.stdout.strip().removeprefix("status="))
        assert status in DOCUMENTED, (command, status)


ADMIN = [c for c in walk(build_parser()) if c.leaf and c.words[0] == "admin"]


async def test_admin_commands_against_a_gateway_with_bad_input(
    harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Every ``mailgate admin`` command, against a running gateway, with bad values."""
    gw = harness.gateway
    config = write_config(tmp_path / "cli.toml", {
        "server": {"data_dir": str(gw.settings.server.data_dir),
                   "policies_dir": str(gw.settings.server.policies_dir)},
        "http": {"listen": f"127.0.0.1:{gw.http_port}"},
    })  # fmt: skip
    monkeypatch.chdir(tmp_path)
    skip = frozenset({"api", "token_file"})
    for token, codes in ((add_token(gw), DOCUMENTED), ("mgt_wrong", {4})):
        monkeypatch.setenv("MAILGATE_ADMIN_TOKEN", token)
        for command in ADMIN:
            if command.words[1:] == ("token", "create"):
                continue
            for optional in (None, "not-a-value", "-1", "", "x" * 600):
                argv = argv_for(command, tmp_path, optional, skip)
                code = await asyncio.to_thread(run_bad, config, argv, capsys)
                reads_file = command.words[-1] in ("import", "export")
                if codes != DOCUMENTED and not reads_file and code != 2:
                    assert code in codes, (argv, code)
