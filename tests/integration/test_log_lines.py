"""A newline in an operator's reason cannot forge a log line, in text or JSON logs.

Runs the real ``mailgate`` command (``dealers suspend``, which logs the transition with its
reason at WARNING) in a child process and reads what it wrote to stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.shipped import copy_shipped

REPO = Path(__file__).resolve().parents[2]
FORGED = "2026-01-05 09:00:00,000 INFO gateway.reputation: dealer example-motors: resumed"


def suspend(tmp_path: Path, log_format: str) -> list[str]:
    copy_shipped(tmp_path / "policies")
    config = tmp_path / "mailgate.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "var"}"\npolicies_dir = "{tmp_path / "policies"}"\n'
        f'log_format = "{log_format}"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config), "dealers", "suspend",
         "example-motors", "--reason", f"spam run\n{FORGED}\x1b[2J"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stderr.splitlines()


def test_text_log_keeps_the_reason_on_its_line(tmp_path: Path) -> None:
    lines = suspend(tmp_path, "text")
    (line,) = [line for line in lines if "-> suspended" in line]
    assert line.endswith(f"spam run\\n{FORGED}\\x1b[2J")
    assert not any(line.startswith(FORGED[:10]) and "resumed" in line for line in lines)
    assert "\x1b" not in "\n".join(lines)


def test_json_log_is_one_object_per_line(tmp_path: Path) -> None:
    entries = [json.loads(line) for line in suspend(tmp_path, "json")]
    (entry,) = [e for e in entries if "-> suspended" in e["message"]]
    assert entry["level"] == "WARNING" and entry["logger"] == "gateway.reputation"
    assert entry["message"].endswith(f"spam run\n{FORGED}\x1b[2J")
