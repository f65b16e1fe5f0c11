from __future__ import annotations

import dataclasses

import pytest

from gateway.mail.message import ParseLimits, parse
from gateway.pipeline.base import CheckContext
from gateway.pipeline.decide import decide
from gateway.pipeline.unsubscribed import unsubscribed
from gateway.policy.model import DealerPolicy
from gateway.types import Action

LIMITS = ParseLimits(max_header_bytes=102_400, max_mime_depth=50)


def message(category: str) -> bytes:
    header = f"X-Mailgate-Category: {category}\r\n" if category else ""
    return (
        "From: sales@example-motors.test\r\nTo: ann@customer.test\r\nSubject: Offer\r\n"
        f"{header}\r\nHello\r\n"
    ).encode()


def with_unsubscribed(ctx: CheckContext, rcpts: tuple[str, ...], gone: set[str]) -> CheckContext:
    envelope = dataclasses.replace(ctx.envelope, rcpt_tos=rcpts, unsubscribed=frozenset(gone))
    return dataclasses.replace(ctx, envelope=envelope)


@pytest.mark.parametrize(
    ("category", "expected"),
    [
        ("", ["ann@customer.test"]),  # the shipped default category is commercial
        ("commercial", ["ann@customer.test"]),
        ("transactional", []),
        ("relationship", []),
    ],
)
def test_only_commercial_mail_is_refused(
    dealer: DealerPolicy, ctx: CheckContext, category: str, expected: list[str]
) -> None:
    context = with_unsubscribed(
        ctx, ("ann@customer.test", "bob@customer.test"), {"ann@customer.test"}
    )
    found = list(unsubscribed(parse(message(category), LIMITS), dealer, context))
    assert [f.recipient for f in found] == expected
    assert all(f.code == "unsubscribed" for f in found)


def test_the_unsubscribed_recipient_is_left_out_and_the_others_go(
    dealer: DealerPolicy, ctx: CheckContext
) -> None:
    rcpts = ("ann@customer.test", "bob@customer.test")
    context = with_unsubscribed(ctx, rcpts, {"ann@customer.test"})
    findings = tuple(unsubscribed(parse(message(""), LIMITS), dealer, context))
    verdict = decide(findings, dealer, rcpts)
    assert set(verdict.dropped) == {"ann@customer.test"}
    assert verdict.reply is None
    alone = decide(findings, dealer, ("ann@customer.test",))
    assert alone.action is Action.REJECT
    assert alone.reply is not None and (alone.reply.code, alone.reply.enhanced) == (550, "5.7.1")
