"""``mailgate admin …`` against a running gateway's API: tables, --json, exit codes, errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.admin.tokens import read_tokens
from gateway.cli import main as cli
from gateway.types import MessageState
from tests.integration.admin import store_message
from tests.integration.conftest import Harness

DEALER = "example-motors"


def run(
    capsys: pytest.CaptureFixture[str], config: Path, api: str, *args: str
) -> tuple[int, str, str]:
    code = cli.main(["--config", str(config), "admin", *args, "--api", api])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def config(harness: Harness, tmp_path: Path) -> Path:
    path = tmp_path / "mailgate.toml"
    data_dir = harness.gateway.settings.server.data_dir
    path.write_text(f'[server]\ndata_dir = "{data_dir}"\n')
    return path


async def test_token_create_then_every_runtime_command(
    harness: Harness,
    config: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gw = harness.gateway
    api = f"http://127.0.0.1:{gw.http_port}"
    monkeypatch.delenv("MAILGATE_ADMIN_TOKEN", raising=False)

    async def mg(*args: str) -> tuple[int, str, str]:
        return await asyncio.to_thread(run, capsys, config, api, *args)

    # no token yet: exit 4 and a message saying how to get one
    code, _, err = await mg("health")
    assert code == 4 and "mailgate admin token create" in err

    code = await asyncio.to_thread(cli.main, ["--config", str(config), "admin", "token", "create",
                                              "--name", "ci"])  # fmt: skip
    out = capsys.readouterr().out
    token = out.strip().splitlines()[-1]
    assert code == 0 and token.startswith("mgt_")
    entries = read_tokens(gw.settings.admin_token_file)
    assert [e.name for e in entries] == ["ci"] and token not in entries[0].hash
    code = await asyncio.to_thread(cli.main, ["--config", str(config), "admin", "token", "create",
                                              "--name", "ci"])  # fmt: skip
    assert code == 2  # the same name twice is refused
    capsys.readouterr()

    monkeypatch.setenv("MAILGATE_ADMIN_TOKEN", "mgt_not-the-token")
    code, _, err = await mg("dealers")
    assert code == 4 and "unknown or revoked token" in err
    monkeypatch.setenv("MAILGATE_ADMIN_TOKEN", token)

    code, out, _ = await mg("health")
    assert code == 0 and "storage:  ok" in out
    code, out, _ = await mg("dealers")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["DEALER", "STATE", "COMPLAINTS"]
    assert any(line.startswith(DEALER) and "active" in line for line in out.splitlines())
    code, out, _ = await mg("dealers", "--json")
    assert code == 0 and {d["id"] for d in json.loads(out)["dealers"]} >= {DEALER}

    code, out, _ = await mg("suspend", DEALER, "--reason", "complaints from the May campaign",
                            "--for", "48h")  # fmt: skip
    assert code == 0 and f"{DEALER}: active -> suspended until" in out
    code, _, err = await mg("suspend", DEALER, "--reason", "again")
    assert code == 1 and "already suspended" in err
    code, out, _ = await mg("dealer", DEALER)
    assert code == 0 and "state:    suspended" in out and "complaints from the May" in out
    code, out, _ = await mg("resume", DEALER, "--reason", "list cleaned")
    assert code == 0 and "suspended -> resumed" in out
    code, _, err = await mg("dealer", "nobody")
    assert code == 1 and "no dealer 'nobody'" in err
    code, out, _ = await mg("events", DEALER)
    assert code == 0 and "suspended -> resumed" in out
    code, out, _ = await mg("status-link", DEALER)
    assert code == 0 and out.strip().endswith(gw.status_links.token(DEALER))  # type: ignore[union-attr]

    # suppressions: add, search, remove, import (batches + progress), export
    code, out, _ = await mg("suppressions", "add", "a@x.example", "b@x.example",
                            "--list", DEALER, "--reason", "phone request")  # fmt: skip
    assert code == 0 and "a@x.example  suppressed" in out
    code, out, _ = await mg("suppressions", "add", "bogus", "--list", "*", "--reason", "r")
    assert code == 2 and "invalid" in out
    code, out, _ = await mg("suppressions", "search", "-q", "x.example")
    assert code == 0 and "a@x.example" in out and "b@x.example" in out
    code, out, _ = await mg("suppressions", "remove", "a@x.example", "--list", DEALER,
                            "--reason", "opted in")  # fmt: skip
    assert code == 0 and "lifted a@x.example" in out
    code, _, err = await mg("suppressions", "remove", "a@x.example", "--list", DEALER,
                            "--reason", "again")  # fmt: skip
    assert code == 1 and "not suppressed" in err
    rows = tmp_path / "list.csv"
    rows.write_text("address,reason\n" + "".join(f"u{n}@imp.example,old\n" for n in range(2500)))
    code, out, _ = await mg("suppressions", "import", str(rows), "--list", DEALER)
    assert code == 0 and "2500 added, 0 already suppressed, 0 not addresses" in out
    exported = tmp_path / "out.csv"
    code, _, err = await mg("suppressions", "export", str(exported), "--list", DEALER, "--all")
    assert code == 0 and "wrote 2502 entries" in err
    assert len(exported.read_text().splitlines()) == 2503

    # held and queue
    held = await store_message(gw, "cli.held.1", MessageState.HELD, findings=("stray-attachment",))
    code, out, _ = await mg("held", "list")
    assert code == 0 and held in out and "stray-attachment" in out
    code, out, _ = await mg("held", "show", held)
    assert code == 0 and "fix:" in out and "Subject:" in out
    code, out, err = await mg("held", "release", held, "no-such-id")
    assert code == 1 and f"{held}: released" in out and "no-such-id" in err
    await harness.wait_delivered(1)
    # The sink has the message; the outcome is recorded in the store's next group commit.
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        code, out, _ = await mg("queue", "list", "--state", "delivered", "--json")
        delivered = any(m["id"] == held for m in json.loads(out)["messages"])
        if code != 0 or delivered or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert code == 0 and delivered
    code, _, err = await mg("queue", "retry", held)
    assert code == 1 and "nothing to retry" in err
    code, out, _ = await mg("queue", "delete", held, "--reason", "test done")
    assert code == 0 and f"{held}: deleted" in out

    code, out, _ = await mg("reload")
    assert code == 0 and "policies reloaded" in out
    broken = gw.settings.server.policies_dir / "dealers" / "broken.toml"
    broken.write_text("nonsense = [\n")
    code, out, _ = await mg("reload")
    assert code == 1 and "NOT reloaded" in out
    broken.unlink()

    # the gateway is not there: exit 3 and what to check
    code, _, err = await asyncio.to_thread(run, capsys, config, "http://127.0.0.1:9", "health")
    assert code == 3 and "is `mailgate serve` running?" in err
