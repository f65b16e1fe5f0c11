"""Tests never depend on what an operator added to the checkout's ``policies/``.

The README's "Configure a dealer" writes ``policies/dealers/acme-motors.toml`` and a key
under ``policies/keys/`` into the checkout. Every test that needs policy files takes a copy
of the shipped ones (``tests/shipped.py``); these checks keep it that way: the shipped
list is what git tracks, the copy leaves an operator's files behind, and no test module
names the checkout's policy directory in any other way.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.policy.check import policy_check
from gateway.policy.loader import load_policy_set
from tests.shipped import CHECKOUT_POLICIES, REPO, SHIPPED, copy_shipped

ACME = """\
dealer_id = "acme-motors"
name = "Acme Motors"
auth_users = ["acme-crm"]
from_domains = ["acmemotors.example"]
contacts = ["gm@acmemotors.example"]

[[dkim]]
domain = "acmemotors.example"
selector = "mg1"
key_file = "keys/acmemotors.example.mg1.pem"
"""


def test_the_shipped_list_is_what_git_tracks() -> None:
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        [git, "ls-files", "policies"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(listed) == sorted(f"policies/{name}" for name in SHIPPED)


def test_a_copy_leaves_an_operators_dealers_keys_and_presets_behind(tmp_path: Path) -> None:
    # The checkout as an operator leaves it after the README's "Configure a dealer".
    checkout = tmp_path / "checkout"
    shutil.copytree(CHECKOUT_POLICIES, checkout)
    (checkout / "dealers" / "acme-motors.toml").write_text(ACME)
    (checkout / "keys").mkdir(exist_ok=True)
    (checkout / "keys" / "acmemotors.example.mg1.pem").write_text("not a key\n")
    (checkout / "presets" / "house.toml").write_text("[consent]\nenforce = true\n")

    copied = copy_shipped(tmp_path / "copy", source=checkout)

    found = sorted(p.relative_to(copied).as_posix() for p in copied.rglob("*") if p.is_file())
    assert found == sorted(SHIPPED)
    assert list(load_policy_set(copied).dealers) == ["example-motors"]
    code, text = policy_check(copied)
    assert code == 0 and text.startswith("1 dealer, ")


def _checkout_policy_paths(tree: ast.AST) -> list[int]:
    """Lines where a module builds a path to the checkout's policies directory."""

    def names_checkout(node: ast.expr) -> bool:
        # REPO, ROOT, CHECKOUT... or Path(__file__).resolve().parents[N]
        if isinstance(node, ast.Name):
            return node.id.isupper()
        return (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "parents"
        )

    def is_policies(node: ast.expr) -> bool:
        return (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.split("/")[0] == "policies"
        )

    def joins_checkout(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Div)
            and is_policies(node.right)
            and names_checkout(node.left)
        )

    def relative_path(node: ast.AST) -> bool:
        # Path("policies"): the checkout's directory when tests run from its root
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "Path"
            and bool(node.args)
            and is_policies(node.args[0])
        )

    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.expr) and (joins_checkout(node) or relative_path(node))
    ]


def test_no_test_module_reaches_for_the_checkouts_policies() -> None:
    allowed = {REPO / "tests" / "shipped.py"}
    offenders = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        if path in allowed:
            continue
        for line in _checkout_policy_paths(ast.parse(path.read_text(), str(path))):
            offenders.append(f"{path.relative_to(REPO)}:{line}")
    assert offenders == [], "use tests.shipped.copy_shipped / shipped_text instead"


def test_the_check_would_see_the_old_pattern() -> None:
    old = 'REPO = Path(__file__).resolve().parents[2]\nshutil.copytree(REPO / "policies", t)\n'
    older = 'p = Path(__file__).resolve().parents[2] / "policies/defaults.toml"\n'
    assert _checkout_policy_paths(ast.parse(old)) == [2]
    assert _checkout_policy_paths(ast.parse(older)) == [1]
    assert _checkout_policy_paths(ast.parse('p = tmp_path / "policies"\n')) == []
