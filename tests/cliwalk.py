"""Walking the ``mailgate`` parser with bad input: the arguments to give, what to assert."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gateway.cli.common import EXIT_CODES
from gateway.cli.main import main
from gateway.cli.manual import Command, options, takes_path

DOCUMENTED = {code for code, _ in EXIT_CODES}

_FLAGS = (
    argparse._StoreTrueAction,
    argparse._StoreFalseAction,
    argparse._StoreConstAction,
    argparse._CountAction,
    argparse._AppendConstAction,
    argparse._VersionAction,
)


def _value(action: argparse.Action, tmp: Path) -> str:
    if action.choices:
        return str(next(iter(action.choices)))
    if takes_path(action):
        return str(tmp / "missing" / action.dest)
    return "nosuch"


def argv_for(
    command: Command, tmp: Path, optional: str | None, skip: frozenset[str] = frozenset()
) -> list[str]:
    """The command with every argument it needs; ``optional``: also every valued option.

    Values: a choice's first choice, a missing path for a file, else ``nosuch`` (no such
    dealer, id or address); options whose ``dest`` is in ``skip`` are left out.
    """
    argv = list(command.words)
    for action in options(command.parser):
        if action.dest in skip:
            continue
        if not action.option_strings:
            argv.append(_value(action, tmp))
        elif action.required:
            argv += [action.option_strings[0], _value(action, tmp)]
        elif optional is not None and not isinstance(action, _FLAGS) and not action.choices:
            argv += [action.option_strings[0], optional]
    return argv


def run_bad(config: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> int:
    """Run ``mailgate --config CONFIG ARGV`` in process; assert it failed (or not) properly."""
    code = main(["--config", str(config), *argv])
    out, err = capsys.readouterr()
    shown = " ".join(argv)
    assert code in DOCUMENTED, f"mailgate {shown}: exit {code}\n{err}"
    assert "Traceback" not in err + out, f"mailgate {shown}:\n{err}"
    assert "unexpected error" not in err, f"mailgate {shown}: a bug:\n{err}"
    if code != 0:
        # a refusal on stderr; a check's report (policy check, dns check) is its output
        assert (err + out).strip(), f"mailgate {shown}: exit {code} and nothing said"
    return code
