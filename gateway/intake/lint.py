"""Lint a message before sending: the gateway's checks and verdict for one file (pure).

``lint(raw, dealer, now)`` runs exactly what intake runs (parse, every check, decide) on a
saved message or template and returns a ``LintReport``; ``render_text`` explains each
finding with the catalogue's words and advice, ``render_json`` gives the machine form
``{"verdict", "findings": [{"code", "severity", "detail"}]}``. Nothing is sent or stored.

Severity is what the dealer's policy would do with the finding, in three words:
``info`` (accepted and recorded), ``warning`` (tagged or repaired) and ``error`` (held,
deferred or refused). The exit status follows the verdict: 0 pass, 1 tagged or repaired,
2 held, deferred or refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.findings import CATALOGUE
from gateway.mail.message import MessageRejected, ParseLimits, parse
from gateway.pipeline import run
from gateway.pipeline.base import CheckContext, Finding
from gateway.pipeline.decide import decide
from gateway.policy.model import CheckRule, DealerPolicy
from gateway.types import Action, DealerId, Envelope

EXIT_PASS, EXIT_CHANGED, EXIT_STOPPED = 0, 1, 2
LIMITS = ParseLimits(max_header_bytes=100 * 1024, max_mime_depth=50)
_RECIPIENT = "recipient@example.invalid"


@dataclass(frozen=True, slots=True)
class LintItem:
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
class LintReport:
    """The verdict the gateway would give, and why."""

    verdict: Action
    items: tuple[LintItem, ...]
    refusal: str = ""  # the reply text when the message would be refused before the checks

    @property
    def exit_code(self) -> int:
        """0 pass, 1 would be tagged or repaired, 2 would be held or refused."""
        if self.verdict <= Action.ACCEPT:
            return EXIT_PASS
        return EXIT_CHANGED if self.verdict <= Action.REPAIR else EXIT_STOPPED


def stand_in_dealer(raw: bytes, checks: Mapping[str, CheckRule]) -> DealerPolicy:
    """A dealer for linting without ``--dealer``: the message's From: domains are its own.

    So the From: domain check passes and every other check runs with ``checks`` (the
    policy defaults).
    """
    try:
        addresses = parse(raw, LIMITS).from_addrs
    except MessageRejected:
        addresses = ()
    return DealerPolicy(
        dealer_id=DealerId("lint"),
        name="(no dealer given)",
        auth_users=frozenset(),
        from_domains=frozenset(a.rpartition("@")[2] for a in addresses),
        contacts=(),
        checks=checks,
    )


def _effective(finding: Finding, dealer: DealerPolicy) -> Action:
    rule = dealer.checks.get(finding.code)
    action = rule.action if rule is not None else CATALOGUE[finding.code].default_action
    # decide(): a repair the check could not name is a hold.
    return Action.HOLD if action is Action.REPAIR and finding.repair is None else action


def lint(raw: bytes, dealer: DealerPolicy, now: datetime, sender: str = "") -> LintReport:
    """Run parse, the checks and decide on ``raw`` as if ``dealer`` had submitted it."""
    try:
        msg = parse(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), LIMITS)
    except MessageRejected as exc:
        return LintReport(Action.REJECT, (), f"{exc.code} {exc.enhanced} {exc.detail}")
    envelope = Envelope(
        dealer_id=dealer.dealer_id,
        mail_from=sender or (msg.from_addrs[0] if msg.from_addrs else ""),
        rcpt_tos=(_RECIPIENT,),
        peer="127.0.0.1",
        auth_user="",
        helo="lint",
        received_at=now,
    )
    findings = run(msg, dealer, CheckContext(envelope=envelope, now=now))
    verdict = decide(findings, dealer, envelope.rcpt_tos)
    items = tuple(LintItem(f, _effective(f, dealer)) for f in findings)
    refusal = verdict.reply.line() if verdict.reply is not None else ""
    return LintReport(verdict.action, items, refusal)


def render_text(report: LintReport, name: str) -> str:
    """The report for a person: each finding explained, then the verdict."""
    lines: list[str] = []
    for item in report.items:
        kind = CATALOGUE.get(item.finding.code)
        lines.append(f"{item.severity.upper()} {item.finding.code} ({item.action.label})")
        lines.append(f"  {item.finding.detail}")
        if kind is not None:
            lines.append(f"  Why: {kind.summary}.")
            lines.append(f"  Fix: {kind.advice[:1].upper()}{kind.advice[1:]}.")
    if not report.items and not report.refusal:
        lines.append("No findings.")
    lines.append(f"{name}: the gateway would {_verdict_words(report.verdict)}.")
    if report.refusal:
        lines.append(f"  Reply: {report.refusal}")
    return "\n".join(lines)


def render_json(report: LintReport) -> str:
    """The report as ``{"verdict", "findings": [{"code", "severity", "detail", ...}]}``."""
    return json.dumps(
        {
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
        },
        indent=2,
        ensure_ascii=False,
    )


def _verdict_words(action: Action) -> str:
    return {
        Action.ACCEPT: "accept it as it is",
        Action.TAG: "deliver it with an X-Mailgate-Findings header",
        Action.REPAIR: "repair it and deliver it",
        Action.HOLD: "hold it for an operator",
        Action.TEMPFAIL: "defer it (4xx)",
        Action.REJECT: "refuse it (5xx)",
    }.get(action, action.label)
