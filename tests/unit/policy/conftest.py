"""Fixtures for the policy tests: a fresh policies directory under tmp_path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.shipped import copy_shipped

from .policyfiles import SAMPLES, MakeDir, Tree, dealer_toml, defaults_toml, write_tree


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """A copy of the shipped policy files, and nothing else the checkout may hold."""
    return copy_shipped(tmp_path / "shipped")


@pytest.fixture
def make_dir(tmp_path: Path) -> MakeDir:
    """Build a policies directory: generated defaults, one good dealer, then ``tree``.

    ``sample`` names a directory under tests/data/policies/ copied in before ``tree``.
    """

    def make(tree: Tree | None = None, *, sample: str = "") -> Path:
        root = tmp_path / "policies"
        write_tree(
            root,
            {
                "defaults.toml": defaults_toml(),
                "dealers/good-motors.toml": dealer_toml("good-motors"),
            },
        )
        if sample:
            shutil.copytree(SAMPLES / sample, root, dirs_exist_ok=True)
        write_tree(root, tree or {})
        return root

    return make
