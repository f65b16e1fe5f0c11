"""The package root holds only the shared modules, each named in docs/layout.md."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOT_LIMIT = 16  # files in gateway/ itself, __init__.py and __main__.py included


def test_the_package_root_stays_small_and_mapped() -> None:
    modules = sorted(p.name for p in (REPO / "gateway").glob("*.py"))
    assert len(modules) <= ROOT_LIMIT, modules
    layout = (REPO / "docs" / "layout.md").read_text()
    unmapped = [m for m in modules if m not in ("__init__.py", "__main__.py")
                and f"| `{m}` |" not in layout]  # fmt: skip
    assert not unmapped, f"root modules missing from the table in docs/layout.md: {unmapped}"
