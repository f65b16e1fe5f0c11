"""The policy store: validate-then-swap reloads that keep the last good set."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.errors import PolicyError
from gateway.policy.loader import load_policy_set
from gateway.policy.model import PolicySet
from gateway.policy.store import PolicyStore

from .policyfiles import MakeDir, dealer_toml, write_tree


def test_loads_the_directory_unless_given_a_set(make_dir: MakeDir) -> None:
    root = make_dir()
    store = PolicyStore(root)
    assert store.directory == root
    assert set(store.current.dealers) == {"good-motors"}
    given = load_policy_set(root)
    assert PolicyStore(root, given).current is given


def test_refuses_to_start_with_an_invalid_set(make_dir: MakeDir) -> None:
    root = make_dir({"defaults.toml": None})
    with pytest.raises(PolicyError):
        PolicyStore(root)


def test_reload_swaps_in_a_valid_set(make_dir: MakeDir) -> None:
    root = make_dir()
    outcomes: list[str] = []
    store = PolicyStore(root, on_reload=outcomes.append)
    before = store.current
    write_tree(root, {"dealers/new-motors.toml": dealer_toml("new-motors")})
    result = store.reload()
    assert result.ok
    assert result.problems == ()
    assert result.policy_set is store.current is not before
    assert set(store.current.dealers) == {"good-motors", "new-motors"}
    assert outcomes == ["ok"]


def test_reload_keeps_the_old_set_on_failure(
    make_dir: MakeDir, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_dir()
    outcomes: list[str] = []
    store = PolicyStore(root, on_reload=outcomes.append)
    before = store.current
    write_tree(
        root,
        {
            "dealers/new-motors.toml": dealer_toml("new-motors"),  # valid, but not alone:
            "dealers/good-motors.toml": dealer_toml("good-motors", extra="colour = 1\n"),
        },
    )
    with caplog.at_level(logging.ERROR, logger="gateway.policy"):
        result = store.reload()
    assert not result.ok
    assert result.policy_set is store.current is before  # nothing of the new set applied
    assert [(Path(p.file).name, p.key) for p in result.problems] == [("good-motors.toml", "colour")]
    assert outcomes == ["failed"]
    assert "keeping the current set" in caplog.text
    assert "colour: unknown key" in caplog.text

    write_tree(root, {"dealers/good-motors.toml": dealer_toml("good-motors")})
    assert store.reload().ok
    assert set(store.current.dealers) == {"good-motors", "new-motors"}
    assert outcomes == ["failed", "ok"]


def test_a_crashing_loader_keeps_the_old_set_and_raises(make_dir: MakeDir) -> None:
    root = make_dir()
    calls = 0

    def loader(directory: Path) -> PolicySet:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("bug")
        return load_policy_set(directory)

    outcomes: list[str] = []
    store = PolicyStore(root, on_reload=outcomes.append, loader=loader)
    before = store.current
    with pytest.raises(RuntimeError):
        store.reload()
    assert store.current is before
    assert outcomes == ["failed"]


def test_a_failing_hook_does_not_undo_the_reload(
    make_dir: MakeDir, caplog: pytest.LogCaptureFixture
) -> None:
    def hook(outcome: str) -> None:
        raise ValueError(outcome)

    root = make_dir()
    store = PolicyStore(root, on_reload=hook)
    write_tree(root, {"dealers/new-motors.toml": dealer_toml("new-motors")})
    with caplog.at_level(logging.ERROR, logger="gateway.policy"):
        assert store.reload().ok
    assert "new-motors" in store.current.dealers
    assert "policy reload hook failed" in caplog.text
