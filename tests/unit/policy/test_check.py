"""``mailgate policy check``: exit codes and output lines."""

from __future__ import annotations

from pathlib import Path

from gateway.errors import Problem
from gateway.policy.check import format_problems, policy_check

from .policyfiles import MakeDir, dealer_toml


def test_shipped_directory_passes(shipped: Path) -> None:
    code, text = policy_check(shipped)
    assert code == 0
    assert text.endswith(": OK")
    assert text.startswith("1 dealer, ")


def test_summary_counts_dealers_and_checks(make_dir: MakeDir) -> None:
    root = make_dir({"dealers/b.toml": dealer_toml("b"), "dealers/c.toml": dealer_toml("c")})
    code, text = policy_check(root)
    assert code == 0
    assert text.startswith("3 dealers, ")


def test_problems_one_line_each(make_dir: MakeDir) -> None:
    root = make_dir(sample="several-problems")
    code, text = policy_check(root)
    assert code == 1
    lines = text.splitlines()
    assert len(lines) == 12
    assert all(line.startswith(str(root / "dealers" / "rough-motors.toml")) for line in lines)


def test_format_problems_flattens_newlines() -> None:
    text = format_problems([Problem("a.toml", "k", "one\ntwo"), Problem("b.toml", "", "bad")])
    assert text == "a.toml: k: one two\nb.toml: bad"
