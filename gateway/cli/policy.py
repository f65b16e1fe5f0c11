"""``mailgate policy check [DIR]``: validate a policy directory and list every problem.

The CI gate for policy edits: it runs the loader a reload runs (``gateway.policy.check``)
and exits non-zero with every problem, each naming its file and key.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.cli.common import settings_for
from gateway.policy.check import policy_check


def cmd_policy_check(args: argparse.Namespace) -> int:
    """Validate a policy directory and list every problem."""
    directory: Path = args.directory or settings_for(args).server.policies_dir
    code, text = policy_check(directory)
    print(text)
    return code


def register(subparsers: Any) -> None:
    """Add ``policy check`` to the ``mailgate`` subcommands."""
    policy = subparsers.add_parser("policy", help="policy files").add_subparsers(
        dest="policy_command", required=True
    )
    p = policy.add_parser("check", help="validate a policy directory")
    p.add_argument("directory", nargs="?", type=Path)
    p.set_defaults(func=cmd_policy_check)
