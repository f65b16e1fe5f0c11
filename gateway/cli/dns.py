"""``mailgate dns check [--dealer ID]``: check the dealers' and the gateway's DNS records.

Runs the checks of ``gateway/dns/selfcheck.py`` once against the resolver of ``[dns]`` and
prints the report, with the record to publish for each problem. Exit code 0 when every
check passes, 1 when any fails (or could not run), 2 for usage or configuration errors.
The running server repeats the same checks every ``dns.check_interval`` and exports them
as metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from typing import Any

from gateway.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, settings_for
from gateway.dns.resolver import from_settings
from gateway.dns.selfcheck import config_from, render, run_checks
from gateway.errors import PolicyError
from gateway.policy.loader import load_policy_set

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``dns check`` to the ``mailgate`` parser."""
    dns = subparsers.add_parser("dns", help="DNS self-checks")
    commands = dns.add_subparsers(dest="dns_command", required=True)
    p = commands.add_parser(
        "check", help="check SPF, DKIM, DMARC, bounce MX, PTR/HELO and blocklists"
    )
    p.add_argument("--dealer", help="check only this dealer (skips the gateway's own checks)")
    p.add_argument("--json", action="store_true", help="print the outcomes as JSON")
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    """Run the checks once and print the report."""
    settings = settings_for(args)
    try:
        policies = load_policy_set(settings.server.policies_dir)
    except PolicyError as exc:
        print(f"mailgate: the policies do not load:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.dealer and policies.dealer(args.dealer) is None:
        print(f"mailgate: no dealer {args.dealer!r} in {settings.server.policies_dir}",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    report = asyncio.run(
        run_checks(
            from_settings(settings.dns),
            policies,
            config_from(settings),
            dealer=args.dealer,
            hostname=settings.server.hostname,
        )
    )
    if args.json:
        print(json.dumps([asdict(o) for o in report.outcomes], indent=2))
    else:
        print(render(report))
    return EXIT_OK if report.ok else EXIT_FAIL
