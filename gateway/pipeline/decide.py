"""Turn findings into one verdict using the dealer's policy (pure).

This is the only place where actions are chosen (checks detect, ``decide`` decides). Each
finding's action comes from the dealer's rule for its code. A finding about one
recipient drops that recipient when its action is drop, tempfail or reject, and the rest
of the message goes on; when every recipient is dropped, the strictest of their actions
becomes the message's (for drop: 250 with nothing queued). With hold, that recipient's
copy is kept for an operator (``Verdict.held``) while the others go on: nothing a policy
holds may vanish; when every recipient left is held, the message's action is hold. Otherwise the
strictest message-level action wins (``Action`` is ordered from mildest to strictest).

A finding whose action is repair is repaired only when its check named a safe repair
(``Finding.repair``); otherwise it is held, so nothing leaves half-fixed and nothing is
lost. The findings to repair are listed in ``Verdict.repairs`` for intake to apply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from gateway.findings import CATALOGUE
from gateway.mail.addresses import normalise
from gateway.pipeline.base import Finding
from gateway.policy.model import DealerPolicy
from gateway.types import Action, Reply

# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets including the code and CRLF.
_MAX_TEXT = 400
_DROPS = (Action.DROP, Action.TEMPFAIL, Action.REJECT)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a message, and why.

    ``reply`` is set for reject and tempfail only; for the other actions intake answers
    250 once the message is stored. ``dropped`` maps each recipient taken out of the
    message to the finding that removed it.
    """

    action: Action
    reply: Reply | None
    findings: tuple[Finding, ...]
    dropped: Mapping[str, Finding]
    tags: tuple[str, ...]
    repairs: tuple[Finding, ...] = ()
    # Recipients whose copy is stored held (a per-recipient finding with action hold).
    held: Mapping[str, Finding] = field(default_factory=lambda: MappingProxyType({}))


def _action(finding: Finding, dealer: DealerPolicy) -> Action:
    rule = dealer.checks.get(finding.code)
    if rule is not None:
        return rule.action
    # The loader gives every catalogued code a rule; this covers a policy built in code.
    return CATALOGUE[finding.code].default_action


def action_for(finding: Finding, dealer: DealerPolicy) -> Action:
    """Return the action policy takes for ``finding``.

    That is its rule's action, except that a repair the check could not name is a hold.
    """
    action = _action(finding, dealer)
    return Action.HOLD if action is Action.REPAIR and finding.repair is None else action


def _sentence(text: str) -> str:
    # RFC 5321 §4.2: reply text is printable US-ASCII on one line.
    clean = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return clean if len(clean) <= _MAX_TEXT else clean[: _MAX_TEXT - 3] + "..."


def _reply(action: Action, finding: Finding) -> Reply | None:
    kind = CATALOGUE.get(finding.code)
    summary = kind.summary if kind is not None else finding.code
    if action is Action.REJECT:
        advice = f" {kind.advice[:1].upper()}{kind.advice[1:]}." if kind is not None else ""
        text = f"Message refused ({finding.code}): {summary}: {finding.detail}.{advice}"
        code, enhanced = (kind.reject_code, kind.reject_enhanced) if kind else (550, "5.7.1")
        return Reply(code, enhanced, _sentence(text))
    if action is Action.TEMPFAIL:
        text = f"Message deferred ({finding.code}): {summary}: {finding.detail}. Try again later"
        return Reply(451, "4.7.1", _sentence(text))
    return None


def decide(findings: Sequence[Finding], dealer: DealerPolicy, recipients: Sequence[str]) -> Verdict:
    """Choose the action for a message from its findings and the dealer's rules."""
    message_action = Action.ACCEPT
    message_finding: Finding | None = None
    dropped: dict[str, tuple[Action, Finding]] = {}
    by_folded = {normalise(rcpt): rcpt for rcpt in recipients}
    tags: dict[str, None] = {}
    repairs: list[Finding] = []
    held: dict[str, Finding] = {}
    for finding in findings:
        action = action_for(finding, dealer)
        if action is Action.REPAIR:
            repairs.append(finding)
        if action is Action.TAG:
            tags[finding.code] = None
        if finding.recipient is not None and action is Action.HOLD:
            held.setdefault(by_folded.get(normalise(finding.recipient), finding.recipient), finding)
            continue
        if finding.recipient is not None and action in _DROPS:
            rcpt = by_folded.get(normalise(finding.recipient), finding.recipient)
            previous = dropped.get(rcpt)
            if previous is None or action > previous[0]:
                dropped[rcpt] = (action, finding)
            continue
        # The first finding with the strictest action names the reason.
        if message_finding is None or action > message_action:
            message_action, message_finding = action, finding

    held = {rcpt: finding for rcpt, finding in held.items() if rcpt not in dropped}
    if recipients and all(rcpt in dropped or rcpt in held for rcpt in recipients):
        refusal = max((action for action, _ in dropped.values()), default=Action.ACCEPT)
        if held and refusal < Action.TEMPFAIL:
            # Nobody is refused: keep the held copies, and the message counts as held.
            if message_finding is None or message_action < Action.HOLD:
                message_action, message_finding = Action.HOLD, next(iter(held.values()))
        else:
            # The client is told (4xx/5xx): the message is refused as a whole, held
            # recipients included, so the client can correct and resend it.
            dropped.update((rcpt, (Action.HOLD, finding)) for rcpt, finding in held.items())
            held = {}
            for action, finding in dropped.values():
                if message_finding is None or action > message_action:
                    message_action, message_finding = action, finding

    reply = _reply(message_action, message_finding) if message_finding is not None else None
    return Verdict(
        action=message_action,
        reply=reply,
        findings=tuple(findings),
        dropped=MappingProxyType({rcpt: finding for rcpt, (_, finding) in dropped.items()}),
        tags=tuple(tags),
        repairs=tuple(repairs),
        held=MappingProxyType(held),
    )
