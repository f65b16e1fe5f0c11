"""The shared signer, its canonical encodings, and the three codecs built on it.

The ``OLD_*`` strings were written by the codecs before they shared ``gateway.tokens``
(key ``bytes(range(32))``): they stand for tokens already in sent mail and in links
dealers have bookmarked, which must keep verifying and must keep being produced.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from gateway.tokens import Signer, b32decode, b32encode, derive_key, encode_fields, hex_decode
from gateway.tracking import RefCodec, parse_header, parse_verp
from gateway.unsubscribe.links import UnsubscribeLinks
from gateway.web.status import StatusLinks

KEY = bytes(range(32))
OLD_HEADER = "v1.01hq3v5c8w7m2k4x.0.7dgkv5web5bqilb4"
OLD_VERP = "b-01hq3v5c8w7m2k4x.3-od36vv6jriocruby@bounces.example"
OLD_UNSUBSCRIBE = (
    "afqwg3lffvww65dpojzqu2tpnbxc4zdpmvagk6dbnvygyzjomnxw2crqgfuhcm3wgvrtq5zxnuzgwndyfyyg6g52"
    "bpafmmhp6q7rur4blvfmk"
)
OLD_UNSUBSCRIBE_UTF8 = (
    "afsgkylmmvzc3q5jblb3yqdfpbqw24dmmuxg64thbiydc2drgn3dkyzyo43w2mtlgr4c4mjseznb7ee7d6s74gwx"
    "qmre63j7ea"
)
OLD_STATUS = "d6e799478f0ce98b773eb9a4729932ef"


# -- the codecs: old tokens still verify, and are still what the codecs write ------------


def test_old_tracking_header_verifies_and_is_reproduced() -> None:
    codec = RefCodec(KEY)
    token = parse_header(OLD_HEADER)
    assert token is not None
    assert codec.verify(token, "acme-motors", "john.doe@example.com")
    assert not codec.verify(token, "acme-motors", "jane@example.com")
    assert not codec.verify(token, "other-dealer", "john.doe@example.com")
    assert codec.header_value(token.message_id, "acme-motors", "John.Doe@Example.COM") == OLD_HEADER


def test_old_verp_address_verifies_and_is_reproduced() -> None:
    codec = RefCodec(KEY)
    token = parse_verp(OLD_VERP.upper())  # some MTAs change the case of the local part
    assert token is not None
    assert codec.verify(token, "acme-motors", "jane@example.net")
    assert not RefCodec(b"k" * 32).verify(token, "acme-motors", "jane@example.net")
    made = codec.verp_address(
        token.message_id, "acme-motors", "jane@example.net", "Bounces.Example"
    )
    assert made == OLD_VERP


@pytest.mark.parametrize(
    ("token", "dealer", "recipient", "message"),
    [
        (OLD_UNSUBSCRIBE, "acme-motors", "john.doe@example.com", "01hq3v5c8w7m2k4x.0"),
        (OLD_UNSUBSCRIBE_UTF8, "dealer-é", "ü@example.org", "01hq3v5c8w7m2k4x.12"),
    ],
    ids=["ascii", "utf-8"],
)
def test_old_unsubscribe_token_verifies_and_is_reproduced(
    token: str, dealer: str, recipient: str, message: str
) -> None:
    links = UnsubscribeLinks(KEY, "https://mg.example/")
    found = links.verify(token)
    assert found is not None
    assert (found.dealer_id, found.recipient, found.message_id) == (dealer, recipient, message)
    assert links.verify(token.upper()) == found  # a mail client may upper-case a URL
    assert links.token(dealer, recipient, message) == token
    assert links.token(dealer, recipient.upper(), message) == token  # the recipient is folded
    assert UnsubscribeLinks(b"k" * 32, "https://mg.example/").verify(token) is None


def test_unsubscribe_refuses_other_spellings_and_tampering() -> None:
    links = UnsubscribeLinks(KEY, "https://mg.example/")
    # The last character carries unused bits: flipping the lowest one gives a text that
    # base64 decodes to the very same bytes, which is still not a token we wrote.
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    last = alphabet.index(OLD_UNSUBSCRIBE[-1])
    sibling = OLD_UNSUBSCRIBE[:-1] + alphabet[last ^ 1]
    padded = sibling.upper() + "=" * (-len(sibling) % 8)
    assert base64.b32decode(padded) == b32decode(OLD_UNSUBSCRIBE)
    assert b32decode(sibling) is None
    assert links.verify(sibling) is None
    flipped = (
        OLD_UNSUBSCRIBE[:10] + ("a" if OLD_UNSUBSCRIBE[10] != "a" else "b") + OLD_UNSUBSCRIBE[11:]
    )
    assert links.verify(flipped) is None
    assert links.verify("") is None
    assert links.verify("not base32!") is None


def test_old_status_link_verifies_and_is_reproduced() -> None:
    links = StatusLinks(KEY, "https://mg.example")
    assert links.token("acme-motors") == OLD_STATUS
    assert links.valid("acme-motors", OLD_STATUS)
    assert not links.valid("other-dealer", OLD_STATUS)
    assert not links.valid("acme-motors", OLD_STATUS.upper())  # only the spelling we wrote
    assert not links.valid("acme-motors", OLD_STATUS[:-2])
    assert not links.valid("acme-motors", "é" * 32)  # non-ASCII is a 404, not a crash
    assert links.url("acme-motors") == f"https://mg.example/status/acme-motors/{OLD_STATUS}"


# -- the signer and the encodings ------------------------------------------------------


def test_tag_is_truncated_hmac_sha256_of_context_and_data() -> None:
    signer = Signer(KEY, size=16, context=b"ctx\x00")
    expected = hmac.new(KEY, b"ctx\x00data", hashlib.sha256).digest()[:16]
    assert signer.tag(b"data") == expected
    assert signer.verify(b"data", expected)
    assert not signer.verify(b"datA", expected)
    assert not signer.verify(b"data", expected[:-1])  # a shorter tag is not a prefix match
    assert not signer.verify(b"data", expected + b"\x00")
    assert not signer.verify(b"data", None)
    assert not Signer(KEY, size=16, context=b"other").verify(b"data", expected)


def test_signer_refuses_short_keys_and_tags() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Signer(b"short", size=16)
    with pytest.raises(ValueError, match="10 to 32 bytes"):
        Signer(KEY, size=8)
    with pytest.raises(ValueError, match="10 to 32 bytes"):
        Signer(KEY, size=33)


def test_derive_key_is_hmac_of_the_label() -> None:
    assert derive_key(KEY, b"label") == hmac.new(KEY, b"label", hashlib.sha256).digest()
    assert derive_key(KEY, b"label") != derive_key(KEY, b"other")


def test_encode_fields_is_length_prefixed() -> None:
    assert encode_fields("ab", "c") != encode_fields("a", "bc")
    assert encode_fields("é") == b"\x00\x00\x00\x02\xc3\xa9"
    assert encode_fields() == b""


@pytest.mark.parametrize("data", [b"", b"\x00", b"hello", bytes(range(256))], ids=len)
def test_b32_round_trip(data: bytes) -> None:
    text = b32encode(data)
    assert text == base64.b32encode(data).decode().rstrip("=").lower()
    assert b32decode(text) == data
    assert b32decode(text.upper()) == data


@pytest.mark.parametrize("text", ["a", "abc", "0000", "ab=", "ab cd", "é"], ids=repr)
def test_b32_decode_refuses_non_canonical_text(text: str) -> None:
    assert b32decode(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("00ff", b"\x00\xff"), ("00FF", None), ("0", None), ("", None), ("zz", None), ("é0", None)],
    ids=repr,
)
def test_hex_decode(text: str, expected: bytes | None) -> None:
    assert hex_decode(text) == expected
