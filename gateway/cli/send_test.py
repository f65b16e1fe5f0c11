"""``mailgate send-test``: submit one message through the gateway as a CRM would.

STARTTLS and AUTH on the submission listener, then MAIL/RCPT/DATA; prints the gateway's
250 reply, or the refusal with its code. ``--insecure`` accepts the self-signed
certificate a first-run gateway creates.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import ssl
import sys
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import aiosmtplib

from gateway.cli.common import EXIT_FAIL, EXIT_OK, settings_for
from gateway.settings import parse_hostport


def cmd_send_test(args: argparse.Namespace) -> int:
    """Submit one message through the gateway like a CRM would (STARTTLS + AUTH)."""
    settings = settings_for(args)
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


def register(subparsers: Any) -> None:
    """Add ``send-test`` to the ``mailgate`` subcommands."""
    p = subparsers.add_parser("send-test", help="submit a test message like a CRM would")
    p.add_argument("--server", help="host:port (default: submission.listen)")
    p.add_argument("--user", required=True)
    p.add_argument("--password", help="or MAILGATE_PASSWORD, or asked for")
    p.add_argument("--from", dest="sender", required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--subject", default="Mailgate test message")
    p.add_argument("--insecure", action="store_true",
                   help="accept a self-signed certificate (first-run setups)")  # fmt: skip
    p.set_defaults(func=cmd_send_test)
