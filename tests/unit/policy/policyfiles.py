"""Helpers that write small policy directories for the loader and store tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from gateway.findings import CATALOGUE

REPO = Path(__file__).resolve().parents[3]
SAMPLES = REPO / "tests" / "data" / "policies"

Tree = Mapping[str, str | None]  # relative path -> text; None deletes the file
MakeDir = Callable[..., Path]


def defaults_toml(options: Mapping[str, str] | None = None, *, skip: str = "") -> str:
    """A defaults.toml with every catalogue code at its default action.

    ``options`` maps a code to extra inline-table text, e.g. ``'window = "24h"'``.
    """
    lines = ['null_sender = "reject"', 'on_suspended = "reject"', "", "[checks]"]
    for code, kind in CATALOGUE.items():
        if code == skip:
            continue
        extra = (options or {}).get(code)
        body = f'action = "{kind.default_action.label}"' + (f", {extra}" if extra else "")
        lines.append(f"{code} = {{ {body} }}")
    return "\n".join(lines) + "\n"


def dealer_toml(dealer_id: str, *, domain: str = "", user: str = "", extra: str = "") -> str:
    """A valid dealer file; ``extra`` is appended verbatim (top-level keys, then tables)."""
    domain = domain or f"{dealer_id}.test"
    user = user or f"{dealer_id}-crm"
    return (
        f'dealer_id = "{dealer_id}"\n'
        f'name = "{dealer_id.replace("-", " ").title()}"\n'
        f'auth_users = ["{user}"]\n'
        f'from_domains = ["{domain}"]\n'
        f'contacts = ["gm@{domain}"]\n'
        f"{extra}"
    )


def write_tree(root: Path, tree: Tree) -> None:
    for rel, text in tree.items():
        path = root / rel
        if text is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
