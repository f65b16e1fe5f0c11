"""Fingerprints, signatures and recipient identity (gateway/duplicates/fingerprints.py)."""

from __future__ import annotations

import functools
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.duplicates import fingerprints as fp
from gateway.mail.message import ParsedMessage, ParseLimits, parse
from gateway.policy.loader import load_policy_set
from tests.shipped import copy_shipped

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "duplicates"
LIMITS = ParseLimits(max_header_bytes=102_400, max_mime_depth=20)


def sample(name: str) -> ParsedMessage:
    return parse((DATA / f"{name}.eml").read_bytes(), LIMITS)


@functools.cache
def shipped_options() -> fp.DuplicateOptions:
    with tempfile.TemporaryDirectory() as tmp:
        policies = copy_shipped(Path(tmp) / "policies")
        return fp.options_for(load_policy_set(policies).defaults)


def text(body: str, subject: str = "Your test drive", extra: str = "") -> ParsedMessage:
    raw = (
        f"From: sales@example-motors.test\r\nTo: john@customer.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <x@y>\r\n{extra}Content-Type: text/plain\r\n\r\n{body}"
    ).encode()
    return parse(raw, LIMITS)


# -- options ----------------------------------------------------------------------------


def test_shipped_options() -> None:
    # The shipped cap is off (defaults.toml): duplicates are dropped, different mail is not.
    options = shipped_options()
    assert options == fp.DuplicateOptions(
        window=fp.DuplicateOptions().window,
        threshold=0.6,
        per_day=0,
        per_week=0,
    )
    assert options.history == options.window  # 72h: no cap needs a longer history


def test_options_default_without_rules() -> None:
    assert fp.options_for({}) == fp.DuplicateOptions()


# -- exact fingerprint ------------------------------------------------------------------


def test_a_resend_with_new_ids_tracking_tokens_spacing_and_case_is_exact() -> None:
    first, resent = sample("lead-cars-com"), sample("lead-cars-com-resent")
    assert first.message_id != resent.message_id
    assert fp.exact_fingerprint(first) == fp.exact_fingerprint(resent)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param(
            "See https://dealer.test/car?id=7&utm_source=crm&utm_medium=email",
            "See https://dealer.test/car?id=7&fbclid=IwAR3xYz&utm_campaign=spring",
            id="tracking-parameters",
        ),
        pytest.param(
            "Unsubscribe: https://crm.test/u/a8f9c2e1b7d44e0f9a1b",
            "Unsubscribe: https://crm.test/u/0c1d2e3f4a5b6c7d8e9f",
            id="unsubscribe-link",
        ),
        pytest.param(
            "Your reference: 3f2b8c1e-9d4a-4e7b-8f6c-2a1b0c9d8e7f",
            "Your reference: 5a6b7c8d-1e2f-4a3b-9c8d-7e6f5a4b3c2d",
            id="per-message-token",
        ),
        pytest.param("Hello  John,\r\n\r\nSee you", "hello john, see   YOU", id="space-and-case"),
        pytest.param(
            "Track: https://x.test/o/AbCdEf0123456789XyZ?t=1",
            "Track: https://x.test/o/ZyX9876543210fEdCbA?t=2",
            id="token-in-path",
        ),
        # Capitals: the pre-scan that skips texts without a URL must not miss these.
        pytest.param(
            "See HTTPS://Dealer.test/car?id=7&UTM_SOURCE=crm",
            "See https://dealer.test/car?id=7",
            id="capital-url",
        ),
        pytest.param(
            "Visit WWW.Dealer.test/?gclid=abc", "Visit www.dealer.test/", id="capital-www"
        ),
        pytest.param("ref x1y2z3a4b5c6d7e8f9 ok", "ref 9f8e7d6c5b4a3z2y1x ok", id="bare-token"),
    ],
)
def test_what_differs_per_send_is_ignored(a: str, b: str) -> None:
    assert fp.exact_fingerprint(text(a)) == fp.exact_fingerprint(text(b))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param("Your car is ready", "Your car is not ready", id="words"),
        pytest.param("Price: $21,990", "Price: $23,990", id="numbers"),
        pytest.param(
            "https://dealer.test/car?id=7", "https://dealer.test/car?id=8", id="real-parameter"
        ),
    ],
)
def test_real_differences_change_the_fingerprint(a: str, b: str) -> None:
    assert fp.exact_fingerprint(text(a)) != fp.exact_fingerprint(text(b))


def test_subject_counts() -> None:
    assert fp.exact_fingerprint(text("x", subject="A")) != fp.exact_fingerprint(
        text("x", subject="B")
    )


def test_dealer_ignore_pattern() -> None:
    a, b = text("Hello\r\nLead ref: 1001\r\n"), text("Hello\r\nLead ref: 2002\r\n")
    assert fp.exact_fingerprint(a) != fp.exact_fingerprint(b)
    pattern = r"^lead ref: .*$"
    assert fp.exact_fingerprint(a, pattern) == fp.exact_fingerprint(b, pattern)


