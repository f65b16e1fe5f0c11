"""The ``mailgate`` command.

``serve`` runs the gateway. Offline commands work on the files and the store directly:
``policy check`` validates a policy directory, ``credentials`` manages dealers' SMTP
logins, ``queue ls`` lists what is stored, ``send-test`` submits a real message the way a
CRM would. Exit codes: 0 success, 1 the thing checked is not right, 2 usage or
configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import secrets
import ssl
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from gateway.errors import ConfigError, GatewayError
from gateway.logs import LogFormat, configure_logging
from gateway.settings import Settings, load_settings, parse_hostport

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _settings(args: argparse.Namespace) -> Settings:
    path: Path | None = args.config
    if path is None and Path("mailgate.toml").exists():
        path = Path("mailgate.toml")
    return load_settings(path)


def _log_format(args: argparse.Namespace) -> LogFormat:
    try:
        return _settings(args).server.log_format
    except ConfigError:
        return "text"  # the command itself reports the configuration error


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the gateway until SIGTERM."""
    from gateway.app import Gateway

    settings = _settings(args)
    configure_logging(settings.server.log_level, settings.server.log_format)

    async def main() -> None:
        gateway = await Gateway.build(settings)
        await gateway.run()

    asyncio.run(main())
    return EXIT_OK


def cmd_policy_check(args: argparse.Namespace) -> int:
    """Validate a policy directory and list every problem."""
    from gateway.policy.check import policy_check

    directory: Path = args.directory or _settings(args).server.policies_dir
    code, text = policy_check(directory)
    print(text)
    return code


def cmd_credentials(args: argparse.Namespace) -> int:
    """Create, list or delete SMTP AUTH credentials."""
    from gateway.passwords import hash_password
    from gateway.policy.loader import load_policy_set
    from gateway.storage.base import open_storage
    from gateway.types import Credential, DealerId

    settings = _settings(args)

    async def run() -> int:
        storage = await open_storage(settings.storage_url)
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
                if len(password) < 12:
                    print("passwords must have at least 12 characters", file=sys.stderr)
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


def cmd_queue_ls(args: argparse.Namespace) -> int:
    """List stored messages, newest first."""
    from gateway.storage.base import open_storage
    from gateway.types import MessageState

    settings = _settings(args)

    async def run() -> int:
        storage = await open_storage(settings.storage_url)
        try:
            state = MessageState(args.state) if args.state else None
            rows = await storage.list_messages(state=state, limit=args.limit)
            print(f"{'ID':<22} {'STATE':<11} {'DEALER':<16} {'ATT':>3}  RECIPIENT / LAST ERROR")
            for m in rows:
                print(f"{m.id:<22} {m.state.value:<11} {m.dealer_id:<16} {m.attempts:>3}  "
                      f"{m.rcpt}  {m.last_error or m.note}")  # fmt: skip
            return EXIT_OK
        finally:
            await storage.close()

    return asyncio.run(run())


def cmd_send_test(args: argparse.Namespace) -> int:
    """Submit one message through the gateway like a CRM would (STARTTLS + AUTH)."""
    import aiosmtplib

    settings = _settings(args)
    host, port = parse_hostport(args.server or settings.submission.listen)
    password = args.password or os.environ.get("MAILGATE_PASSWORD") or getpass.getpass()
    msg = EmailMessage()
    msg["From"] = args.sender
    msg["To"] = args.to
    msg["Subject"] = args.subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=args.sender.rpartition("@")[2] or None)
    msg.set_content("This is a test message sent with `mailgate send-test`.\n")
    context = ssl.create_default_context()
    if args.insecure:
        # The first-run certificate is self-signed; production certificates verify.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

    async def run() -> int:
        try:
            _errors, reply = await aiosmtplib.send(
                msg, hostname=host, port=port, start_tls=True, tls_context=context,
                username=args.user, password=password, timeout=30,
            )  # fmt: skip
        except aiosmtplib.SMTPResponseException as exc:
            print(f"refused: {exc.code} {exc.message}", file=sys.stderr)
            return EXIT_FAIL
        except aiosmtplib.SMTPException as exc:
            print(f"failed: {exc}", file=sys.stderr)
            return EXIT_FAIL
        print(f"250 {reply}")
        return EXIT_OK

    return asyncio.run(run())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="mailgate", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="settings file (default ./mailgate.toml)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gateway")
    p.set_defaults(func=cmd_serve)

    policy = sub.add_parser("policy", help="policy files").add_subparsers(
        dest="policy_command", required=True
    )
    p = policy.add_parser("check", help="validate a policy directory")
    p.add_argument("directory", nargs="?", type=Path)
    p.set_defaults(func=cmd_policy_check)

    creds = sub.add_parser("credentials", help="dealers' SMTP logins").add_subparsers(
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

    queue = sub.add_parser("queue", help="the message store").add_subparsers(
        dest="queue_command", required=True
    )
    p = queue.add_parser("ls", help="list messages, newest first")
    p.add_argument("--state", choices=["queued", "held", "delivered", "failed", "quarantined"])
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_queue_ls)

    p = sub.add_parser("send-test", help="submit a test message like a CRM would")
    p.add_argument("--server", help="host:port (default: submission.listen)")
    p.add_argument("--user", required=True)
    p.add_argument("--password", help="or MAILGATE_PASSWORD, or asked for")
    p.add_argument("--from", dest="sender", required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--subject", default="Mailgate test message")
    p.add_argument("--insecure", action="store_true",
                   help="accept a self-signed certificate (first-run setups)")  # fmt: skip
    p.set_defaults(func=cmd_send_test)
    __import__("gateway.cli.feedback", fromlist=["register"]).register(sub)
    __import__("gateway.cli.dkim", fromlist=["register"]).register(sub)
    __import__("gateway.cli.duplicates", fromlist=["register"]).register(sub)
    __import__("gateway.cli.held", fromlist=["register"]).register(sub)
    __import__("gateway.cli.check", fromlist=["register"]).register(sub)
    __import__("gateway.cli.reputation", fromlist=["register"]).register(sub)
    __import__("gateway.cli.admin", fromlist=["register"]).register(sub)
    __import__("gateway.cli.consent", fromlist=["register"]).register(sub)
    __import__("gateway.cli.dns", fromlist=["register"]).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mailgate`` command."""
    args = build_parser().parse_args(argv)
    # Offline commands log warnings through the same escaping formatter as `serve`.
    configure_logging("warning", _log_format(args))
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return EXIT_FAIL
