"""``mailgate credentials set|list|delete``: dealers' SMTP AUTH logins, offline on the store.

A login maps to a dealer only when its username is in the dealer's ``auth_users``; the
password is stored as an scrypt hash (``gateway.passwords``) and shown once when generated.
The running gateway reads logins from the store at each AUTH, so a change applies at once.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from datetime import UTC, datetime
from typing import Any

from gateway.cli import store
from gateway.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, config_path, settings_for
from gateway.passwords import hash_password
from gateway.policy.loader import load_policy_set
from gateway.types import Credential, DealerId

MIN_PASSWORD = 12


def cmd_credentials(args: argparse.Namespace) -> int:
    """Create, list or delete SMTP AUTH credentials."""
    settings = settings_for(args)

    async def run() -> int:
        storage = await store.open_existing(settings, config_path(args))
        try:
            if args.action == "set":
                policies = load_policy_set(settings.server.policies_dir)
                dealer = policies.dealer(args.dealer)
                if dealer is None:
                    print(f"no dealer {args.dealer!r} in {settings.server.policies_dir}",
                          file=sys.stderr)  # fmt: skip
                    return EXIT_FAIL
                if args.username not in dealer.auth_users:
                    print(
                        f"{args.username!r} is not in auth_users of {dealer.source}; "
                        "add it there first so the login maps to this dealer",
                        file=sys.stderr,
                    )
                    return EXIT_FAIL
                generated = False
                if args.password_stdin:
                    password = sys.stdin.readline().rstrip("\r\n")
                elif args.password is not None:
                    password = args.password
                else:
                    password, generated = secrets.token_urlsafe(18), True
                if len(password) < MIN_PASSWORD:
                    print(f"passwords must have at least {MIN_PASSWORD} characters",
                          file=sys.stderr)  # fmt: skip
                    return EXIT_USAGE
                await storage.set_credential(
                    Credential(
                        args.username,
                        DealerId(args.dealer),
                        hash_password(password),
                        datetime.now(UTC),
                    )
                )
                print(f"credential set: {args.username} -> {args.dealer}")
                if generated:
                    print(f"password: {password}")
                return EXIT_OK
            if args.action == "list":
                for cred in await storage.list_credentials():
                    print(f"{cred.username}\t{cred.dealer_id}\t{cred.created_at:%Y-%m-%d %H:%M}")
                return EXIT_OK
            removed = await storage.delete_credential(args.username)
            print("deleted" if removed else f"no credential {args.username!r}")
            return EXIT_OK if removed else EXIT_FAIL
        finally:
            await storage.close()

    return asyncio.run(run())


def register(subparsers: Any) -> None:
    """Add ``credentials`` to the ``mailgate`` subcommands."""
    creds = subparsers.add_parser("credentials", help="dealers' SMTP logins").add_subparsers(
        dest="action", required=True
    )
    p = creds.add_parser("set", help="create or replace a login (prints a generated password)")
    p.add_argument("dealer")
    p.add_argument("username")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password", help="use this password (visible in the process list)")
    g.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(func=cmd_credentials)
    p = creds.add_parser("list", help="list logins")
    p.set_defaults(func=cmd_credentials)
    p = creds.add_parser("delete", help="remove a login")
    p.add_argument("username")
    p.set_defaults(func=cmd_credentials)
