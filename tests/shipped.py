"""The policy files the repository ships, copied into a directory the test owns.

No test reads the checkout's ``policies/`` directory as its live policy directory: an
operator who follows the README's "Configure a dealer" adds
``policies/dealers/acme-motors.toml`` and ``policies/keys/`` to the checkout, and that must
change nothing a test sees. ``copy_shipped`` copies exactly the files named in
``SHIPPED`` (the defaults, the presets and the example dealer), whatever else the
directory holds; ``tests/test_policy_isolation.py`` keeps the list equal to what git
tracks and checks that no test module reaches for the checkout's directory another way.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKOUT_POLICIES = REPO / "policies"

# Every file under policies/ that the repository ships (`git ls-files policies`).
SHIPPED = (
    "defaults.toml",
    "dealers/example-motors.toml",
    "presets/README.md",
    "presets/can-spam.toml",
    "presets/casl.toml",
    "presets/crm-windows.toml",
    "presets/gdpr.toml",
)


def copy_shipped(target: Path, source: Path = CHECKOUT_POLICIES) -> Path:
    """Copy the shipped policy files from ``source`` into ``target``; return ``target``."""
    for name in SHIPPED:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, destination)
    return target


def shipped_text(name: str | Path) -> str:
    """The text of one shipped policy file (``name`` must be in ``SHIPPED``)."""
    key = Path(name).as_posix()
    if key not in SHIPPED:
        raise ValueError(f"{key} is not a shipped policy file")
    return (CHECKOUT_POLICIES / key).read_text(encoding="utf-8")