def test_html_only_body_is_read_as_text() -> None:
    raw = (
        b"From: a@b.test\r\nSubject: s\r\nContent-Type: text/html\r\n\r\n"
        b"<html><style>p{}</style><p>Hello <b>John</b></p></html>"
    )
    assert fp.canonical_text(parse(raw, LIMITS)) == "s hello john"


def test_attachments_count() -> None:
    def with_attachment(content: str) -> ParsedMessage:
        raw = (
            "From: a@b.test\r\nSubject: quote\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nYour quote\r\n"
            "--b\r\nContent-Type: application/pdf\r\n"
            'Content-Disposition: attachment; filename="q.pdf"\r\n\r\n'
            f"{content}\r\n--b--\r\n"
        ).encode()
        return parse(raw, LIMITS)

    assert fp.exact_fingerprint(with_attachment("A")) != fp.exact_fingerprint(with_attachment("B"))


# -- near-duplicate signature -----------------------------------------------------------

SIMILAR = [
    ("lead-cars-com", "lead-website"),
    ("lead-cars-com", "lead-autotrader"),
    ("lead-website", "lead-autotrader"),
]
DIFFERENT = [
    ("service-reminder", "lead-cars-com"),
    ("service-reminder", "sales-price-drop"),
    ("sales-price-drop", "lead-cars-com"),
    ("appointment-confirmation", "lead-cars-com"),
    ("appointment-confirmation", "service-reminder"),
]


@pytest.mark.parametrize(("a", "b"), SIMILAR, ids=[f"{a}~{b}" for a, b in SIMILAR])
def test_three_leads_are_near_duplicates(a: str, b: str) -> None:
    score = fp.similarity(fp.signature(sample(a)), fp.signature(sample(b)))
    assert score >= shipped_options().threshold + 0.15, score


@pytest.mark.parametrize(("a", "b"), DIFFERENT, ids=[f"{a}~{b}" for a, b in DIFFERENT])
def test_different_messages_are_not(a: str, b: str) -> None:
    score = fp.similarity(fp.signature(sample(a)), fp.signature(sample(b)))
    assert score <= shipped_options().threshold - 0.3, score


def test_all_lower_case_template_still_matches() -> None:
    # Without capitals the skeleton keeps only the digit mask; still well above 0.6.
    a = sample("lead-cars-com")
    b = sample("lead-website")
    lower = [text(" ".join(m.text_parts).lower()) for m in (a, b)]
    score = fp.similarity(fp.signature(lower[0]), fp.signature(lower[1]))
    assert score >= 0.6, score


def test_identical_signatures_score_one_and_foreign_lengths_zero() -> None:
    sig = fp.signature(sample("service-reminder"))
    assert len(sig) == fp.SIGNATURE_BYTES
    assert fp.similarity(sig, sig) == 1.0
    assert fp.similarity(sig, sig[:8]) == 0.0


def test_skeleton_masks_template_fills() -> None:
    assert fp.skeleton("Hi John, your 2024 Honda is ready") == [
        "^", "^", "your", "#", "^", "is", "ready",
    ]  # fmt: skip


# -- category and recipients ------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", fp.Category.COMMERCIAL),
        ("X-Mailgate-Category: transactional\r\n", fp.Category.TRANSACTIONAL),
        ("X-Mailgate-Category:  Transactional \r\n", fp.Category.TRANSACTIONAL),
        ("X-Mailgate-Category: commercial\r\n", fp.Category.COMMERCIAL),
        ("X-Mailgate-Category: newsletter\r\n", fp.Category.COMMERCIAL),
    ],
)
def test_category(header: str, expected: fp.Category) -> None:
    assert fp.category_of(text("x", extra=header), fp.Category.COMMERCIAL) is expected


def test_category_default_from_policy() -> None:
    assert fp.category_of(text("x"), fp.Category.TRANSACTIONAL) is fp.Category.TRANSACTIONAL


@pytest.mark.parametrize(
    ("address", "fold", "plus", "expected"),
    [
        ("John.Doe+leads@Customer.Example", True, True, "john.doe@customer.example"),
        ("John.Doe+leads@Customer.Example", False, True, "John.Doe@customer.example"),
        ("John.Doe+leads@Customer.Example", True, False, "john.doe+leads@customer.example"),
        ("John.Doe+leads@Customer.Example", False, False, "John.Doe+leads@customer.example"),
        ("+only@x.test", True, True, "+only@x.test"),  # a leading + is not a tag
        ("a@X.Test.", True, True, "a@x.test"),
    ],
)
def test_normalise_recipient(address: str, fold: bool, plus: bool, expected: str) -> None:
    got = fp.normalise_recipient(address, fold_local_part=fold, strip_plus_tag=plus)
    assert got == expected


def test_recipient_keys_are_per_dealer() -> None:
    a = fp.recipient_key("example-motors", "john@x.test")
    assert len(a) == 16
    assert a == fp.recipient_key("example-motors", "john@x.test")
    assert a != fp.recipient_key("rival-motors", "john@x.test")


