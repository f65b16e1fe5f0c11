"""``mailgate credentials set|list|delete``: dealers' SMTP AUTH logins, offline on the store.

A login maps to a dealer only when its username is in the dealer's ``auth_users``; the
password is stored as an scrypt hash (``gateway.passwords``) and shown once when generated.
The running gateway reads logins from the store at each AUTH, so a change applies at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from datetime import UTC, datetime
from typing import Any

from gateway.cli import store
from gateway.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    add_json,
    config_path,
    emit,
    settings_for,
)
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
                    print(f"mailgate: no dealer {args.dealer!r} in {settings.server.policies_dir}",
                          file=sys.stderr)  # fmt: skip
                    return EXIT_FAIL
                if args.username not in dealer.auth_users:
                    print(
                        f"mailgate: {args.username!r} is not in auth_users of {dealer.source}; "
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
                    print(f"mailgate: passwords must have at least {MIN_PASSWORD} characters",
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
                done = {
                    "username": args.username,
                    "dealer": args.dealer,
                    "password": password if generated else None,
                }

                def human(d: dict[str, str | None]) -> str:
                    text = f"credential set: {d['username']} -> {d['dealer']}"
                    return text + (f"\npassword: {d['password']}" if d["password"] else "")

                emit(args, done, human)
                return EXIT_OK
            if args.action == "list":
                rows = [
                    {"username": c.username, "dealer": c.dealer_id,
                     "created_at": c.created_at.isoformat()}
                    for c in await storage.list_credentials()
                ]  # fmt: skip
                if args.json:
                    print(json.dumps({"credentials": rows}, indent=2))
                for row in [] if args.json else rows:
                    print(f"{row['username']}\t{row['dealer']}\t{row['created_at'][:16]}")
                return EXIT_OK
            removed = await storage.delete_credential(args.username)
            if removed or args.json:
                emit(args, {"username": args.username, "deleted": removed}, lambda _d: "deleted")
            else:
                print(f"mailgate: no credential {args.username!r}", file=sys.stderr)
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
    p.add_argument("dealer", help="the dealer id (a file in the policies' dealers/)")
    p.add_argument("username", help="the login; must be in the dealer's auth_users")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password", help="use this password (visible in the process list)")
    g.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add_json(p, "the login (and a generated password)")
    p.set_defaults(func=cmd_credentials)
    p = creds.add_parser("list", help="list logins")
    add_json(p, "the logins")
    p.set_defaults(func=cmd_credentials)
    p = creds.add_parser("delete", help="remove a login")
    p.add_argument("username", help="the login to remove")
    add_json(p, "whether it was removed")
    p.set_defaults(func=cmd_credentials)
