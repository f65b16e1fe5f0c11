"""``mailgate feedback parse``: one JSON object per file, nothing recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli.main import main

DATA = Path(__file__).resolve().parents[2] / "data"


def test_parse_json(capsys: pytest.CaptureFixture[str]) -> None:
    files = [DATA / "dsn" / "postfix-user-unknown.eml", DATA / "arf" / "abuse-with-ref.eml"]
    assert main(["feedback", "parse", "--json", *map(str, files)]) == 0
    bounce, complaint = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert bounce == {
        "file": str(files[0]),
        "kind": "bounce",
        "feedback_type": None,
        "recipients": [
            {
                "address": "nobody.here@example.org",
                "hard": True,
                "reason": "unknown-user",
                "status": "5.1.1",
                "smtp_code": "550",
            }
        ],
        "reference": "v1.01jnf6w3kq8r0m4t.1.mnopqrstuvwxyzab",
    }
    assert complaint["kind"] == "complaint"
    assert complaint["feedback_type"] == "abuse"
    assert complaint["reference"] == "v1.01jnf6w3kq8r0m4t.0.abcdefghijklmnop"


def test_parse_text_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = DATA / "dsn" / "out-of-office.eml"
    assert main(["feedback", "parse", str(other), str(tmp_path / "missing.eml")]) == 1
    captured = capsys.readouterr()
    assert "\tother\t" in captured.out
    assert "missing.eml: cannot read" in captured.err
