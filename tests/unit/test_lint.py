from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import pytest

from gateway.cli.check import Report, check_message, render_json, render_text
from gateway.cli.main import main
from gateway.findings import CATALOGUE
from gateway.intake.prepare import Limits
from gateway.mail.message import ParseLimits
from gateway.policy.model import CheckRule

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "messages" / "inspection"
POLICIES = Path(__file__).resolve().parents[2] / "policies"
NOW = datetime(2026, 6, 1, tzinfo=UTC)
DEFAULTS = MappingProxyType({c: CheckRule(k.default_action) for c, k in CATALOGUE.items()})
LIMITS = Limits(ParseLimits(max_header_bytes=100 * 1024, max_mime_depth=50), max_hops=50)


def lint(raw: bytes) -> Report:
    """What the gateway would do with ``raw`` from a dealer owning its From: domains."""
    return check_message(raw, now=NOW, limits=LIMITS, defaults=DEFAULTS)


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
    report = lint(raw)
    assert report.verdict.label == verdict
    assert report.exit_code == exit_code
    data = json.loads(render_json(report, name))
    assert data["file"] == name
    assert data["verdict"] == verdict
    for finding in data["findings"]:
        assert set(finding) >= {"code", "severity", "detail"}
        assert finding["severity"] in ("info", "warning", "error")


def test_text_explains_and_advises() -> None:
    raw = (SAMPLES / "double-extension.eml").read_bytes()
    text = render_text(lint(raw), "x.eml")
    assert "ERROR dangerous-attachment (hold)" in text
    assert "Why: " in text and "Fix: " in text
    assert text.endswith("x.eml: the gateway would hold it for an operator.")


def test_a_structural_refusal_is_reported() -> None:
    raw = b"From: a@b.test\r\n" + b"X-Big: " + b"x" * 200_000 + b"\r\n\r\nbody\r\n"
    report = lint(raw)
    assert report.exit_code == 2 and report.refusal.startswith("552")


def test_command(capsys: pytest.CaptureFixture[str]) -> None:
    sample = str(SAMPLES / "link-javascript.eml")
    code = main(
        ["check", sample, "--json", "--policies", str(POLICIES), "--dealer", "example-motors"]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["verdict"] == "tag"
    assert [f["code"] for f in out["findings"]] == ["link-defect"]
    assert main(["check", sample, "--policies", str(POLICIES), "--dealer", "nobody"]) == 3
