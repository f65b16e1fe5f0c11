"""``mailgate policy check [DIR]``: validate a policy directory and list every problem.

The CI gate for policy edits: it runs the loader a reload runs (``gateway.policy.check``)
and exits non-zero with every problem, each naming its file and key. ``--json`` prints
``{"ok", "directory", "dealers", "checks", "problems": [{"file", "key", "message"}]}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gateway.cli.common import EXIT_FAIL, EXIT_OK, add_json, settings_for
from gateway.errors import PolicyError
from gateway.policy.check import policy_check
from gateway.policy.loader import load_policy_set


def cmd_policy_check(args: argparse.Namespace) -> int:
    """Validate a policy directory and list every problem."""
    directory: Path = args.directory or settings_for(args).server.policies_dir
    if not args.json:
        code, text = policy_check(directory)
        print(text)
        return code
    data: dict[str, Any] = {"directory": str(directory), "dealers": [], "checks": 0}
    try:
        policies = load_policy_set(directory)
    except PolicyError as exc:
        data["ok"] = False
        data["problems"] = [
            {"file": p.file, "key": p.key, "message": p.message} for p in exc.problems
        ]
    else:
        data.update(ok=True, dealers=sorted(policies.dealers), checks=len(policies.defaults))
        data["problems"] = []
    print(json.dumps(data, indent=2))
    return EXIT_OK if data["ok"] else EXIT_FAIL


def register(subparsers: Any) -> None:
    """Add ``policy check`` to the ``mailgate`` subcommands."""
    policy = subparsers.add_parser("policy", help="policy files").add_subparsers(
        dest="policy_command", required=True, metavar="COMMAND"
    )
    p = policy.add_parser(
        "check", help="validate a policy directory", description=__doc__.split("\n\n")[1]
    )
    p.add_argument(
        "directory", nargs="?", type=Path, help="the directory (default: server.policies_dir)"
    )
    add_json(p, "the outcome")
    p.set_defaults(func=cmd_policy_check)
