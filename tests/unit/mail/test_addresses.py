"""The one normal form of an address, and reading an address an operator typed."""

from __future__ import annotations

import pytest

from gateway.consent.rules import normalise_address
from gateway.duplicates.fingerprints import normalise_recipient
from gateway.mail.addresses import normalise, parse

# (written, key form, relayed form): the key folds the local part, the relayed form keeps it.
NORMAL_FORMS = [
    ("john@example.com", "john@example.com", "john@example.com"),
    ("John.Doe@Example.COM", "john.doe@example.com", "John.Doe@example.com"),
    ("  <John@Example.com>  ", "john@example.com", "John@example.com"),
    ("<<a@b.example>>", "a@b.example", "a@b.example"),
    ("a@Example.com.", "a@example.com", "a@example.com"),  # the root dot names the same domain
    ("John+Cars@Example.com", "john+cars@example.com", "John+Cars@example.com"),  # tag kept
    ('"John Doe"@Example.com', '"john doe"@example.com', '"John Doe"@example.com'),
    ("a@b@Example.com", "a@b@example.com", "a@b@example.com"),  # the domain is after the last @
    ("Jürgen@Example.de", "jürgen@example.de", "Jürgen@example.de"),  # str.lower on UTF-8
    ("Straße@example.de", "straße@example.de", "Straße@example.de"),  # not casefold: no "ss"
    ("a@BÜCHER.example", "a@bücher.example", "a@bücher.example"),  # no IDNA conversion
    ("a@xn--bcher-kva.example", "a@xn--bcher-kva.example", "a@xn--bcher-kva.example"),
    ("Postmaster", "postmaster", "postmaster"),  # no @: folded whole
    ("", "", ""),  # the null sender
    ("<>", "", ""),
]


@pytest.mark.parametrize(
    ("written", "key", "relayed"), NORMAL_FORMS, ids=[r[0] for r in NORMAL_FORMS]
)
def test_normalise(written: str, key: str, relayed: str) -> None:
    assert normalise(written) == key
    assert normalise(written, fold_local_part=False) == relayed
    assert normalise(key) == key  # idempotent
    assert normalise(relayed, fold_local_part=False) == relayed


@pytest.mark.parametrize(
    ("written", "key", "relayed"), NORMAL_FORMS, ids=[r[0] for r in NORMAL_FORMS]
)
def test_every_store_key_is_the_normal_form(written: str, key: str, relayed: str) -> None:
    # Consent records and duplicate keys are filed under the same form as suppressions.
    assert normalise_address(written) == key
    got = normalise_recipient(written, fold_local_part=True, strip_plus_tag=False)
    assert got == key


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("John@Example.com", "john@example.com"),
        (" <john@example.com> ", "john@example.com"),
        ("<john@example.com", "john@example.com"),  # a lone bracket, as CRM exports have it
        ("john+cars@example.com", "john+cars@example.com"),
        ("", None),
        ("john", None),
        ("john@", None),
        ("@example.com", None),
        ("john@localhost", None),  # internal hosts are not mail destinations
        ("john@[192.0.2.1]", None),  # nor IP literals
        ("john%other@example.com", None),  # relay tricks
        ("john doe@example.com", None),
        ("john@example.com.", None),  # what the listener refuses at RCPT is refused here
        ("john@bücher.example", None),  # U-labels: write the xn-- form
        ("a" * 65 + "@example.com", None),
    ],
    ids=repr,
)
def test_parse(text: str, expected: str | None) -> None:
    assert parse(text) == expected
