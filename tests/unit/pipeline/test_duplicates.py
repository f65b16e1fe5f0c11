"""The duplicate and frequency checks, and what decide() makes of their findings."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from types import MappingProxyType

import pytest

from gateway.duplicates.fingerprints import (
    SIGNATURE_BYTES,
    Category,
    DuplicateOptions,
    DuplicateState,
    MessagePrint,
    PriorSend,
    RecipientHistory,
)
from gateway.mail.message import ParsedMessage, ParseLimits, parse
from gateway.pipeline import CHECKS, run
from gateway.pipeline.base import Check, CheckContext, Finding
from gateway.pipeline.decide import decide
from gateway.pipeline.duplicates import duplicate_message, frequency_cap, near_duplicate_message
from gateway.policy.model import CheckRule, DealerPolicy
from gateway.types import Action, MessageId
from tests.unit.pipeline.conftest import NOW

JOHN, MARY = "John@customer.test", "mary@customer.test"
FP, OTHER_FP = b"F" * 16, b"G" * 16
SIG = bytes(range(SIGNATURE_BYTES))
HALF_SIG = SIG[: SIGNATURE_BYTES // 2] + bytes(SIGNATURE_BYTES // 2)  # 50% alike
MSG: ParsedMessage = parse(b"From: a@example-motors.test\r\nSubject: s\r\n\r\nbody\r\n",
                           ParseLimits(max_header_bytes=10_000, max_mime_depth=10))  # fmt: skip


OURS: tuple[Check, ...] = (duplicate_message, near_duplicate_message, frequency_cap)


def sent(
    ago: timedelta,
    *,
    fingerprint: bytes = OTHER_FP,
    signature: bytes = SIG,
    category: Category = Category.COMMERCIAL,
    mid: str = "S1.1",
) -> PriorSend:
    return PriorSend(MessageId(mid), NOW - ago, fingerprint, signature, category)


def context(
    ctx: CheckContext,
    histories: Mapping[str, Sequence[PriorSend]],
    *,
    category: Category = Category.COMMERCIAL,
    options: DuplicateOptions | None = None,
    rcpts: tuple[str, ...] | None = None,
    keys: dict[str, str] | None = None,
) -> CheckContext:
    rcpts = rcpts or tuple(histories)
    state = DuplicateState(
        print=MessagePrint(FP, SIG, category),
        options=options or DuplicateOptions(per_day=1, per_week=3),
        recipients=MappingProxyType(
            {r: RecipientHistory(r.encode(), 1, tuple(histories.get(r, ()))) for r in rcpts}
        ),
        keys=MappingProxyType(keys or {r: r.lower() for r in rcpts}),
    )
    envelope = dataclasses.replace(ctx.envelope, rcpt_tos=rcpts)
    return dataclasses.replace(ctx, envelope=envelope, duplicates=state)


def codes(findings: Sequence[Finding]) -> list[tuple[str, str | None]]:
    return [(f.code, f.recipient) for f in findings]


H = timedelta(hours=1)
D = timedelta(days=1)

CASES = [
    # (id, history of JOHN, category, expected codes for JOHN)
    ("nothing-sent-before", [], Category.COMMERCIAL, []),
    ("exact-2h-ago", [sent(2 * H, fingerprint=FP)], Category.COMMERCIAL, ["duplicate-message"]),
    ("exact-past-window", [sent(73 * H, fingerprint=FP)], Category.COMMERCIAL, []),
    (
        "exact-transactional",
        [sent(2 * H, fingerprint=FP, category=Category.TRANSACTIONAL)],
        Category.TRANSACTIONAL,
        ["duplicate-message"],
    ),
    ("near-30h-ago", [sent(30 * H)], Category.COMMERCIAL, ["near-duplicate-message"]),
    ("near-past-window", [sent(80 * H)], Category.COMMERCIAL, []),
    ("near-transactional-exempt", [sent(30 * H)], Category.TRANSACTIONAL, []),
    (
        "near-ignores-transactional-sends",
        [sent(30 * H, category=Category.TRANSACTIONAL)],
        Category.COMMERCIAL,
        [],
    ),
    ("below-threshold", [sent(30 * H, signature=HALF_SIG)], Category.COMMERCIAL, []),
    ("cap-day", [sent(2 * H, signature=HALF_SIG)], Category.COMMERCIAL, ["frequency-cap"]),
    ("cap-day-rolled-over", [sent(25 * H, signature=HALF_SIG)], Category.COMMERCIAL, []),
    (
        "cap-week",
        [sent(n * D + H, signature=HALF_SIG, mid=f"S{n}.1") for n in (1, 3, 5)],
        Category.COMMERCIAL,
        ["frequency-cap"],
    ),
    (
        "cap-week-rolled-over",
        [sent(n * D + H, signature=HALF_SIG, mid=f"S{n}.1") for n in (1, 3, 7)],
        Category.COMMERCIAL,
        [],
    ),
    (
        "cap-transactional-exempt",
        [sent(2 * H, signature=HALF_SIG)],
        Category.TRANSACTIONAL,
        [],
    ),
    (
        "cap-not-counting-transactional",
        [sent(2 * H, signature=HALF_SIG, category=Category.TRANSACTIONAL)],
        Category.COMMERCIAL,
        [],
    ),
]


@pytest.mark.parametrize(("history", "category", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])  # fmt: skip
def test_checks(
    dealer: DealerPolicy,
    ctx: CheckContext,
    history: list[PriorSend],
    category: Category,
    expected: list[str],
) -> None:
    findings = run(MSG, dealer, context(ctx, {JOHN: history}, category=category), OURS)
    assert [f.code for f in findings] == expected
    assert all(f.recipient == JOHN for f in findings)


def test_findings_name_the_earlier_message(dealer: DealerPolicy, ctx: CheckContext) -> None:
    earlier = sent(2 * H, fingerprint=FP, mid="S0001.3")
    (finding,) = duplicate_message(MSG, dealer, context(ctx, {JOHN: [earlier]}))
    assert finding.data["earlier"] == "S0001.3"
    assert finding.data["kind"] == "exact"
    assert "S0001.3" in finding.detail
    (near,) = near_duplicate_message(MSG, dealer, context(ctx, {JOHN: [sent(3 * H)]}))
    assert (near.data["kind"], near.data["similarity"]) == ("near", "1.00")


def test_only_the_duplicate_recipient_is_found(dealer: DealerPolicy, ctx: CheckContext) -> None:
    c = context(ctx, {JOHN: [sent(2 * H, fingerprint=FP)], MARY: []})
    assert codes(run(MSG, dealer, c, OURS)) == [("duplicate-message", JOHN)]


def test_one_person_twice_in_one_envelope(dealer: DealerPolicy, ctx: CheckContext) -> None:
    rcpts = ("john+a@customer.test", "JOHN@customer.test")
    keys = dict.fromkeys(rcpts, "john@customer.test")
    c = context(ctx, {}, rcpts=rcpts, keys=keys)
    assert codes(run(MSG, dealer, c, OURS)) == [("duplicate-message", "JOHN@customer.test")]


def test_no_state_no_findings(dealer: DealerPolicy, ctx: CheckContext) -> None:
    for check in (duplicate_message, near_duplicate_message, frequency_cap):
        assert list(check(MSG, dealer, ctx)) == []


def test_caps_off_at_zero(dealer: DealerPolicy, ctx: CheckContext) -> None:
    history = [sent(n * H, signature=HALF_SIG, mid=f"S{n}.1") for n in range(1, 6)]
    c = context(ctx, {JOHN: history}, options=DuplicateOptions(per_day=0, per_week=0))
    assert list(frequency_cap(MSG, dealer, c)) == []


def test_the_checks_are_registered_in_order() -> None:
    names = [getattr(c, "__name__", "") for c in CHECKS]
    ours = ["duplicate_message", "near_duplicate_message", "frequency_cap"]
    assert [n for n in names if n in ours] == ours


# -- decide ------------------------------------------------------------------------------


def with_action(dealer: DealerPolicy, action: Action) -> DealerPolicy:
    checks = dict(dealer.checks)
    for code in ("duplicate-message", "near-duplicate-message", "frequency-cap"):
        checks[code] = CheckRule(action)
    return dataclasses.replace(dealer, checks=MappingProxyType(checks))


def findings_for(dealer: DealerPolicy, ctx: CheckContext, rcpts: tuple[str, ...]) -> list[Finding]:
    histories = {JOHN: [sent(2 * H, fingerprint=FP, mid="S0001.1")], MARY: []}
    return list(run(MSG, dealer, context(ctx, histories, rcpts=rcpts), OURS))


def test_drop_leaves_the_duplicate_out_and_answers_250(
    dealer: DealerPolicy, ctx: CheckContext
) -> None:
    policy = with_action(dealer, Action.DROP)
    both = (JOHN, MARY)
    verdict = decide(findings_for(policy, ctx, both), policy, both)
    assert (verdict.action, verdict.reply, set(verdict.dropped)) == (Action.ACCEPT, None, {JOHN})
    alone = decide(findings_for(policy, ctx, (JOHN,)), policy, (JOHN,))
    assert (alone.action, alone.reply, set(alone.dropped)) == (Action.DROP, None, {JOHN})


def test_reject_names_the_earlier_message(dealer: DealerPolicy, ctx: CheckContext) -> None:
    policy = with_action(dealer, Action.REJECT)
    verdict = decide(findings_for(policy, ctx, (JOHN,)), policy, (JOHN,))
    assert verdict.reply is not None
    assert (verdict.reply.code, verdict.reply.enhanced) == (550, "5.7.1")
    assert "S0001.1" in verdict.reply.text


def test_tag_delivers_with_a_header(dealer: DealerPolicy, ctx: CheckContext) -> None:
    policy = with_action(dealer, Action.TAG)
    verdict = decide(findings_for(policy, ctx, (JOHN,)), policy, (JOHN,))
    assert (verdict.action, dict(verdict.dropped), verdict.tags) == (
        Action.TAG,
        {},
        ("duplicate-message",),
    )


def test_a_refusal_beats_a_drop(dealer: DealerPolicy, ctx: CheckContext) -> None:
    policy = with_action(dealer, Action.DROP)
    refused = Finding("from-domain-not-allowed", "x", recipient=MARY)
    verdict = decide([*findings_for(policy, ctx, (JOHN, MARY)), refused], policy, (JOHN, MARY))
    assert verdict.action is Action.REJECT


def test_now_is_the_context_clock(dealer: DealerPolicy, ctx: CheckContext) -> None:
    later = dataclasses.replace(context(ctx, {JOHN: [sent(timedelta(0), fingerprint=FP)]}),
                                now=NOW + timedelta(hours=71))  # fmt: skip
    assert codes(run(MSG, dealer, later, OURS)) == [("duplicate-message", JOHN)]
    past: datetime = NOW + timedelta(hours=72, minutes=1)
    assert run(MSG, dealer, dataclasses.replace(later, now=past), OURS) == ()
