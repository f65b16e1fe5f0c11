"""Every admin API path the code, the policies and the docs name is one the gateway serves.

Hints in command output ("reload the policies (POST /api/policies/reload)"), comments in
``policies/defaults.toml`` and the docs tell an operator which request to make; a path
that is not in the endpoint table (``gateway/admin/endpoints.py``) is a 404 for whoever
follows it. Checked: each ``/api/...`` path mentioned anywhere in ``gateway/``,
``policies/``, ``docs/``, ``deploy/`` and the README matches an endpoint (a ``{...}``
segment, a placeholder or an f-string field, stands for any value), with the method when
one is named; and a request line naming a path outside ``/api`` ("POST /policies/reload")
names one of the few paths served there.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.admin.endpoints import ENDPOINTS
from tests.shipped import CHECKOUT_POLICIES, SHIPPED, shipped_text

REPO = Path(__file__).resolve().parents[1]
SUFFIXES = (".py", ".toml", ".md", ".yaml", ".yml", ".example", ".cfg", ".service")
# One segment: a {placeholder} (an f-string field may hold parentheses) or a plain name.
_SEGMENT = r"(?:\{[^{}\s]*\}|[A-Za-z0-9_.*:-]+)"
API_PATH = re.compile(rf"(?:\b(GET|POST|PUT|PATCH|DELETE)\s+`?)?(/api(?:/{_SEGMENT})+)")
REQUEST_LINE = re.compile(rf"\b(GET|POST|PUT|PATCH|DELETE)\s+`?(/{_SEGMENT}(?:/{_SEGMENT})*/?)")
# Routes that are not the API's: the catch-all that answers JSON 404s (admin/api.py).
NOT_MENTIONS = {"/api/{rest:path}"}
# Served outside /api: the operators' listener's own routes (web/http.py build_app) and the
# public listener's (web/unsubscribe.py, web/status.py); tests/integration/test_listeners.py
# requests each of them.
OUTSIDE_API = ("/metrics", "/healthz", "/readyz", "/u/{token}", "/status/{dealer}/{token}")


def texts() -> list[tuple[str, str]]:
    """(file name in the checkout, text) of every file the scan reads."""
    files = [REPO / "README.md"]
    for root in (REPO / "gateway", REPO / "docs", REPO / "deploy"):
        files += [p for p in root.rglob("*") if p.is_file() and p.suffix in SUFFIXES]
    found = [(str(p.relative_to(REPO)), p.read_text(encoding="utf-8")) for p in sorted(files)]
    # The policy files as shipped, whatever else a checkout's policy directory holds.
    return found + [(f"{CHECKOUT_POLICIES.name}/{n}", shipped_text(n)) for n in SHIPPED]


def segments(path: str) -> list[str]:
    return path.rstrip("./").split("/")[1:]


def matches(mentioned: str, served: str) -> bool:
    said, route = segments(mentioned), segments(served)
    return len(said) == len(route) and all(
        a == b or a.startswith("{") or b.startswith("{") for a, b in zip(said, route, strict=True)
    )


TEXTS = texts()
IDS = [name for name, _text in TEXTS]


def test_the_scan_finds_the_mentions() -> None:
    found = {m.group(2) for _p, text in TEXTS for m in API_PATH.finditer(text)}
    # The reload hint and the defaults' comment are among them (issue 16, item 5).
    assert "/api/policies/reload" in found and "/api/openapi.json" in found
    assert len(found) > 20


def wrong_api_paths(text: str) -> list[str]:
    """``line: [METHOD] path`` for each /api path in ``text`` that no endpoint serves."""
    served = [(e.method, e.path) for e in ENDPOINTS] + [("GET", "/api/openapi.json")]
    wrong = []
    for match in API_PATH.finditer(text):
        method, mentioned = match.group(1), match.group(2).rstrip(".")
        if mentioned in NOT_MENTIONS:
            continue
        if not any(matches(mentioned, p) and method in (None, m) for m, p in served):
            line = text.count("\n", 0, match.start()) + 1
            wrong.append(f"{line}: {method} {mentioned}" if method else f"{line}: {mentioned}")
    return wrong


def wrong_request_lines(text: str) -> list[str]:
    """``line: request`` for each "METHOD /path" outside /api that nothing serves."""
    wrong = []
    for match in REQUEST_LINE.finditer(text):
        mentioned = match.group(2).rstrip(".")
        if mentioned == "/api" or mentioned.startswith("/api/"):
            continue  # wrong_api_paths
        if not any(matches(mentioned, p) for p in OUTSIDE_API):
            wrong.append(f"{text.count(chr(10), 0, match.start()) + 1}: {match.group(0)}")
    return wrong


def test_the_checks_tell_a_served_path_from_one_that_is_not() -> None:
    text = """hint: POST /policies/reload
    f"/api/dealers/{_seg(args.dealer)}/suspend" and GET /api/held/{id}, `GET /metrics`.
    POST /api/policy/reload, DELETE /api/health, GET /api/dealers/acme-motors/events
    """
    assert wrong_request_lines(text) == ["1: POST /policies/reload"]
    assert wrong_api_paths(text) == ["3: POST /api/policy/reload", "3: DELETE /api/health"]


@pytest.mark.parametrize(("path", "text"), TEXTS, ids=IDS)
def test_every_api_path_mentioned_is_served(path: str, text: str) -> None:
    assert wrong_api_paths(text) == [], path


@pytest.mark.parametrize(("path", "text"), TEXTS, ids=IDS)
def test_every_request_line_outside_the_api_names_a_served_path(path: str, text: str) -> None:
    assert wrong_request_lines(text) == [], path
