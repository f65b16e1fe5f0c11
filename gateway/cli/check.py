"""``mailgate check FILE.eml... [--dealer ID] [--json]``: what the gateway would do with a message.

Offline: reads each file, the ``[submission]`` limits from the settings and the policy
directory, and runs ``gateway.intake.prepare`` on it, the very function intake runs on
every submission (line endings, limits, one parse, every check, decide, repair, the
header rewrite), with no stored state: no recipient history, consent records or
suppressions, so the per-recipient checks find nothing. It prints the findings with what
to fix; nothing is sent or stored.

A file is not SMTP DATA: its line ends are made CRLF as an SMTP client does when it sends
one (RFC 5321 §2.3.8; smtplib and every MTA do the same), so a template saved with LF line
ends is judged as the CRM would submit it, whatever ``bare_line_endings`` says.

Severity is what the dealer's policy would do with the finding, in three words: ``info``
(accepted and recorded), ``warning`` (tagged or repaired) and ``error`` (held, deferred or
refused). ``--json`` prints one object per file and line (JSON Lines): ``{"file",
"verdict", "findings": [{"code", "severity", "detail", "action"}], "reply"?}``, with
``reply`` the SMTP reply of a refusal.

Exit status, the worst over the files: 0 the gateway would pass it, 1 it would tag or
repair it, 2 it would hold, defer or refuse it; 3 for a usage problem (no such file or
dealer), so that scripts can tell "the message is bad" from "the command was wrong".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gateway import replies
from gateway.findings import CATALOGUE
from gateway.intake.prepare import (
    NO_STATE,
    CheckCrashed,
    Limits,
    Prepared,
    Stamp,
    admit,
    prepare_message,
)
from gateway.intake.service import submission_limits
from gateway.mail.message import ParsedMessage
from gateway.pipeline.base import Finding
from gateway.pipeline.decide import action_for
from gateway.policy.model import CheckRule, DealerPolicy
from gateway.settings import Settings, load_settings
from gateway.tracking import RefCodec, new_submission_id
from gateway.types import Action, DealerId, Envelope

EXIT_PASS, EXIT_CHANGED, EXIT_STOPPED, EXIT_USAGE = 0, 1, 2, 3
DEFAULT_RULES: Mapping[str, CheckRule] = MappingProxyType(
    {code: CheckRule(kind.default_action) for code, kind in CATALOGUE.items()}
)
RECIPIENT = "recipient@example.invalid"


@dataclass(frozen=True, slots=True)
class Item:
    """One finding with what policy would do with it."""

    finding: Finding
    action: Action

    @property
    def severity(self) -> str:
        """``info``, ``warning`` or ``error`` (see the module docstring)."""
        if self.action <= Action.ACCEPT:
            return "info"
        return "warning" if self.action <= Action.REPAIR else "error"


@dataclass(frozen=True, slots=True)
class Report:
    """What the gateway would do with one message, and why."""

    prepared: Prepared
    items: tuple[Item, ...] = ()
    error: str = ""  # a check that raised (the gateway answers 451 then)

    @property
    def verdict(self) -> Action:
        """The action the gateway would take."""
        return self.prepared.action

    @property
    def refusal(self) -> str:
        """The SMTP reply line when the message would be refused or deferred, else ``""``."""
        reply = self.prepared.reply
        return reply.line() if reply is not None and reply.code >= 400 else ""

    @property
    def exit_code(self) -> int:
        """0 pass, 1 would be tagged or repaired, 2 would be held, deferred or refused."""
        if self.verdict <= Action.ACCEPT:
            return EXIT_PASS
        return EXIT_CHANGED if self.verdict <= Action.REPAIR else EXIT_STOPPED


def stand_in_dealer(message: ParsedMessage, checks: Mapping[str, CheckRule]) -> DealerPolicy:
    """A dealer for checking without ``--dealer``: the message's From: domains are its own.

    So the From: domain check passes and every other check runs with ``checks`` (the
    policy defaults).
    """
    return DealerPolicy(
        dealer_id=DealerId("check"),
        name="(no dealer given)",
        auth_users=frozenset(),
        from_domains=frozenset(a.rpartition("@")[2] for a in message.from_addrs),
        contacts=(),
        checks=checks,
    )


def check_message(
    raw: bytes,
    *,
    now: datetime,
    limits: Limits,
    dealer: DealerPolicy | None = None,
    defaults: Mapping[str, CheckRule] = DEFAULT_RULES,
    hostname: str = "mailgate.invalid",
    sender: str = "",
) -> Report:
    """Run ``prepare`` on ``raw`` as if ``dealer`` (or a stand-in) had submitted it."""
    admitted = admit(raw, dataclasses.replace(limits, bare_line_endings="normalize"))
    if isinstance(admitted, Prepared):
        return Report(admitted)
    policy = dealer if dealer is not None else stand_in_dealer(admitted, defaults)
    envelope = Envelope(
        dealer_id=policy.dealer_id,
        mail_from=sender or (admitted.from_addrs[0] if admitted.from_addrs else ""),
        rcpt_tos=(RECIPIENT,),
        peer="127.0.0.1",
        auth_user="",
        helo="check",
        received_at=now,
    )
    try:
        prepared = prepare_message(
            admitted,
            envelope,
            policy,
            limits=limits,
            # The copies are thrown away: any key makes their tracking references.
            stamp=Stamp(hostname, RefCodec(secrets.token_bytes(32))),
            now=now,
            submission_id=new_submission_id(now),
            state=NO_STATE,
        )
    except CheckCrashed as exc:
        cause = exc.__cause__
        failed = Prepared(Action.TEMPFAIL, replies.INTERNAL_ERROR, refused="check")
        return Report(failed, error=f"the check {exc.name} raised {cause!r}")
    return Report(prepared, tuple(Item(f, action_for(f, policy)) for f in prepared.findings))


def render_text(report: Report, name: str) -> str:
    """The report for a person: each finding explained, then the verdict."""
    lines: list[str] = []
    for item in report.items:
        kind = CATALOGUE.get(item.finding.code)
        lines.append(f"{item.severity.upper()} {item.finding.code} ({item.action.label})")
        lines.append(f"  {item.finding.detail}")
        if kind is not None:
            lines.append(f"  Why: {kind.summary}.")
            lines.append(f"  Fix: {kind.advice[:1].upper()}{kind.advice[1:]}.")
    if report.error:
        lines.append(f"ERROR {report.error}")
    elif not report.items and not report.refusal:
        lines.append("No findings.")
    if report.prepared.repair_failed:
        lines.append("The repair does not fit this message's structure, so it would be held.")
    lines.append(f"{name}: the gateway would {_verdict_words(report.verdict)}.")
    if report.refusal:
        lines.append(f"  Reply: {report.refusal}")
    return "\n".join(lines)


def render_json(report: Report, name: str) -> str:
    """The report as one line of JSON (see the module docstring)."""
    return json.dumps(
        {
            "file": name,
            "verdict": report.verdict.label,
            "findings": [
                {
                    "code": item.finding.code,
                    "severity": item.severity,
                    "detail": item.finding.detail,
                    "action": item.action.label,
                }
                for item in report.items
            ],
            **({"reply": report.refusal} if report.refusal else {}),
            **({"error": report.error} if report.error else {}),
        },
        ensure_ascii=False,
    )


def _verdict_words(action: Action) -> str:
    return {
        Action.ACCEPT: "accept it as it is",
        Action.TAG: "deliver it with an X-Mailgate-Findings header",
        Action.REPAIR: "repair it and deliver it",
        Action.HOLD: "hold it for an operator",
        Action.DROP: "accept it and send nothing",
        Action.TEMPFAIL: "defer it (4xx)",
        Action.REJECT: "refuse it (5xx)",
    }.get(action, action.label)


def _settings(args: argparse.Namespace) -> Settings:
    config: Path | None = args.config
    if config is None and Path("mailgate.toml").exists():
        config = Path("mailgate.toml")
    return load_settings(config)


def cmd_check(args: argparse.Namespace) -> int:
    """Run the gateway's intake on saved messages and print what it would do."""
    from gateway.policy.loader import load_policy_set

    settings = _settings(args)
    directory: Path = args.policies or settings.server.policies_dir
    dealer: DealerPolicy | None = None
    defaults = DEFAULT_RULES
    if directory.is_dir():
        policies = load_policy_set(directory)
        defaults = policies.defaults
        if args.dealer:
            dealer = policies.dealer(args.dealer)
    if args.dealer and dealer is None:
        print(f"no dealer {args.dealer!r} in the policy directory", file=sys.stderr)
        return EXIT_USAGE
    limits = submission_limits(settings.submission)
    worst = EXIT_PASS
    for number, path in enumerate(args.files):
        try:
            raw = path.read_bytes()
        except OSError as exc:
            print(f"cannot read {path}: {exc.strerror}", file=sys.stderr)
            worst = EXIT_USAGE
            continue
        report = check_message(
            raw,
            now=datetime.now(UTC),
            limits=limits,
            dealer=dealer,
            defaults=defaults,
            hostname=settings.server.hostname,
        )
        if args.json:
            print(render_json(report, str(path)))
        else:
            print(("\n" if number else "") + render_text(report, path.name))
        worst = max(worst, report.exit_code)
    return worst


def register(subparsers: Any) -> None:
    """Add ``check`` to the ``mailgate`` command."""
    p = subparsers.add_parser(
        "check", help="show what the gateway would do with saved messages or templates"
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="a message (.eml)")
    p.add_argument("--dealer", help="check with this dealer's policy (default: the defaults)")
    p.add_argument("--policies", type=Path, help="policy directory (default: from settings)")
    p.add_argument("--json", action="store_true", help="print one JSON object per file")
    p.set_defaults(func=cmd_check)
