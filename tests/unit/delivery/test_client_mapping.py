from __future__ import annotations

import pytest

from gateway.delivery.client import check_address, outcome_from_reply, split_enhanced
from gateway.types import OutcomeKind


@pytest.mark.parametrize(
    ("code", "text", "transaction", "kind", "out_code", "enhanced"),
    [
        pytest.param(250, "2.0.0 OK queued", True, OutcomeKind.DELIVERED, 250, "2.0.0", id="250"),
        pytest.param(250, "OK", True, OutcomeKind.DELIVERED, 250, "2.0.0", id="250-no-enh"),
        pytest.param(450, "4.2.0 busy", True, OutcomeKind.DEFERRED, 450, "4.2.0", id="450"),
        pytest.param(421, "closing", True, OutcomeKind.DEFERRED, 421, "4.0.0", id="421"),
        pytest.param(550, "5.1.1 no such user", True, OutcomeKind.FAILED, 550, "5.1.1", id="550"),
        pytest.param(554, "Rejected", True, OutcomeKind.FAILED, 554, "5.0.0", id="554-no-enh"),
        pytest.param(550, "4.1.1 odd", True, OutcomeKind.FAILED, 550, "5.0.0", id="class-mismatch"),
        pytest.param(
            535, "5.7.8 bad creds", False, OutcomeKind.DEFERRED, 451, "4.7.8", id="auth-5xx-defers"
        ),
        pytest.param(554, "no service", False, OutcomeKind.DEFERRED, 451, "4.4.0", id="banner"),
        pytest.param(-1, "garbage", True, OutcomeKind.DEFERRED, 451, "4.5.0", id="garbled"),
        pytest.param(
            250, "unsolicited", False, OutcomeKind.DEFERRED, 451, "4.5.0", id="2xx-greeting"
        ),
    ],
)
def test_reply_mapping(
    code: int, text: str, transaction: bool, kind: OutcomeKind, out_code: int, enhanced: str
) -> None:
    outcome = outcome_from_reply(code, text, transaction=transaction)
    assert (outcome.kind, outcome.code, outcome.enhanced) == (kind, out_code, enhanced)


def test_huge_multiline_reply_is_flattened_and_capped() -> None:
    outcome = outcome_from_reply(550, "5.7.1 first\nsecond\x00" + "z" * 100_000)
    assert "\n" not in outcome.text and "\x00" not in outcome.text
    assert len(outcome.text) <= 512


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5.1.1 no", ("5.1.1", "no")), ("no code", ("", "no code")), ("2.0.0", ("2.0.0", ""))],
)
def test_split_enhanced(text: str, expected: tuple[str, str]) -> None:
    assert split_enhanced(text) == expected


@pytest.mark.parametrize(
    ("address", "enhanced"),
    [
        ("a@b.example\r\nRSET", "5.1.3"),
        ("a@b.example\x00", "5.1.3"),
        ("a b@c.example", "5.1.3"),
        ("<a@b.example> SIZE=1", "5.1.3"),
        ("jos\u00e9@b.example", "5.6.7"),
    ],
)
def test_unsendable_addresses_fail_permanently(address: str, enhanced: str) -> None:
    outcome = check_address(address)
    assert outcome is not None
    assert (outcome.kind, outcome.code, outcome.enhanced) == (OutcomeKind.FAILED, 553, enhanced)


def test_plain_address_is_sendable() -> None:
    assert check_address("jane@customer.example") is None
