from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest

from gateway.pipeline.base import Finding
from gateway.pipeline.decide import decide
from gateway.policy.model import CheckRule, DealerPolicy
from gateway.types import Action

FOREIGN = Finding("from-domain-not-allowed", "mail.other.test is not a domain of example-motors")
TWO_FROM = Finding("multiple-from", "the message has 2 From: headers")
NO_FROM = Finding("missing-from", "the message has no From: header")
FIXABLE = dataclasses.replace(FOREIGN, repair="some-repair")
RCPTS = ("a@customer.test", "b@customer.test")


def with_rules(dealer: DealerPolicy, **actions: Action) -> DealerPolicy:
    checks = dict(dealer.checks)
    for code, action in actions.items():
        checks[code.replace("_", "-")] = CheckRule(action)
    return dataclasses.replace(dealer, checks=MappingProxyType(checks))


@pytest.mark.parametrize(
    ("rules", "findings", "action", "reply"),
    [
        ({}, [], Action.ACCEPT, None),
        ({}, [FOREIGN], Action.REJECT, (553, "5.7.1")),
        ({}, [TWO_FROM], Action.REJECT, (554, "5.6.0")),
        ({"from_domain_not_allowed": Action.HOLD}, [FOREIGN], Action.HOLD, None),
        ({"from_domain_not_allowed": Action.TEMPFAIL}, [FOREIGN], Action.TEMPFAIL, (451, "4.7.1")),
        ({"from_domain_not_allowed": Action.ACCEPT}, [FOREIGN], Action.ACCEPT, None),
        ({"from_domain_not_allowed": Action.TAG}, [FOREIGN], Action.TAG, None),
        # Repair needs a repair the check named; without one the message is held.
        ({"from_domain_not_allowed": Action.REPAIR}, [FIXABLE], Action.REPAIR, None),
        ({"from_domain_not_allowed": Action.REPAIR}, [FOREIGN], Action.HOLD, None),
        # The strictest action wins, whatever the order of the findings.
        (
            {"from_domain_not_allowed": Action.HOLD},
            [FOREIGN, TWO_FROM],
            Action.REJECT,
            (554, "5.6.0"),
        ),
        (
            {"multiple_from": Action.TEMPFAIL, "missing_from": Action.TAG},
            [NO_FROM, TWO_FROM],
            Action.TEMPFAIL,
            (451, "4.7.1"),
        ),
    ],
)
def test_message_level(
    dealer: DealerPolicy,
    rules: dict[str, Action],
    findings: list[Finding],
    action: Action,
    reply: tuple[int, str] | None,
) -> None:
    verdict = decide(findings, with_rules(dealer, **rules), RCPTS)
    assert verdict.action is action
    if reply is None:
        assert verdict.reply is None
    else:
        assert verdict.reply is not None
        assert (verdict.reply.code, verdict.reply.enhanced) == reply
    assert verdict.findings == tuple(findings)
    assert not verdict.dropped


def test_reject_reply_is_a_sentence_a_dealer_understands(dealer: DealerPolicy) -> None:
    verdict = decide([FOREIGN], dealer, RCPTS)
    assert verdict.reply is not None
    assert verdict.reply.line() == (
        "553 5.7.1 Message refused (from-domain-not-allowed): the From: header uses a domain "
        "that does not belong to this dealer: mail.other.test is not a domain of "
        "example-motors. Send from one of the dealer's own domains, as listed in its "
        "policy file."
    )


def test_reply_text_is_one_ascii_line(dealer: DealerPolicy) -> None:
    nasty = Finding("from-domain-not-allowed", "x\r\n250 ok ü" + "y" * 1000)
    verdict = decide([nasty], dealer, RCPTS)
    assert verdict.reply is not None
    text = verdict.reply.text
    assert text.isascii() and "\r" not in text and "\n" not in text
    assert len(verdict.reply.line()) <= 510


def test_tags_list_codes_with_tag_action(dealer: DealerPolicy) -> None:
    policy = with_rules(dealer, from_domain_not_allowed=Action.TAG, multiple_from=Action.TAG)
    verdict = decide([FOREIGN, TWO_FROM, FOREIGN], policy, RCPTS)
    assert verdict.tags == ("from-domain-not-allowed", "multiple-from")


def test_per_recipient_finding_drops_only_that_recipient(dealer: DealerPolicy) -> None:
    one = dataclasses.replace(FOREIGN, recipient="B@customer.test")
    verdict = decide([one], dealer, RCPTS)
    assert verdict.action is Action.ACCEPT
    assert verdict.reply is None
    assert dict(verdict.dropped) == {"b@customer.test": one}


def test_all_recipients_dropped_takes_the_strictest(dealer: DealerPolicy) -> None:
    policy = with_rules(dealer, multiple_from=Action.HOLD)
    held = dataclasses.replace(TWO_FROM, recipient="a@customer.test")
    refused = dataclasses.replace(FOREIGN, recipient="b@customer.test")
    verdict = decide([held, refused], policy, RCPTS)
    assert verdict.action is Action.REJECT
    assert verdict.reply is not None and verdict.reply.code == 553
    assert set(verdict.dropped) == set(RCPTS)


def test_per_recipient_keeps_the_strictest_finding_for_a_recipient(dealer: DealerPolicy) -> None:
    policy = with_rules(dealer, multiple_from=Action.HOLD)
    held = dataclasses.replace(TWO_FROM, recipient="a@customer.test")
    refused = dataclasses.replace(FOREIGN, recipient="a@customer.test")
    verdict = decide([held, refused], policy, RCPTS)
    assert verdict.dropped["a@customer.test"] is refused
    assert verdict.action is Action.ACCEPT


def test_per_recipient_accept_is_not_a_drop(dealer: DealerPolicy) -> None:
    policy = with_rules(dealer, from_domain_not_allowed=Action.TAG)
    tagged = dataclasses.replace(FOREIGN, recipient="a@customer.test")
    verdict = decide([tagged], policy, RCPTS)
    assert not verdict.dropped
    assert verdict.action is Action.TAG
    assert verdict.tags == ("from-domain-not-allowed",)


def test_repairs_are_listed_for_intake(dealer: DealerPolicy) -> None:
    rules = with_rules(dealer, from_domain_not_allowed=Action.REPAIR)
    verdict = decide([FIXABLE, FOREIGN], rules, RCPTS)
    assert verdict.repairs == (FIXABLE,)
    assert verdict.action is Action.HOLD  # the unfixable one holds the message
