"""``mailgate check FILE.eml [--dealer ID] [--json]``: lint a message before sending.

Offline: reads the file and the policy directory, runs ``gateway.intake.lint`` and prints the
findings with what to fix. Exit status: 0 the gateway would pass it, 1 it would tag or
repair it, 2 it would hold or refuse it; 3 for a usage problem (no such file or dealer),
so that scripts can tell "the message is bad" from "the command was wrong".
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gateway.findings import CATALOGUE
from gateway.intake.lint import lint, render_json, render_text, stand_in_dealer
from gateway.policy.model import CheckRule, DealerPolicy
from gateway.settings import load_settings

EXIT_USAGE = 3


def _policies_dir(args: argparse.Namespace) -> Path:
    config: Path | None = args.config
    if config is None and Path("mailgate.toml").exists():
        config = Path("mailgate.toml")
    return load_settings(config).server.policies_dir


def _dealer(args: argparse.Namespace, raw: bytes) -> DealerPolicy | None:
    from gateway.policy.loader import load_policy_set

    directory = args.policies or _policies_dir(args)
    if not directory.is_dir():
        if args.dealer:
            return None
        defaults = {code: CheckRule(kind.default_action) for code, kind in CATALOGUE.items()}
        return stand_in_dealer(raw, MappingProxyType(defaults))
    policies = load_policy_set(directory)
    if args.dealer:
        return policies.dealer(args.dealer)
    return stand_in_dealer(raw, policies.defaults)


def cmd_check(args: argparse.Namespace) -> int:
    """Run the gateway's checks on one saved message and print the verdict."""
    path: Path = args.file
    try:
        raw = path.read_bytes()
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    dealer = _dealer(args, raw)
    if dealer is None:
        print(f"no dealer {args.dealer!r} in the policy directory", file=sys.stderr)
        return EXIT_USAGE
    report = lint(raw, dealer, datetime.now(UTC))
    print(render_json(report) if args.json else render_text(report, path.name))
    return report.exit_code


def register(subparsers: Any) -> None:
    """Add ``check`` to the ``mailgate`` command."""
    p = subparsers.add_parser(
        "check", help="run the gateway's checks on a saved message or template"
    )
    p.add_argument("file", type=Path, help="the message (.eml) to check")
    p.add_argument("--dealer", help="check with this dealer's policy (default: the defaults)")
    p.add_argument("--policies", type=Path, help="policy directory (default: from settings)")
    p.add_argument("--json", action="store_true", help='print {"verdict", "findings": [...]}')
    p.set_defaults(func=cmd_check)