def test_skeleton_reads_only_the_start_of_a_huge_text() -> None:
    from gateway.duplicates.fingerprints import SKELETON_CHARS, skeleton

    head = "service reminder for your car " * (SKELETON_CHARS // 30 + 1)
    assert skeleton(head + "a different tail " * 100_000) == skeleton(head)


def _skeleton_by_definition(text: str) -> list[str]:
    # The definition, a word at a time: what the C-level substitutions must give.
    out = []
    for word in re.findall(r"\w+", text[: fp.SKELETON_CHARS]):
        if re.search(r"\d", word):
            out.append("#")
        elif word[0].isupper():
            out.append("^")
        else:
            out.append(word.casefold())
    return out


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["Hi", "john", "2024", "Honda", "CR-V", "a1b", "x_y", "_Z", "É", "été", "ß", "İ",
             "Ⅻ", "Ⓐ", "ǅ", "#", "^", "#^", " ", "  ", "\n", "-", ".", "١٢", "ﬁ", "Σ", "ς"]
        ),
        max_size=40,
    ).map("".join)
    | st.text(max_size=80)
)  # fmt: skip
def test_skeleton_is_the_word_by_word_definition(text: str) -> None:
    assert fp.skeleton(text) == _skeleton_by_definition(text)


def _scrub_by_definition(text: str) -> str:
    # Every substitution run over the whole text, with no shortcut.
    text = fp._URL.sub(fp._clean_url, text)
    return fp._LONG_WORD.sub(fp._token_or_word, text)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["a", "B", "7", "-", "_", " ", "\n", "é", "٣", "x" * 16, "-" * 20, "ab12" * 4,
             "https://d.test/?utm_source=x&id=1", "www.d.test/a1b2c3d4e5f6g7h8", "http",
             "token-1234567890abcdef", "(", ")", "<", ">"]
        ),
        max_size=30,
    ).map("".join)
)  # fmt: skip
def test_scrub_is_its_definition(text: str) -> None:
    assert fp._scrub(text, "") == _scrub_by_definition(text)


def _print_in_one_piece(msg: ParsedMessage, options: fp.DuplicateOptions) -> fp.MessagePrint:
    # The print computed from "subject\nbody" as a whole, with no cache and no parts.
    scrubbed = fp._scrubbed(msg, options.ignore_pattern)
    return fp.MessagePrint(
        fingerprint=fp._fingerprint(msg, scrubbed),
        signature=fp.minhash(fp._shingles(fp.skeleton(scrubbed))),
        category=fp.category_of(msg, options.default_category),
    )


_PIECES = st.lists(
    st.sampled_from(
        ["Hello", "hello", "John", "2024", "Civic", "EX", " ", "  ", "\t", "\r\n", "-", ".",
         "Σ", "ς", "ΑΣ", "ß", "İ", "ﬁ", "é", "٣", "your", "service", "is", "due", "ab12" * 4,
         "https://d.test/?utm_source=x&id=1", "unsubscribe", "#", "^"]
    ),
    max_size=40,
).map("".join)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(subject=_PIECES, body=_PIECES, ignore=st.sampled_from(["", r"ref \d+", r"^\s*hello"]))
def test_the_print_from_parts_is_the_print_of_the_whole(
    subject: str, body: str, ignore: str
) -> None:
    # print_message assembles the print from a cached body part and the subject; it must
    # be the print of the concatenation, for every subject and body, twice over (the
    # second time the body part comes from the cache).
    raw = (
        f"From: sales@example-motors.test\r\nTo: j@c.test\r\n"
        f"Subject: {subject.replace(chr(13), ' ').replace(chr(10), ' ')}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    ).encode()
    parsed = parse(raw, LIMITS)
    options = fp.DuplicateOptions(ignore_pattern=ignore)
    expected = _print_in_one_piece(parsed, options)
    assert fp.print_message(parsed, options) == expected
    assert fp.print_message(parsed, options) == expected


def test_a_campaign_body_is_read_once() -> None:
    # The same body under two subjects: the body part is computed once and reused.
    fp._body_print.cache_clear()
    body = "Your Civic is due for service. Book online or call 555 0100.\r\n" * 40
    first, second = text(body, subject="Reminder for John"), text(body, subject="Reminder for Ann")
    options = fp.DuplicateOptions()
    assert fp.print_message(first, options) == _print_in_one_piece(first, options)
    assert fp.print_message(second, options) == _print_in_one_piece(second, options)
    assert fp._body_print.cache_info().hits == 1


def test_a_personalised_campaign_shares_the_body_skeleton() -> None:
    # Each copy fills another name, model year and stock number into the body: the texts
    # differ, the skeletons do not, and the shingles' hashes are computed once.
    fp._skeleton_minima.cache_clear()
    options = fp.DuplicateOptions()
    for name, year, stock in (("John", 2019, 4411), ("Maria", 2021, 5230)):
        body = f"Hi {name},\r\nyour {year} Civic (stock {stock}) is due for service.\r\n" * 20
        msg = text(body, subject="Service reminder")
        assert fp.print_message(msg, options) == _print_in_one_piece(msg, options)
    assert fp._skeleton_minima.cache_info().hits == 1
