"""``mailgate send-test``: submit one message through the gateway as a CRM would.

STARTTLS and AUTH on the submission listener, then MAIL/RCPT/DATA, one command at a time,
printing each of the server's replies as it sent them (``RCPT TO  250 2.1.5 OK``), so the
operator sees where a refusal came and its words. ``--insecure`` accepts the self-signed
certificate a first-run gateway creates; without it, that certificate is refused with a
sentence saying so. Exit codes: 0 queued, 1 refused (5xx), 2 usage (no password, an
untrusted certificate), 3 no connection or a temporary refusal (4xx: retry), 4 the login
was refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import ssl
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import aiosmtplib

from gateway.cli.common import (
    EXIT_AUTH,
    EXIT_FAIL,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    settings_for,
)
from gateway.settings import parse_hostport


class _Stop(Exception):
    """The session cannot go on: ``sentence`` says why, ``code`` is the exit code."""

    def __init__(self, sentence: str, code: int) -> None:
        super().__init__(sentence)
        self.code = code


@dataclass
class _Session:
    """The replies so far, printed as they come unless the output is JSON."""

    json: bool
    replies: list[dict[str, Any]] = field(default_factory=list)

    def show(self, step: str, reply: aiosmtplib.SMTPResponse) -> None:
        lines = reply.message.splitlines() or [""]
        self.replies.append({"step": step, "code": reply.code, "lines": lines})
        if not self.json:
            for line in lines:
                print(f"{step:<10} {reply.code} {line}".rstrip())


def _password(args: argparse.Namespace) -> str:
    password: str | None = args.password or os.environ.get("MAILGATE_PASSWORD")
    if password:
        return password
    refusal = "no password: give --password, set MAILGATE_PASSWORD, or run on a terminal"
    if not sys.stdin.isatty():
        raise _Stop(refusal, EXIT_USAGE)
    try:
        return getpass.getpass(f"password for {args.user}: ")
    except EOFError:
        raise _Stop(refusal, EXIT_USAGE) from None


def _message(args: argparse.Namespace) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = args.sender
    msg["To"] = args.to
    msg["Subject"] = args.subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=args.sender.rpartition("@")[2] or None)
    msg.set_content("This is a test message sent with `mailgate send-test`.\n")
    return msg


def _refused(step: str, exc: aiosmtplib.SMTPResponseException) -> _Stop:
    reply = " ".join(line.strip() for line in exc.message.splitlines())
    if exc.code in (530, 534, 535, 538):  # RFC 4954 §6: the login itself was refused
        code = EXIT_AUTH
    elif 400 <= exc.code < 500:
        code = EXIT_UNAVAILABLE
    else:
        code = EXIT_FAIL
    return _Stop(f"{step} refused: {exc.code} {reply}", code)


async def _session(args: argparse.Namespace, server: str, password: str, out: _Session) -> None:
    host, port = parse_hostport(server)
    context = ssl.create_default_context()
    if args.insecure:
        # The first-run certificate is self-signed; production certificates verify.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    smtp = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, timeout=30)
    step = "connect"
    try:
        out.show(step, await smtp.connect())
        await smtp.ehlo()
        if not smtp.supports_extension("starttls"):
            raise _Stop(f"{server} offers no STARTTLS; the gateway's listener always does "
                        "(is this the submission port?)", EXIT_FAIL)  # fmt: skip
        step = "STARTTLS"
        out.show(step, await smtp.starttls(tls_context=context))
        step = "AUTH"
        out.show(step, await smtp.login(args.user, password))
        step = "MAIL FROM"
        out.show(step, await smtp.mail(args.sender))
        step = "RCPT TO"
        out.show(step, await smtp.rcpt(args.to))
        step = "DATA"
        out.show(step, await smtp.data(_message(args).as_bytes()))
    except ssl.SSLCertVerificationError as exc:
        raise _Stop(
            f"the certificate of {server} is not trusted ({exc.verify_message}); for a "
            "first-run gateway's self-signed certificate use --insecure, in production give "
            "the gateway a certificate from a trusted CA (submission.tls_cert)",
            EXIT_USAGE,
        ) from None
    except aiosmtplib.SMTPResponseException as exc:
        raise _refused(step, exc) from None
    except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError, OSError) as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, ssl.SSLCertVerificationError) else None
        if cause is not None:
            raise _Stop(
                f"the certificate of {server} is not trusted ({cause.verify_message}); use "
                "--insecure for a first-run gateway's self-signed certificate, or give the "
                "gateway a certificate from a trusted CA (submission.tls_cert)",
                EXIT_USAGE,
            ) from None
        where = "cannot connect to" if step == "connect" else f"{step}: lost the connection to"
        raise _Stop(
            f"{where} {server} ({exc}); is `mailgate serve` running? --server HOST:PORT "
            "names another address",
            EXIT_UNAVAILABLE,
        ) from None
    except aiosmtplib.SMTPException as exc:
        raise _Stop(f"{step} failed: {exc}", EXIT_FAIL) from None
    finally:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            if smtp.is_connected:
                await smtp.quit()
        smtp.close()


def cmd_send_test(args: argparse.Namespace) -> int:
    """Submit one message through the gateway like a CRM would (STARTTLS + AUTH)."""
    server = args.server or settings_for(args).submission.listen
    out = _Session(json=args.json)
    code = EXIT_OK
    try:
        parse_hostport(server)
        password = _password(args)
        asyncio.run(_session(args, server, password, out))
    except ValueError as exc:
        print(f"mailgate: --server: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _Stop as exc:
        print(f"mailgate: {exc}", file=sys.stderr)
        code = exc.code
    if args.json:
        print(json.dumps({"server": server, "ok": code == EXIT_OK, "replies": out.replies},
                         indent=2))  # fmt: skip
    return code


def register(subparsers: Any) -> None:
    """Add ``send-test`` to the ``mailgate`` subcommands."""
    p = subparsers.add_parser(
        "send-test",
        help="submit a test message like a CRM would",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--server", metavar="HOST:PORT", help="the gateway (default: submission.listen)")
    p.add_argument("--user", required=True, help="the dealer's SMTP login")
    p.add_argument("--password", help="its password (default MAILGATE_PASSWORD, else asked for)")
    p.add_argument("--from", dest="sender", required=True, metavar="ADDRESS",
                   help="the sender, in one of the dealer's from_domains")  # fmt: skip
    p.add_argument("--to", required=True, metavar="ADDRESS", help="the recipient")
    p.add_argument("--subject", default="Mailgate test message", help="the Subject header")
    p.add_argument("--insecure", action="store_true",
                   help="accept a self-signed certificate (first-run setups)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the replies as JSON")
    p.set_defaults(func=cmd_send_test)
