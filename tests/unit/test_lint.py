from __future__ import annotations

import dataclasses
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
from tests.shipped import copy_shipped

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "messages" / "inspection"
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


def test_several_files_one_json_line_each_and_the_worst_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    looping = tmp_path / "looping.eml"
    # What intake refuses before the checks, check refuses too (RFC 5321 §6.3 hop count).
    looping.write_bytes(
        b"Received: from a by b; Mon, 1 Jun 2026 10:00:00 +0000\r\n" * 60
        + (SAMPLES / "good-html.eml").read_bytes()
    )
    files = [SAMPLES / "good-html.eml", SAMPLES / "html-misnested.eml", looping]
    policies = copy_shipped(tmp_path / "policies")
    code = main(["check", *map(str, files), "--json", "--policies", str(policies)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["file"] for line in lines] == [str(f) for f in files]
    assert [line["verdict"] for line in lines] == ["accept", "tag", "reject"]
    assert lines[2]["reply"].startswith("554 5.4.6 ") and lines[2]["findings"] == []
    assert code == 2


def test_a_file_with_lf_line_ends_is_judged_as_an_smtp_client_would_send_it() -> None:
    raw = (SAMPLES / "good-html.eml").read_bytes()
    crlf = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    lf, cr = crlf.replace(b"\r\n", b"\n"), crlf.replace(b"\r\n", b"\r")
    strict = dataclasses.replace(LIMITS, bare_line_endings="reject")
    verdicts = {
        (check_message(data, now=NOW, limits=strict, defaults=DEFAULTS).verdict)
        for data in (crlf, lf, cr)
    }
    assert verdicts == {lint(crlf).verdict}
