"""The README's walk-through and "Add a dealer", run as written on a fresh data directory.

The test reads README.md itself: every fenced ``sh`` block of the two sections, command by
command (a ``\\`` continues a line, a here-document runs to its end word), runs each with
``/bin/sh`` in a temporary directory laid out like a fresh checkout (the shipped policy
files and ``.venv/bin/mailgate``) beside a real ``mailgate serve`` started there the way
the README's first command starts it, and checks every ``#   -> TEXT`` line under a
command against that command's output: ``<words>`` stands for one token (an id, the
password), ``...`` for the rest of the line, runs of spaces for any white space. A command
promised a ``refused:`` line must fail, every other command must succeed.

What the test changes, and why it still runs the README as written:

* the ports: the README's ``127.0.0.1:2525`` and ``127.0.0.1:8025`` become free ports,
  through ``MAILGATE_SUBMISSION_LISTEN``/``MAILGATE_HTTP_LISTEN`` for every process and in
  the commands' text, so that a gateway already running on this machine is not disturbed;
* the placeholders: ``<the password>`` and ``<the token>`` are what the commands that
  print them printed;
* ``export NAME=VALUE`` sets the variable for the commands after it, as in a shell;
* between commands it waits until everything accepted so far has been delivered, as a
  person reading the output would;
* ``mailgate dns check`` asks the public DNS and is left out.

swaks and curl are skipped where they are not installed (a failure with ``CI`` set), and the
test then reports which command it skipped. Nothing is written into the checkout.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.procs import free_port
from tests.shipped import CHECKOUT_POLICIES, REPO, copy_shipped

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

README = REPO / "README.md"
SECTIONS = ("Five-minute walk-through", "Add a dealer")
LEFT_OUT = ("mailgate dns check",)  # needs the public DNS
SUBMISSION, HTTP = "127.0.0.1:2525", "127.0.0.1:8025"  # the README's defaults
CAPTURES = {
    "<the password>": re.compile(r"^password: (\S+)$", re.MULTILINE),
    "<the token>": re.compile(r"^(mgt_\S+)$", re.MULTILINE),
}
PLACEHOLDER = re.compile(r"(<[a-z][a-z ]*>|\.\.\.)")
HEREDOC = re.compile(r"<<-?\s*'?(\w+)'?")
ACCEPTED = re.compile(r"250 2\.0\.0 queued as \S+")
OPTIONAL_TOOLS = {"swaks": "swaks and libnet-ssleay-perl", "curl": "curl"}


@dataclass
class Command:
    """One command of a README block and the output lines promised under it."""

    text: str
    line: int
    expect: list[str] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return any(e.startswith("refused:") for e in self.expect)


def section(markdown: str, title: str) -> tuple[str, int]:
    """The text of the ``## title`` section and the line number it starts on."""
    start = markdown.index(f"\n## {title}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end >= 0 else None], markdown[:start].count("\n") + 2


def commands(markdown: str, title: str) -> list[Command]:
    """The commands of every ``sh`` block in a section, in order."""
    text, first_line = section(markdown, title)
    found: list[Command] = []
    for block in re.finditer(r"^```sh\n(.*?)^```$", text, re.MULTILINE | re.DOTALL):
        offset = first_line - 1 + text[: block.start(1)].count("\n")
        lines = block.group(1).splitlines()
        i = 0
        while i < len(lines):
            line, number = lines[i], offset + i
            i += 1
            stripped = line.strip()
            promised = re.match(r"#\s*->\s?(.*)$", stripped)
            if promised:
                assert found, f"README.md:{number}: a promised output before any command"
                found[-1].expect.append(promised.group(1).strip())
                continue
            if not stripped or stripped.startswith("#"):
                continue
            parts = [line]
            while parts[-1].endswith("\\") and i < len(lines):
                parts.append(lines[i])
                i += 1
            heredoc = HEREDOC.search(parts[-1])
            if heredoc:
                while i < len(lines):
                    parts.append(lines[i])
                    i += 1
                    if lines[i - 1].strip() == heredoc.group(1):
                        break
            found.append(Command("\n".join(parts), number))
    return found


def promise(expected: str) -> re.Pattern[str]:
    """The pattern a promised output line stands for."""
    regex = ""
    for part in PLACEHOLDER.split(expected):
        if part == "...":
            regex += ".*"
        elif PLACEHOLDER.fullmatch(part):
            regex += r"\S+"
        else:
            regex += re.sub(r"(?:\\ )+", r"\\s+", re.escape(part))
    return re.compile(regex)


def test_the_parser_reads_the_readme_s_forms() -> None:
    markdown = (
        "intro\n\n## Try\n\n```sh\n# a comment\nfirst --a \\\n    --b\n"
        "#   -> 250 2.0.0 queued as <id>\n"
        "cat > f <<'TOML'\nkey = 1   # not a command\nTOML\n"
        "last\n#   -> refused: 553 5.7.1 no...\n"
        "```\n\n## Next\n\n```sh\nother\n```\n"
    )
    found = commands(markdown, "Try")
    assert [c.text for c in found] == [
        "first --a \\\n    --b",
        "cat > f <<'TOML'\nkey = 1   # not a command\nTOML",
        "last",
    ]
    assert [c.line for c in found] == [7, 10, 13]
    assert found[0].expect == ["250 2.0.0 queued as <id>"] and not found[0].refused
    assert found[2].refused
    assert promise(found[0].expect[0]).search("250  2.0.0 queued as 06h4t72wm18m4mv8")
    assert not promise(found[0].expect[0]).search("250 2.0.0 queued as")
    assert promise("a ...").search("a b c") and not promise("a.b").search("axb")


def program(command: str) -> str:
    """The program a command line runs, after any ``NAME=value`` assignments."""
    for word in shlex.split(command.split("\n")[0].rstrip("\\"), comments=True):
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", word):
            return Path(word).name
    return ""


def missing(tool: str) -> bool:
    if shutil.which(tool) is None:
        return True
    if tool == "swaks":  # swaks --tls needs Net::SSLeay (libnet-ssleay-perl)
        probe = subprocess.run(["perl", "-MNet::SSLeay", "-e", "1"], capture_output=True)
        return probe.returncode != 0
    return False


def fresh_checkout(root: Path) -> None:
    """What a fresh checkout holds that the README's commands use."""
    copy_shipped(root / "policies")
    (root / ".venv" / "bin").mkdir(parents=True)
    script = Path(sys.executable).parent / "mailgate"
    target = root / ".venv" / "bin" / "mailgate"
    if script.exists():
        target.symlink_to(script)
    else:  # the package is importable but its console script lives elsewhere
        target.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m gateway "$@"\n')
        target.chmod(0o755)


def delivered(root: Path) -> int:
    new = root / "var" / "outbox" / "new"
    return len(list(new.iterdir())) if new.is_dir() else 0


def test_the_readme_walk_through_runs_as_written(tmp_path: Path) -> None:
    markdown = README.read_text(encoding="utf-8")
    first = re.search(r"```sh\n(.*?)\n```", markdown, re.DOTALL)
    assert first is not None and first.group(1).endswith("&& .venv/bin/mailgate serve")
    before = sorted(p.name for p in (CHECKOUT_POLICIES / "dealers").iterdir())
    had_var = (REPO / "var").exists()

    root = tmp_path / "checkout"
    root.mkdir()
    fresh_checkout(root)
    submission, http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env.update(
        MAILGATE_SUBMISSION_LISTEN=submission, MAILGATE_HTTP_LISTEN=http, PYTHONUNBUFFERED="1"
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [".venv/bin/mailgate", "serve"], cwd=root, env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 30
        while "mailgate ready" not in log.read_text():
            assert serve.poll() is None, f"mailgate serve exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"mailgate serve not ready:\n{log.read_text()}"
            time.sleep(0.1)
        assert "generated a self-signed certificate at var/tls/selfsigned.crt" in log.read_text()

        values: dict[str, str] = {}
        accepted = 0
        skipped: list[str] = []
        ran = 0
        for title in SECTIONS:
            for command in commands(markdown, title):
                where = f"README.md:{command.line}"
                if any(part in command.text for part in LEFT_OUT):
                    continue
                text = command.text.replace(SUBMISSION, submission).replace(HTTP, http)
                for placeholder, value in values.items():
                    text = text.replace(placeholder, value)
                assert not re.search(r"'<[a-z ]+>'", text), f"{where}: nothing printed {text}"
                if text.startswith("export "):
                    for assignment in shlex.split(text)[1:]:
                        name, _, value = assignment.partition("=")
                        env[name] = value
                    continue
                tool = program(text)
                if tool in OPTIONAL_TOOLS and missing(tool):
                    reason = f"{tool} is not installed (Debian: {OPTIONAL_TOOLS[tool]})"
                    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                        pytest.fail(f"{where}: {reason}")
                    skipped.append(f"{where} ({reason})")
                    continue
                # A person reads each output before typing the next command; by then what
                # was accepted has been delivered.
                deadline = time.monotonic() + 30
                while delivered(root) < accepted and time.monotonic() < deadline:
                    time.sleep(0.2)
                done = subprocess.run(
                    ["/bin/sh", "-c", text], cwd=root, env=env,
                    capture_output=True, text=True, timeout=90,
                )  # fmt: skip
                ran += 1
                output = done.stdout + done.stderr
                shown = f"{where}: {text}\nexit {done.returncode}\n{output}"
                if command.refused:
                    assert done.returncode != 0, shown
                else:
                    assert done.returncode == 0, shown
                for expected in command.expect:
                    assert promise(expected).search(output), f"{shown}\nno line {expected!r}"
                assert "Traceback" not in output, shown
                accepted += len(ACCEPTED.findall(output))
                for placeholder, pattern in CAPTURES.items():
                    found = pattern.search(done.stdout)
                    if found and placeholder not in values:
                        values[placeholder] = found.group(1)
        assert ran >= 10, f"only {ran} README commands found"
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            code = serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            raise
    assert code == 0, log.read_text()
    assert "Traceback" not in log.read_text(), log.read_text()
    # The checkout is as it was: the commands ran in the copy.
    assert sorted(p.name for p in (CHECKOUT_POLICIES / "dealers").iterdir()) == before
    assert (REPO / "var").exists() == had_var
    if skipped:
        pytest.skip("every other README command passed; skipped " + "; ".join(skipped))
