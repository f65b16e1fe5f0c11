"""Every reply the gateway sends: the enhanced code agrees with the basic code (RFC 3463 §2)
and the text is one line of printable US-ASCII (RFC 5321 §4.2)."""

from __future__ import annotations

import pytest

from gateway import replies
from gateway.types import Reply

CONSTANTS = {name: value for name, value in vars(replies).items() if isinstance(value, Reply)}
MADE = {
    "sender_not_owned": replies.sender_not_owned("other.test", "example-motors"),
    "too_many_recipients": replies.too_many_recipients(100),
    "queued_one": replies.queued("06h0j8rx817hcbyj", 1),
    "queued_many": replies.queued("06h0j8rx817hcbyj", 3),
    "dealer_suspended": replies.dealer_suspended(
        "example-motors", "Paused: list bought\r\nfrom a broker – " + "x" * 400, "", False
    ),
    "dealer_suspended_tempfail": replies.dealer_suspended(
        "example-motors", "Paused for a check.", "2026-05-07 09:30 UTC", True
    ),
}
ALL = {**CONSTANTS, **MADE}


def test_a_suspended_dealer_is_told_the_reason_and_what_to_do() -> None:
    reject = replies.dealer_suspended("example-motors", "Paused for a check.", "", False)
    assert reject.line() == (
        "554 5.7.1 Dealer example-motors is suspended: Paused for a check; contact your "
        "gateway operator"
    )
    later = MADE["dealer_suspended_tempfail"].line()
    assert later == (
        "451 4.7.1 Dealer example-motors is suspended: Paused for a check (until "
        "2026-05-07 09:30 UTC); try again later"
    )


def test_there_are_replies_to_check() -> None:
    assert len(CONSTANTS) > 30


@pytest.mark.parametrize("name", sorted(ALL))
def test_reply_is_consistent_ascii(name: str) -> None:
    reply = ALL[name]
    assert 200 <= reply.code < 600
    klass, subject, detail = reply.enhanced.split(".")
    assert klass == str(reply.code)[0], f"{name}: {reply.code} with {reply.enhanced}"
    assert subject.isdigit() and detail.isdigit()
    line = reply.line()
    assert line.isascii() and line.isprintable(), name
    assert len(line) <= 510  # RFC 5321 §4.5.3.1.5 with CRLF


@pytest.mark.parametrize("name", sorted(ALL))
def test_names_say_the_class(name: str) -> None:
    # A name that says OK/queued must be a success; anything else must not be.
    reply = ALL[name]
    success = name in {"OK", "RCPT_OK", "AUTH_OK", "REPORT_ACCEPTED"} or name.startswith("queued")
    assert reply.is_success == success, name


def test_every_builtin_reply_gets_an_enhanced_code() -> None:
    for status in replies._BUILTIN:
        rewritten = replies.rewrite_builtin(status)
        code, enhanced = rewritten.split(" ")[:2]
        assert enhanced[0] == code[0] and enhanced.count(".") == 2, rewritten
        assert rewritten.isascii()


def test_syntax_hints_keep_their_form() -> None:
    assert replies.rewrite_builtin("501 Syntax: MAIL FROM: <address>") == (
        "501 5.5.4 Syntax: MAIL FROM: <address>"
    )
