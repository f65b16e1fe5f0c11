"""The fast phrase scan finds exactly what searching every pattern finds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.pipeline.phrases import PhraseTable, reference_scan
from gateway.pipeline.purpose import _OFFER_PHRASES, _TRANSACTION_PHRASES

TABLES = (PhraseTable.build(_OFFER_PHRASES), PhraseTable.build(_TRANSACTION_PHRASES))

# Words and pieces of the phrases themselves, so random text is full of near-misses, with
# the characters IGNORECASE treats specially (long s, dotless i, Kelvin sign, final sigma,
# the dotted capital I that lower-cases to two characters).
PIECES = (
    "sale", "SALE", "ſale", "offer", "offers", "ends", "expires", "is", "are", "confirmed",
    "booked", "for", "your", "order", "RO", "ro-", "12", "$", "$1,299", "/mo", "% off", "50%",
    "apr", "0.9%", "financing", "as low as", "starting at", "save", "savings of", "up to",
    "free", "of charge", "gift card", "deal", "deals", "specials", "coupon", "code", "use",
    "receipt", "invoice", "amount due", "payment", "thank", "thanks", "you", "purchase",
    "password", "reset", "account", "log in", "login", "details", "recall", "campaign 4",
    "stock A123", "(a $50 value)", "don't miss", "dont", "miss", "K", "\u212a", "ı", "ς",
    "Σ", "İ", "wholesale", "offering", "-", ":", "!", ".", ",", "\n", " ", "  ",
)  # fmt: skip
ASCII_PIECES = tuple(piece for piece in PIECES if piece.isascii())
texts = (
    st.lists(st.sampled_from(ASCII_PIECES), max_size=60).map("".join)  # the word-set path
    | st.lists(st.sampled_from(PIECES), max_size=60).map("".join)
    | st.text(max_size=200)
)


@settings(max_examples=400, deadline=None)
@given(texts)
def test_the_scan_agrees_with_searching_every_pattern(text: str) -> None:
    for table in TABLES:
        assert table.scan(text) == reference_scan(table, text)


def test_a_phrase_overlapped_by_another_names_phrase_is_still_found() -> None:
    table = PhraseTable.build(
        (("urgency", 1.0, (r"\boffer ends\b",)), ("offer", 1.0, (r"\boffers?\b",)))
    )
    hits = table.scan("This offer ends Sunday.")
    assert hits["urgency"].start == hits["offer"].start == 5
    assert list(hits) == ["urgency", "offer"]  # in the order found; the earlier row first


def test_phrases_of_each_plan_are_found_by_their_name() -> None:
    # One phrase of each kind of plan: a literal start, one of several starts, a literal
    # inside only (searched), a short prefix (too short to try place by place).
    samples = {
        r"\bcoupons?\b": "Clip this coupon today",
        r"\b(?:as low as|starting (?:at|from)|from only|only|just)\s*\$\s?\d[\d,]*(?:\.\d\d)?": (
            "leases starting at $199"
        ),
        r"\b\d{1,2}\s?%\s*off\b": "take 20% off parts",
        r"\bRO-?\d+": "see RO-4411 attached",
    }
    seen = set()
    for table in TABLES:
        for p in table.patterns:
            if p.regex.pattern in samples:
                seen.add(p.regex.pattern)
                text = samples[p.regex.pattern]
                assert p.name in table.scan(text), (p.regex.pattern, text)
                assert table.scan(text) == reference_scan(table, text)
    assert seen == set(samples)
