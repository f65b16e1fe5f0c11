"""Offline commands never create a store; ``serve`` and ``init`` do. Which settings file is read.

An operator who types ``mailgate queue ls`` in the wrong directory must hear that there is
no Mailgate data there, not see an empty queue from a database the command just created;
``admin token create`` must not write a token where no gateway reads it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.settings import SYSTEM_CONFIG, find_config
from tests.contract.conftest import PostgresBackend, pg
from tests.integration.conftest import policies_dir
from tests.procs import write_config

__all__ = ["pg"]
REPO = Path(__file__).resolve().parents[2]

# Every command that reads or writes the store, with arguments that would otherwise run.
STORE_COMMANDS = [
    ["queue", "ls"],
    ["held", "list"],
    ["held", "expire"],
    ["credentials", "list"],
    ["credentials", "set", "example-motors", "example-crm", "--password", "x" * 16],
    ["suppress", "list", "--global"],
    ["suppress", "add", "a@b.example", "--global", "--reason", "asked"],
    ["dealers", "status"],
    ["duplicates", "list"],
    ["admin", "token", "create", "--name", "alice"],
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A directory with no Mailgate files, as cwd, and no MAILGATE_* variables."""
    if SYSTEM_CONFIG.exists():
        pytest.skip(f"{SYSTEM_CONFIG} exists on this machine; the search would find it")
    for name in list(os.environ):
        if name.startswith("MAILGATE_") and name != "MAILGATE_TEST_PG_URL":
            monkeypatch.delenv(name)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return elsewhere


def config_for(tmp_path: Path, storage_url: str = "") -> Path:
    server: dict[str, object] = {
        "hostname": "mailgate.test",
        "data_dir": str(tmp_path / "var"),
        "policies_dir": str(policies_dir(tmp_path)),
    }
    sections: dict[str, dict[str, object]] = {"server": server}
    if storage_url:
        sections["storage"] = {"url": storage_url}
    return write_config(tmp_path / "mailgate.toml", sections)


def test_queue_ls_in_a_stray_directory_refuses_and_creates_nothing(tmp_path: Path) -> None:
    """What the operator did: `cd /tmp && mailgate queue ls`, as a real process."""
    if SYSTEM_CONFIG.exists():
        pytest.skip(f"{SYSTEM_CONFIG} exists on this machine; the search would find it")
    stray = tmp_path / "tmp"
    stray.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "queue", "ls"],
        cwd=stray, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith(f"mailgate: no Mailgate data at {stray}/var/mailgate.db ")
    assert "use --config FILE" in done.stderr and "mailgate init" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
    assert list(stray.iterdir()) == []  # no var/, no database, no key


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_every_store_command_refuses_without_a_store(
    command: list[str], clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path)
    assert main(["--config", str(config), *command]) == 2
    err = capsys.readouterr().err
    assert f"no Mailgate data at {tmp_path}/var/mailgate.db (settings from {config})" in err
    assert not (tmp_path / "var").exists()


def test_init_creates_the_store_once_then_the_commands_work(
    clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path)
    assert main(["--config", str(config), "init"]) == 0
    assert f"created the store {tmp_path}/var/mailgate.db" in capsys.readouterr().out
    assert main(["--config", str(config), "init"]) == 0
    assert "already holds Mailgate data" in capsys.readouterr().out
    for command in STORE_COMMANDS:
        assert main(["--config", str(config), *command]) == 0, command
    out = capsys.readouterr().out
    assert "credential set: example-crm -> example-motors" in out
    assert (tmp_path / "var" / "admin-tokens").exists()


def test_a_file_that_is_not_a_store_is_named(
    clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "mailgate.db").write_bytes(b"not a database at all, just text\n" * 10)
    assert main(["--config", str(config), "queue", "ls"]) == 3
    err = capsys.readouterr().err
    assert "mailgate.db" in err and "not a database" in err and "Traceback" not in err


@pytest.mark.postgres
async def test_postgres_exists_only_once_migrated(
    pg: PostgresBackend, clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    config = config_for(tmp_path, pg.url)

    def run(*args: str) -> int:
        return main(["--config", str(config), *args])

    assert await asyncio.to_thread(run, "queue", "ls") == 2
    assert "no Mailgate data at postgresql://" in capsys.readouterr().err
    assert await pg.scalar("SELECT to_regclass('schema_migrations') IS NULL") is True
    assert await asyncio.to_thread(run, "init") == 0
    assert await asyncio.to_thread(run, "queue", "ls") == 0
    assert await asyncio.to_thread(run, "credentials", "list") == 0


# -- which settings file -----------------------------------------------------------------


def test_the_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "etc" / "mailgate.toml"
    monkeypatch.chdir(tmp_path)
    explicit, named, local = tmp_path / "x.toml", tmp_path / "named.toml", Path("mailgate.toml")
    assert find_config(None, {}, system) is None
    system.parent.mkdir()
    system.write_text("")
    assert find_config(None, {}, system) == system
    local.write_text("")
    assert find_config(None, {}, system) == local
    # named ones are returned even when missing, so that loading says "file not found"
    assert find_config(None, {"MAILGATE_CONFIG": str(named)}, system) == named
    assert find_config(explicit, {"MAILGATE_CONFIG": str(named)}, system) == explicit


def test_help_says_which_file_is_used(
    clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "settings file: --config FILE, else $MAILGATE_CONFIG, else ./mailgate.toml" in out
    assert "used here: none found: built-in defaults" in out
    (clean_env / "mailgate.toml").write_text("")
    assert main(["--help"]) == 0
    assert f"used here: {clean_env / 'mailgate.toml'}" in capsys.readouterr().out
    named = tmp_path / "named.toml"
    os.environ["MAILGATE_CONFIG"] = str(named)
    try:
        assert main(["--help"]) == 0
        assert f"used here: {named} (missing)" in capsys.readouterr().out
        assert main(["queue", "ls"]) == 2
        assert f"configuration error: {named}: file not found" in capsys.readouterr().err
    finally:
        del os.environ["MAILGATE_CONFIG"]
    assert main(["--config", str(tmp_path / "x.toml"), "--help"]) == 0
    assert f"used here: {tmp_path / 'x.toml'} (missing)" in capsys.readouterr().out


def test_mailgate_config_names_the_gateway_settings(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_for(tmp_path)
    monkeypatch.setenv("MAILGATE_CONFIG", str(config))
    assert main(["init"]) == 0
    assert (tmp_path / "var" / "mailgate.db").exists()
    assert main(["queue", "ls"]) == 0
