"""``mailgate policy check``: validate a policies directory and render the outcome.

The CLI calls ``policy_check`` and prints its text; CI uses the exit code as its gate.
Validation is exactly what a reload does (``load_policy_set``), so a directory that passes
here is one the gateway will accept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gateway.errors import PolicyError, Problem
from gateway.policy.loader import load_policy_set
from gateway.policy.model import PolicySet

__all__ = ["format_problems", "policy_check", "summary"]

EXIT_OK = 0
EXIT_INVALID = 1


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def format_problems(problems: Sequence[Problem]) -> str:
    """Render one line per problem: ``file: key: message`` (no trailing newline)."""
    # One line each, so that `grep`, CI annotations and `wc -l` work on the output.
    return "\n".join(" ".join(str(p).splitlines()) for p in problems)


def summary(policy_set: PolicySet) -> str:
    """Render the one-line success summary, e.g. ``3 dealers, 12 checks: OK``."""
    return (
        f"{_plural(len(policy_set.dealers), 'dealer')}, "
        f"{_plural(len(policy_set.defaults), 'check')}: OK"
    )


def policy_check(directory: Path) -> tuple[int, str]:
    """Validate ``directory``; return ``(exit code, text to print)``.

    Exit code 0 with a one-line summary when the set validates, 1 with one line per
    problem otherwise.
    """
    try:
        policy_set = load_policy_set(directory)
    except PolicyError as exc:
        return EXIT_INVALID, format_problems(exc.problems)
    return EXIT_OK, summary(policy_set)
