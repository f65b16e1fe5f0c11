from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.datadir import load_or_create_key
from gateway.errors import ConfigError
from gateway.mail.addresses import check as check_address
from gateway.tracking import (
    RefCodec,
    RefToken,
    message_id_for,
    new_submission_id,
    parse_header,
    parse_verp,
)
from gateway.types import MessageId

KEY = b"k" * 32
CODEC = RefCodec(KEY)
MID = "kq3x9z0abcde1234.1"
NOW = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)

message_ids = st.from_regex(r"[0-9a-hjkmnp-tv-z]{16}\.[0-9]{1,6}", fullmatch=True)
dealers = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=40)
rcpts = st.from_regex(r"[a-zA-Z0-9._+-]{1,40}@[a-z0-9-]{1,30}\.[a-z]{2,6}", fullmatch=True)


def test_header_value_shape_and_round_trip() -> None:
    value = CODEC.header_value(MID, "acme-motors", "Buyer@Customer.test")
    assert value.startswith(f"v1.{MID}.")
    token = parse_header(value)
    assert token == RefToken(MessageId(MID), value.rsplit(".", 1)[1])
    assert CODEC.verify(token, "acme-motors", "buyer@customer.test")


def test_mac_is_80_bits_of_lower_base32() -> None:
    mac = CODEC.mac(MID, "acme-motors", "b@c.test")
    assert (
        len(mac) == 16
        and mac == mac.lower()
        and set(mac) <= set("abcdefghijklmnopqrstuvwxyz234567")
    )


def test_encoding_is_unambiguous() -> None:
    assert CODEC.mac("a.1", "bc", "d@e.test") != CODEC.mac("a.1", "b", "cd@e.test")


def test_verp_round_trip_and_length() -> None:
    address = CODEC.verp_address(MID, "acme-motors", "b@c.test", "Bounces.Mailgate.test")
    local, _, domain = address.partition("@")
    assert local.startswith(f"b-{MID}-") and domain == "bounces.mailgate.test"
    assert len(local) <= 64
    assert check_address(address) is None  # passes our own envelope address rules
    token = parse_verp(address)
    assert token is not None and token.message_id == MID
    assert CODEC.verify(token, "acme-motors", "b@c.test")
    assert parse_verp(f"<{address.upper()}>") == token


@pytest.mark.parametrize(
    "value",
    [
        "",
        "v2.kq3x9z0abcde1234.1.aaaaaaaaaaaaaaaa",
        "v1.kq3x9z0abcde1234.1",
        "v1..aaaaaaaaaaaaaaaa",
        "v1.kq3x9z0abcde1234.1.aaaaaaaaaaaaaaa1",
        "v1.kq3x9z0abcde1234.1.aaaaaaaaaaaaaaaa\r\nBcc: x",
    ],
)
def test_parse_header_rejects_junk(value: str) -> None:
    assert parse_header(value) is None


@pytest.mark.parametrize(
    "address",
    [
        "",
        "b-kq3x9z0abcde1234.1@x.test",
        "c-kq3x9z0abcde1234.1-aaaaaaaaaaaaaaaa@x.test",
        "b-kq3x9z0abcde1234.1-aaaaaaaaaaaaaaaa",
        "someone@x.test",
    ],
)
def test_parse_verp_rejects_junk(address: str) -> None:
    assert parse_verp(address) is None


def test_other_key_does_not_verify() -> None:
    token = parse_header(CODEC.header_value(MID, "acme", "b@c.test"))
    assert token is not None
    assert not RefCodec(b"j" * 32).verify(token, "acme", "b@c.test")


def test_short_key_refused() -> None:
    with pytest.raises(ValueError):
        RefCodec(b"short")


@given(message_ids, dealers, rcpts)
def test_round_trip_and_tampering(message_id: str, dealer: str, rcpt: str) -> None:
    header = parse_header(CODEC.header_value(message_id, dealer, rcpt))
    verp = parse_verp(CODEC.verp_address(message_id, dealer, rcpt, "b.mailgate.test"))
    assert header is not None and header == verp
    assert CODEC.verify(header, dealer, rcpt.upper())  # the recipient is case-insensitive
    assert not CODEC.verify(header, dealer + "x", rcpt)
    assert not CODEC.verify(header, dealer, "x" + rcpt)
    flipped = header.mac[:-1] + ("a" if header.mac[-1] != "a" else "b")
    assert not CODEC.verify(RefToken(header.message_id, flipped), dealer, rcpt)
    sid, n = message_id.rsplit(".", 1)
    other_id = message_id_for(sid, int(n) + 1)
    assert not CODEC.verify(RefToken(other_id, header.mac), dealer, rcpt)


def test_submission_ids_sort_by_time() -> None:
    ids = [
        new_submission_id(NOW + timedelta(milliseconds=ms)) for ms in (0, 1, 2, 1000, 86_400_000)
    ]
    assert all(len(i) == 16 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


@given(st.integers(0, 2**47), st.integers(0, 2**47), st.binary(min_size=4, max_size=4))
def test_submission_id_order_matches_time(a: int, b: int, rand: bytes) -> None:
    def at(ms: int) -> str:
        return new_submission_id(
            datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms), lambda _: rand
        )

    assert (at(a) < at(b)) == (a < b)


def test_submission_id_uses_the_random_source() -> None:
    assert new_submission_id(NOW, lambda n: b"\x00" * n) != new_submission_id(
        NOW, lambda n: b"\xff" * n
    )


def test_submission_id_needs_an_aware_time() -> None:
    with pytest.raises(ValueError):
        new_submission_id(datetime(2026, 1, 1))


def test_message_id_for() -> None:
    sid = new_submission_id(NOW)
    assert message_id_for(sid, 3) == f"{sid}.3"
    with pytest.raises(ValueError):
        message_id_for(sid, -1)


def test_key_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "tracking.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["tracking.key"]


def test_key_of_wrong_size_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "tracking.key"
    path.write_bytes(b"short")
    with pytest.raises(ConfigError):
        load_or_create_key(path)
