"""Every ``mailgate`` command keeps the CLI's conventions; the parser tree is walked, so a new
command is held to them the moment it is registered.

* every option and argument has help text, every command a help line;
* every command that prints data has ``--json`` (the exceptions print a file format);
* bad input (missing files, unknown dealers and ids, values that do not parse, no store, no
  gateway, no token) never ends in a traceback or the "unexpected error" of a bug, always in
  an exit code from the documented table, with something said on stderr;
* ``--version``, the manual page and the completion scripts come from the same tree.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from gateway import __version__
from gateway.cli.common import EXIT_CODES
from gateway.cli.main import build_parser, main
from gateway.cli.manual import Command, man_page, options, walk
from tests.cliwalk import argv_for, run_bad
from tests.procs import free_port
from tests.shipped import copy_shipped

REPO = Path(__file__).resolve().parents[2]
COMMANDS = [c for c in walk(build_parser()) if c.leaf]

# Commands whose output is not data about the gateway: they print a file format (CSV, a
# script, roff) or run a server.
NO_JSON = {
    "mailgate serve": "runs the gateway; logs",
    "mailgate suppress export": "writes CSV",
    "mailgate admin suppressions export": "writes CSV",
    "mailgate completion": "prints a shell script",
    "mailgate man": "prints roff",
}
# Run as processes elsewhere (tests/integration/test_cli_errors.py): it binds ports.
IN_PROCESS_EXEMPT = {"mailgate serve"}


def test_the_tree_is_walked() -> None:
    names = {c.name for c in COMMANDS}
    assert len(COMMANDS) >= 50
    for expected in ("mailgate queue ls", "mailgate admin held release", "mailgate init",
                     "mailgate dkim rotate", "mailgate completion", "mailgate man"):  # fmt: skip
        assert expected in names


@pytest.mark.parametrize(
    "command", [None, *walk(build_parser())], ids=lambda c: getattr(c, "name", "mailgate")
)
def test_every_option_has_help(command: Command | None) -> None:
    parser = build_parser() if command is None else command.parser
    if command is not None:
        assert command.help, f"{command.name} has no help line"
    missing = [a.option_strings[0] if a.option_strings else a.dest
               for a in options(parser) if not (a.help or "").strip()]  # fmt: skip
    assert missing == [], f"{command.name if command else 'mailgate'}: no help for {missing}"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_data_command_has_json(command: Command) -> None:
    flags = {s for a in options(command.parser) for s in a.option_strings}
    if command.name in NO_JSON:
        assert "--json" not in flags, f"{command.name} is listed as printing no data"
    else:
        assert "--json" in flags, f"{command.name} prints data but has no --json"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"mailgate {__version__}\n"


def test_the_manual_page_covers_every_command_and_renders() -> None:
    page = man_page(build_parser())
    assert page.startswith(".TH MAILGATE 1 ")
    for command in COMMANDS:
        assert f'.SS "{command.name}"' in page.replace("\\-", "-"), command.name
    for code, _ in EXIT_CODES:
        assert f"\\fB{code}\\fR" in page
    assert "/etc/mailgate/mailgate.toml" in page and "MAILGATE_CONFIG" in page
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff not found (Debian package groff-base; .ci/run installs it)")
    rendered = subprocess.run(
        [groff, "-man", "-Tutf8", "-ww", "-rLL=100n"], input=page, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert rendered.returncode == 0 and rendered.stderr == "", rendered.stderr
    text = re.sub(r".\x08", "", rendered.stdout)
    assert "mailgate held release" in text and "EXIT STATUS" in text


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for word in ("suppressions", "release", "--json", "--config"):
        assert word in script
    interpreter = shutil.which(shell)
    if interpreter is None:
        pytest.skip(f"{shell} not installed")
    syntax = subprocess.run([interpreter, "-n"], input=script, capture_output=True, text=True,
                            check=False)  # fmt: skip
    assert syntax.returncode == 0, syntax.stderr
    if shell == "bash":
        # the words a user would see after `mailgate held <TAB>`
        probe = script + (
            '\nCOMP_WORDS=(mailgate held ""); COMP_CWORD=2; COMP_LINE="mailgate held ";'
            ' COMP_POINT=${#COMP_LINE}; _shtab_mailgate; printf "%s\\n" "${COMPREPLY[@]}"\n'
        )
        done = subprocess.run([interpreter, "-c", probe], capture_output=True, text=True,
                              check=False)  # fmt: skip
        assert {"list", "show", "release", "delete", "expire"} <= set(done.stdout.split())


# -- bad input -----------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings naming a store that does not exist, closed ports, a bogus admin token."""
    policies = tmp_path / "policies"
    copy_shipped(policies)
    config = tmp_path / "mailgate.toml"
    config.write_text(
        f"[server]\nhostname = 'mailgate.test'\ndata_dir = {json.dumps(str(tmp_path / 'var'))}\n"
        f"policies_dir = {json.dumps(str(policies))}\n"
        f"[submission]\nlisten = '127.0.0.1:{free_port()}'\n"
        f"[http]\nlisten = '127.0.0.1:{free_port()}'\n"
        f"[dns]\nnameservers = ['127.0.0.1:{free_port()}']\ntimeout = '0.2s'\n"
    )
    for name in ("MAILGATE_API_URL", "MAILGATE_ADMIN_TOKEN_FILE", "MAILGATE_PASSWORD",
                 "MAILGATE_CONFIG"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAILGATE_ADMIN_TOKEN", "mgt_not-a-real-token")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # a relative path given to a command lands here, not in the checkout
    return config


LEAVES = [c for c in COMMANDS if c.name not in IN_PROCESS_EXEMPT]


@pytest.mark.parametrize("command", LEAVES, ids=lambda c: c.name)
def test_bad_input_never_a_traceback(
    command: Command, world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # no store, no gateway: missing things and values that do not parse
    run_bad(world, argv_for(command, tmp_path, None), capsys)
    run_bad(world, argv_for(command, tmp_path, "not-a-value"), capsys)
    run_bad(world, argv_for(command, tmp_path, ""), capsys)
    # a store that exists: unknown dealers, ids and files
    assert main(["--config", str(world), "init"]) == 0
    capsys.readouterr()
    run_bad(world, argv_for(command, tmp_path, None), capsys)
    run_bad(world, argv_for(command, tmp_path, "-1"), capsys)
    # and a usage error argparse catches
    run_bad(world, [*command.words, "--no-such-option"], capsys)
