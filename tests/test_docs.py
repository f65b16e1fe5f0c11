"""The README and docs/ point only at things that exist in the repository.

Every relative link names a file that exists (and a heading of it, after ``#``), every
path in backticks that looks like one of the repository's files exists, and every case
code (A1 ... G11) the pages use has its row in the case list of docs/testing.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.shipped import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"\b([A-G])([1-9][0-9]?)\b")
CASE_ROW = re.compile(r"^\| ([A-G][1-9][0-9]?) \|", re.MULTILINE)
CREATED = ("policies/dealers/acme", "policies/keys")  # "Add a dealer" writes them
REPO_PATH = re.compile(r"`((?:gateway|tests|deploy|policies|bench|docs|\.ci)/[\w./-]*)`")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.MULTILINE)}


def test_slugs_follow_github() -> None:
    assert slug("Consent presets and the CRM's headers") == "consent-presets-and-the-crms-headers"
    assert slug("The admin API and `mailgate admin`") == "the-admin-api-and-mailgate-admin"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not ours to check here
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (
            anchor and linked.suffix == ".md" and anchor not in anchors(linked)
        ):
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_named_repository_paths_exist(page: Path) -> None:
    missing = []
    for name in REPO_PATH.findall(page.read_text()):
        if any(c in name for c in "<*") or name.startswith(CREATED):
            continue  # a pattern, or what the README has the reader create
        if not (REPO / name.rstrip("/")).exists():
            missing.append(name)
    assert missing == []


def test_every_case_code_used_is_in_the_case_list() -> None:
    listed = set(CASE_ROW.findall((REPO / "docs" / "testing.md").read_text()))
    assert len(listed) == 96
    used = {f"{m.group(1)}{m.group(2)}" for page in PAGES for m in CODE.finditer(page.read_text())}
    assert used - listed == set()
