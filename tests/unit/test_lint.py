from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import pytest

from gateway.cli.main import main
from gateway.findings import CATALOGUE
from gateway.intake.lint import lint, render_json, render_text, stand_in_dealer
from gateway.policy.model import CheckRule
from tests.shipped import copy_shipped

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "messages" / "inspection"
NOW = datetime(2026, 6, 1, tzinfo=UTC)
DEFAULTS = MappingProxyType({c: CheckRule(k.default_action) for c, k in CATALOGUE.items()})


@pytest.mark.parametrize(
    ("name", "verdict", "exit_code"),
    [
        ("good-html.eml", "accept", 0),
        ("html-misnested.eml", "tag", 1),
        ("unknown1-html.eml", "repair", 1),
        ("zero-byte.eml", "hold", 2),  # stray, and no safe repair: held
        ("double-extension.eml", "hold", 2),
    ],
)
def test_verdict_and_exit_code(name: str, verdict: str, exit_code: int) -> None:
    raw = (SAMPLES / name).read_bytes()
    report = lint(raw, stand_in_dealer(raw, DEFAULTS), NOW)
    assert report.verdict.label == verdict
    assert report.exit_code == exit_code
    data = json.loads(render_json(report))
    assert data["verdict"] == verdict
    for finding in data["findings"]:
        assert set(finding) >= {"code", "severity", "detail"}
        assert finding["severity"] in ("info", "warning", "error")


def test_text_explains_and_advises() -> None:
    raw = (SAMPLES / "double-extension.eml").read_bytes()
    text = render_text(lint(raw, stand_in_dealer(raw, DEFAULTS), NOW), "x.eml")
    assert "ERROR dangerous-attachment (hold)" in text
    assert "Why: " in text and "Fix: " in text
    assert text.endswith("x.eml: the gateway would hold it for an operator.")


def test_a_structural_refusal_is_reported() -> None:
    raw = b"From: a@b.test\r\n" + b"X-Big: " + b"x" * 200_000 + b"\r\n\r\nbody\r\n"
    report = lint(raw, stand_in_dealer(raw, DEFAULTS), NOW)
    assert report.exit_code == 2 and report.refusal.startswith("552")


def test_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    sample = str(SAMPLES / "link-javascript.eml")
    policies = copy_shipped(tmp_path / "policies")
    code = main(
        ["check", sample, "--json", "--policies", str(policies), "--dealer", "example-motors"]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["verdict"] == "tag"
    assert [f["code"] for f in out["findings"]] == ["link-defect"]
    assert main(["check", sample, "--policies", str(policies), "--dealer", "nobody"]) == 3
