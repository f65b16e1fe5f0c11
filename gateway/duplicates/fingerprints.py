"""What makes two messages "the same" for one customer: fingerprints and signatures (pure).

This module owns the duplicate-detection arithmetic: the normalised text of a message,
its exact fingerprint, its near-duplicate signature and their comparison, the category
(commercial or transactional), the normalised recipient identity, and the records that
carry a recipient's recent sends between the store, intake and the checks. Nothing here
does I/O.

Normalisation
-------------
A CRM that sends one follow-up three times changes, per send, the things a customer never
reads as "different": the Message-ID and Date (not part of the text at all), tracking
parameters (``utm_*``, ``gclid``, ...), per-message tokens in links and text, the
unsubscribe link, white space and letter case. ``canonical_text`` removes exactly those:

* every URL loses its tracking parameters; remaining parameter values and path segments
  that look like tokens become ``~``; a URL that is an unsubscribe or preferences link
  becomes ``<unsubscribe>``;
* token-like words outside URLs (16+ characters mixing letters and digits, UUIDs, long
  hex) become ``~``;
* the dealer's own ``ignore_pattern`` (a regular expression from policy) is removed;
* runs of white space become one space, and the text is case-folded.

The text is the plain-text body when there is one (CRMs send ``multipart/alternative``
with the same words twice), else the HTML body reduced to its text. The subject is
included; attachments count by the SHA-256 of their content, so the same letter with a
different quote attached is not a duplicate.

Exact fingerprint: BLAKE2b-128 of the canonical subject, body and attachment digests.

Near duplicates: why shingled MinHash on a "template skeleton"
--------------------------------------------------------------
The three-leads case is one template filled three times: the vehicle, the lead source,
the salesperson's name and phone number differ; everything else is the same. Two things
make that robust to detect:

1. **Features: word 3-shingles over the skeleton.** Before shingling, a word with a digit
   becomes ``#`` and a capitalised word becomes ``^``. The parts a CRM fills into a
   template are overwhelmingly proper nouns and numbers (makes, models, trims, names,
   sites, years, phone numbers, stock numbers), so the three fills of one template get
   almost the same skeleton, while two *different* templates keep their different
   lower-case wording. On the shipped samples (``tests/data/duplicates/``, estimated by
   the signatures below) the three leads score 0.89-0.98 and every pair of different
   messages (service reminder, sales follow-up, price drop, appointment confirmation)
   0.03-0.08; without the skeleton (plain lower-cased 3-shingles, exact Jaccard) the
   leads score only about 0.66, too close to real differences for a safe threshold. An
   all-lower-case template loses the ``^`` help but keeps its digits masked (0.73).
2. **Estimator: one-permutation MinHash, 64 bins, kept at 16 bits each (128 bytes).**
   MinHash estimates the Jaccard similarity of the shingle sets without bias, with a
   standard error of about sqrt(s(1-s)/64) (at most 0.0625), so the policy threshold is
   a plain number ("share of the wording in common") with a known error, and the shipped
   0.6 sits several standard errors away from both the leads (~0.9) and unrelated mail
   (<0.1). Each shingle is hashed once, with BLAKE2b-64: its top 6 bits pick one of 64
   bins and each bin keeps its smallest hash (one permutation hashing, Li, Owen and
   Zhang 2012); an empty bin (messages of fewer than about 200 distinct shingles have a
   few) takes the minimum of the next filled bin to its right, offset by the distance,
   so two messages agree on it exactly when they agree on that bin (rotation
   densification, Shrivastava and Li 2014). The estimate is the k-hash MinHash's, at one
   hash per shingle instead of 64: an earlier version drew 64 values per shingle from
   SHAKE-128 and spent about four times the CPU on a 10 KB message (a linear a*x+b mod p
   family, only pairwise independent, had underestimated these e-mails). On the shipped
   samples exact Jaccard, 64-hash MinHash and this estimator agree within 0.05.
   Truncating each minimum to 16 bits adds a 1/65536 chance of a false match per
   position, corrected for in ``similarity`` (b-bit MinHash, Li and König 2010).
   Signatures recorded by the earlier version do not match these (a near duplicate of a
   message sent before the upgrade goes unnoticed within that message's window); they
   never make a false match either.

SimHash (Charikar 2002) would store 8 bytes instead of 128, but its Hamming distance
approximates a *cosine* over weighted features, varies a lot on texts of a few hundred
words (a handful of changed shingles can flip many bits or none), and has no threshold an
operator can read as a share of text. Its strength, finding near neighbours among
billions with permuted tables, is not needed here: a message is compared only with the
same recipient's few sends in the window, fetched by recipient key, so there is no
index over signatures at all and MinHash's size is the only price.

Recipient identity
------------------
``normalise_recipient`` is the shared normal form (``mail.addresses.normalise``: the
domain's case always, the local part's by policy; RFC 5321 says it is case-sensitive,
every large mailbox provider treats it as not) minus, by policy, a ``+tag`` sub-address
(RFC 5233).
The store never sees an address: ``recipient_key`` is a BLAKE2b-128 of dealer and
normalised address.
"""

from __future__ import annotations

import enum
import hashlib
import html.parser
import re
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache, partial
from operator import methodcaller
from types import MappingProxyType
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gateway.mail import addresses
from gateway.mail.message import ParsedMessage
from gateway.mail.words import words_of
from gateway.policy.model import CheckRule, options_of
from gateway.policy.options import (
    DuplicateMessageOptions,
    FrequencyCapOptions,
    NearDuplicateOptions,
)
from gateway.types import DealerId, MessageId

__all__ = [
    "CATEGORY_HEADER",
    "SIGNATURE_BYTES",
    "Category",
    "DuplicateDrop",
    "DuplicateOptions",
    "DuplicateState",
    "MessagePrint",
    "PriorSend",
    "RecipientHistory",
    "Recipients",
    "SendClaim",
    "canonical_text",
    "category_of",
    "exact_fingerprint",
    "normalise_recipient",
    "options_for",
    "print_message",
    "recipient_key",
    "signature",
    "similarity",
]

CATEGORY_HEADER = "X-Mailgate-Category"
PERMUTATIONS = 64
SIGNATURE_BYTES = PERMUTATIONS * 2
SHINGLE_WORDS = 3
# Near-duplicate similarity looks at this much of the text. A dealer's e-mail says what it
# is about in its first few thousand words; past that, shingling an 8 MB body cost 2 s of
# CPU per message and pushed large submissions over the check time budget.
SKELETON_CHARS = 200_000

# Query parameters that only say who clicked or which campaign it was. Prefixes cover
# whole families (Google Analytics utm_, Matomo mtm_/pk_, HubSpot __hs*/_hs*).
_TRACKING_PREFIXES = ("utm_", "mtm_", "pk_", "_hs", "__hs", "oly_", "vero_", "elq")
_TRACKING_NAMES = frozenset(
    {
        "fbclid", "gclid", "gclsrc", "dclid", "gbraid", "wbraid", "msclkid", "yclid",
        "igshid", "mc_cid", "mc_eid", "mkt_tok", "hsctatracking", "trk", "trkid",
        "trackingid", "tracking_id", "s_cid", "sc_cid", "cmpid", "_ke", "ref_id", "rid",
        "lid", "eid", "cid", "uid", "sid", "token", "t", "tok", "sig", "signature",
    }
)  # fmt: skip
_UNSUBSCRIBE = re.compile(
    r"unsub|opt-?out|optout|list-manage|manage[-_]?(?:subscription|preferences)"
    r"|email[-_]?preferences|/preferences",
    re.IGNORECASE,
)
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'()\[\]]+", re.IGNORECASE)
# A word of 16+ characters mixing letters and digits (hex ids, base64url tokens, UUIDs
# with their hyphens): nobody writes such a word, a program generates one per message.
_TOKEN = re.compile(r"(?<![\w-])(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]{16,}(?![\w-])")
# Long words are rare, so matching them all and testing each in Python beats two
# look-aheads tried at every position of the text.
_LONG = 16
_LONG_WORD = re.compile(r"(?<![\w-])[\w-]{16,}(?![\w-])")
_LETTER = re.compile(r"[A-Za-z]")


def _token_or_word(match: re.Match[str]) -> str:
    """A per-send token (16+ characters mixing digits and letters) becomes ``~``."""
    word = match.group(0)
    return "~" if _DIGIT.search(word) and _LETTER.search(word) else word


_DIGIT = re.compile(r"\d")

# One-permutation MinHash (see the module docstring): 64-bit hashes, 64 bins by the top bits.
_HASH = partial(hashlib.blake2b, digest_size=8, person=b"mailgate-oph")
_DIGEST = methodcaller("digest")
_BIN_BITS = 6
_BIN_SHIFT = 64 - _BIN_BITS
_ROTATION = 0x9E3779B97F4A7C15  # odd, so each distance shifts a borrowed value differently
assert 1 << _BIN_BITS == PERMUTATIONS and array("H").itemsize == 2


class Category(enum.StrEnum):
    """How the CRM classified a message (``X-Mailgate-Category``)."""

    COMMERCIAL = "commercial"  # follow-ups, offers: frequency caps and near-duplicates apply
    TRANSACTIONAL = "transactional"  # confirmations, receipts: only exact duplicates apply


_EXACT, _NEAR, _CAP = DuplicateMessageOptions(), NearDuplicateOptions(), FrequencyCapOptions()
_CATEGORY = Category(_CAP.default_category)


@dataclass(frozen=True, slots=True)
class DuplicateOptions:
    """The duplicate-related policy of one dealer: the options of its three checks.

    The defaults are those of the option records (``gateway/policy/options.py``).
    """

    window: timedelta = _EXACT.window
    ignore_pattern: str = _EXACT.ignore_pattern
    fold_local_part: bool = _EXACT.fold_local_part
    strip_plus_tag: bool = _EXACT.strip_plus_tag
    threshold: float = _NEAR.threshold
    per_day: int = _CAP.per_day  # 0: no daily cap
    per_week: int = _CAP.per_week  # 0: no weekly cap
    default_category: Category = _CATEGORY

    @property
    def history(self) -> timedelta:
        """How far back a recipient's sends matter for any of the three checks."""
        longest = self.window
        if self.per_day:
            longest = max(longest, timedelta(days=1))
        if self.per_week:
            longest = max(longest, timedelta(days=7))
        return longest


@dataclass(frozen=True, slots=True)
class MessagePrint:
    """What the store keeps about one message for one recipient."""

    fingerprint: bytes  # 16 bytes, exact
    signature: bytes  # SIGNATURE_BYTES, near-duplicate
    category: Category


@dataclass(frozen=True, slots=True)
class PriorSend:
    """One earlier message to a recipient, as the store remembers it."""

    message_id: MessageId
    sent_at: datetime
    fingerprint: bytes
    signature: bytes
    category: Category


@dataclass(frozen=True, slots=True)
class RecipientHistory:
    """A recipient's recent sends (newest first) and the version that guards them.

    ``version`` changes whenever a commercial send to the recipient is recorded; intake
    hands it back with its claim, and the store refuses the claim if it moved (another
    connection or node decided about this recipient meanwhile).
    """

    key: bytes
    version: int = 0
    sends: tuple[PriorSend, ...] = ()


@dataclass(frozen=True, slots=True)
class DuplicateState:
    """What the duplicate checks read from ``CheckContext``.

    ``recipients`` maps each envelope recipient, exactly as submitted, to its history;
    ``keys`` maps it to its normalised address (two recipients of one message with one
    key are the same person).
    """

    print: MessagePrint
    options: DuplicateOptions
    recipients: Mapping[str, RecipientHistory] = field(default_factory=lambda: MappingProxyType({}))
    keys: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Recipients:
    """The envelope recipients' identities and histories, read from the store before the checks.

    Intake reads them (``duplicates.sendlog.SendLog.fetch``) and hands them to the pure
    core as data, which combines them with the message's print (``state``).
    """

    options: DuplicateOptions
    keys: Mapping[str, str]  # recipient as submitted -> normalised address
    histories: Mapping[str, RecipientHistory]  # recipient as submitted -> history

    def state(self, msg: ParsedMessage) -> DuplicateState:
        """The context the duplicate checks read for ``msg`` (pure, CPU-bound)."""
        return DuplicateState(print_message(msg, self.options), self.options,
                              self.histories, self.keys)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SendClaim:
    """One recipient's send, to record atomically with the enqueue of its message.

    ``expected_version`` is the ``RecipientHistory.version`` the checks saw; ``None``
    skips that guard (transactional mail, which neither reads nor changes the history the
    guard protects, and an exact duplicate that policy lets through, which records
    nothing). ``claim_exact`` is False only for such a duplicate, whose fingerprint the
    earlier message keeps.

    The guards exist for decisions that rest on the *absence* of sends (first copy, under
    the cap, nothing alike). A decision that rests only on sends already seen (a near
    duplicate or capped copy that policy delivers anyway) cannot be undone by sends
    committed since, so its claim sets ``compare_version=False``: the version is bumped
    without comparing, and the claim cannot be lost over it. ``exact_yields`` makes an
    exact fingerprint that another message holds that message's, instead of losing the
    claim: only for a policy that delivers every duplicate anyway, when contention has
    outlasted the retries (intake's last attempt).
    """

    recipient: bytes
    fingerprint: bytes
    message_id: MessageId
    sent_at: datetime
    signature: bytes
    category: Category
    exact_since: datetime  # an equal fingerprint older than this is expired: take it over
    expected_version: int | None
    claim_exact: bool = True
    compare_version: bool = True
    exact_yields: bool = False


@dataclass(frozen=True, slots=True)
class DuplicateDrop:
    """A recipient left out (or a message refused) as a duplicate, for the record."""

    dealer_id: DealerId
    recipient: str  # as submitted
    submission_id: str
    kind: str  # exact | near | cap
    code: str  # the finding code
    action: str  # the action policy chose: drop | reject | ...
    earlier: str  # the message it duplicates (or the last send counted by the cap)
    detail: str
    at: datetime
    subject: str = ""  # the message's subject (reports name the most repeated template)


# --- options -----------------------------------------------------------------------------


def options_for(checks: Mapping[str, CheckRule]) -> DuplicateOptions:
    """The duplicate options of a dealer's ``checks`` rules (a missing rule: its defaults).

    The loader has built each rule's typed options already (durations parsed, numbers
    checked), so this only gathers the three checks' records into one.
    """
    exact = options_of(checks, DuplicateMessageOptions)
    near = options_of(checks, NearDuplicateOptions)
    cap = options_of(checks, FrequencyCapOptions)
    return DuplicateOptions(
        window=exact.window,
        ignore_pattern=exact.ignore_pattern,
        fold_local_part=exact.fold_local_part,
        strip_plus_tag=exact.strip_plus_tag,
        threshold=near.threshold,
        per_day=cap.per_day,
        per_week=cap.per_week,
        default_category=Category(cap.default_category),
    )


# --- normalisation -----------------------------------------------------------------------


class _HtmlText(html.parser.HTMLParser):
    """The visible text of an HTML body (scripts and styles dropped)."""

    _SKIP = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_text(markup: str) -> str:
    """Return the visible text of ``markup`` (lenient: broken HTML gives what it can)."""
    parser = _HtmlText()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # html.parser raises on a few pathological inputs; keep what we have
        pass
    return "".join(parser.parts)


def _is_tracking(name: str) -> bool:
    lowered = name.lower()
    return lowered in _TRACKING_NAMES or lowered.startswith(_TRACKING_PREFIXES)


def _clean_url(match: re.Match[str]) -> str:
    url = match.group(0).rstrip(".,;:!?")
    tail = match.group(0)[len(url) :]
    if _UNSUBSCRIBE.search(url):
        return " <unsubscribe> " + tail
    try:
        parts = urlsplit(url if "://" in url else "http://" + url)
        query = [
            (k, "~" if _TOKEN.fullmatch(v) else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if not _is_tracking(k)
        ]
        cleaned = urlunsplit((parts.scheme, parts.netloc.lower(), parts.path, urlencode(query), ""))
    except ValueError:  # a malformed URL (bad port, brackets): keep it, tokens masked
        cleaned = url
    return _TOKEN.sub("~", cleaned) + tail


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    # The loader checks the pattern compiles; an empty pattern means none.
    return re.compile(pattern, re.IGNORECASE | re.MULTILINE) if pattern else None


def _body(msg: ParsedMessage) -> str:
    if msg.text_parts:
        return "\n".join(msg.text_parts)
    return "\n".join(html_text(part) for part in msg.html_parts)


def _scrub(text: str, ignore_pattern: str) -> str:
    """Per-send noise out, case and spacing kept (the skeleton needs the case)."""
    ignore = _compiled(ignore_pattern)
    if ignore is not None:
        text = ignore.sub(" ", text)
    # Both substitutions scan every character in Python's regex engine; most texts give
    # them nothing to do, which a scan in C shows first. A URL needs "http" or "www." (no
    # other character folds to h, t, p or w under IGNORECASE), and a run of 16 word
    # characters lies inside a whitespace-separated token at least as long.
    lowered = text.lower()
    if "http" in lowered or "www." in lowered:
        text = _URL.sub(_clean_url, text)
    # A run it would replace (16+ word characters with a digit and a letter) lies inside
    # a whitespace-separated token at least as long that has both: a separator line of
    # dashes or a long plain word gives it nothing to do.
    if any(
        _DIGIT.search(token) and _LETTER.search(token)
        for token in text.split()
        if len(token) >= _LONG
    ):
        text = _LONG_WORD.sub(_token_or_word, text)
    return text


def _scrubbed(msg: ParsedMessage, ignore_pattern: str) -> str:
    """Subject and body with per-send noise removed: the input of both prints."""
    return f"{_scrub(msg.subject or '', ignore_pattern)}\n{_scrub(_body(msg), ignore_pattern)}"


def canonical_text(msg: ParsedMessage, ignore_pattern: str = "") -> str:
    """Return the normalised subject and body of ``msg`` (what the fingerprint covers)."""
    return _canonical(_scrubbed(msg, ignore_pattern))


def _canonical(scrubbed: str) -> str:
    # split()/join() fold runs of white space like re.sub(r"\s+", " ") and strip(), in C.
    return " ".join(scrubbed.split()).casefold()


def exact_fingerprint(msg: ParsedMessage, ignore_pattern: str = "") -> bytes:
    """Return the 16-byte fingerprint of the normalised content of ``msg``."""
    return _fingerprint(msg, _scrubbed(msg, ignore_pattern))


def _fingerprint(msg: ParsedMessage, scrubbed: str) -> bytes:
    digest = hashlib.blake2b(digest_size=16, person=b"mailgate-exact")
    digest.update(_canonical(scrubbed).encode("utf-8", "surrogatepass"))
    for attachment in sorted(hashlib.sha256(a.content).digest() for a in msg.attachments):
        digest.update(attachment)
    return digest.digest()


def skeleton(text: str) -> list[str]:
    """Words of ``text`` with template fills masked: digits → ``#``, Capitalised → ``^``.

    Only the first ``SKELETON_CHARS`` characters count (a word cut there still counts).
    """
    has_digit = _DIGIT.search  # one C-level scan per word, not a Python loop per character
    # Most words are letters only (``isalpha``: no digit, no underscore), which settles
    # them without the digit scan.
    return [
        ("^" if word[0].isupper() else word.casefold())
        if word.isalpha()
        else "#"
        if has_digit(word)
        else "^"
        if word[0].isupper()
        else word.casefold()
        for word in words_of(text[:SKELETON_CHARS])
    ]


def _shingles(words: list[str]) -> set[bytes]:
    if len(words) < SHINGLE_WORDS:
        return {" ".join(words).encode()}
    # Skeleton words hold no space: encode the text once, split it back into words, and
    # join each window of three in C (map over zip) instead of slicing and encoding each.
    encoded = " ".join(words).encode().split(b" ")
    windows = zip(*(encoded[i:] for i in range(SHINGLE_WORDS)), strict=False)  # shorter tails
    return set(map(b" ".join, windows))


def minhash(items: Iterable[bytes]) -> bytes:
    """The b-bit (16) one-permutation MinHash signature of a set of byte strings.

    See the module docstring: one BLAKE2b-64 hash per item; its top ``_BIN_BITS`` bits
    name the bin, and sorting the hashes puts each bin's minimum first in its run, found
    by bisection; empty bins are filled by rotation. The hashing and the sort run in C.
    """
    return _densified(_bin_minima(items))


def _bin_minima(items: Iterable[bytes]) -> list[int | None]:
    """Each bin's smallest hash over ``items`` (``None`` for an empty bin)."""
    hashes = sorted(map(int.from_bytes, map(_DIGEST, map(_HASH, items))))
    count = len(hashes)
    mins: list[int | None] = []
    for j in range(PERMUTATIONS):
        i = bisect_left(hashes, j << _BIN_SHIFT)
        mins.append(hashes[i] if i < count and hashes[i] >> _BIN_SHIFT == j else None)
    return mins


def _densified(mins: Sequence[int | None]) -> bytes:
    """The signature of a set from its bin minima: empty bins filled by rotation."""
    if all(value is None for value in mins):
        return bytes(SIGNATURE_BYTES)
    lows = array("H")
    for j in range(PERMUTATIONS):
        value, distance = mins[j], 0
        while value is None:  # some bin is filled: there is at least one hash
            distance += 1
            value = mins[(j + distance) % PERMUTATIONS]
        lows.append((value + distance * _ROTATION) & 0xFFFF)
    if sys.byteorder == "little":
        lows.byteswap()  # big-endian 16-bit values, as similarity() compares them
    return lows.tobytes()


def signature(msg: ParsedMessage, ignore_pattern: str = "") -> bytes:
    """Return the near-duplicate signature of ``msg`` (``SIGNATURE_BYTES`` long)."""
    return minhash(_shingles(skeleton(_scrubbed(msg, ignore_pattern))))


def similarity(a: bytes, b: bytes) -> float:
    """Estimated Jaccard similarity (0..1) of the messages behind two signatures.

    Signatures of different lengths (another version's) compare as 0.0: never a
    false duplicate.
    """
    if len(a) != SIGNATURE_BYTES or len(b) != SIGNATURE_BYTES:
        return 0.0
    equal = sum(1 for i in range(0, SIGNATURE_BYTES, 2) if a[i : i + 2] == b[i : i + 2])
    raw = equal / PERMUTATIONS
    chance = 1 / 65536  # two different 16-bit minima agree by accident
    return max(0.0, (raw - chance) / (1 - chance))


def category_of(msg: ParsedMessage, default: Category) -> Category:
    """The category the CRM declared in ``X-Mailgate-Category``, else ``default``."""
    value = (msg.header(CATEGORY_HEADER) or "").strip().lower()
    return Category(value) if value in {c.value for c in Category} else default


def print_message(msg: ParsedMessage, options: DuplicateOptions) -> MessagePrint:
    """Fingerprint, signature and category of ``msg`` under ``options``."""
    category = category_of(msg, options.default_category)
    subject = _scrub(msg.subject or "", options.ignore_pattern)
    body = _body(msg)
    if len(body) <= _BODY_CACHE_CHARS:
        part = _body_print(body, options.ignore_pattern)
        if part.words >= SHINGLE_WORDS and len(subject) + 1 + part.length <= SKELETON_CHARS:
            fingerprint = _fingerprint_parts(msg, subject, part)
            return MessagePrint(fingerprint, _signature_parts(subject, part), category)
    scrubbed = f"{subject}\n{_scrub(body, options.ignore_pattern)}"
    signature = minhash(_shingles(skeleton(scrubbed)))
    return MessagePrint(_fingerprint(msg, scrubbed), signature, category)


# A campaign sends one body to many recipients, so the body's part of the print is kept
# for the last few bodies seen, keyed by their text, and the costliest step of it (the
# shingles' hashes) by the body's skeleton, which merge fields do not change. The print
# of subject + body is assembled from the parts exactly as it is computed from their
# concatenation (tests/unit/test_fingerprints.py holds the two equal for any subject
# and body).
_BODY_CACHE_CHARS = 64 * 1024


@dataclass(frozen=True, slots=True)
class _BodyPrint:
    """What the print of a message takes from its body alone."""

    length: int  # characters of the scrubbed body
    canonical: bytes  # its canonical text, UTF-8 (b"" when it has no words)
    head: tuple[str, ...]  # its first SHINGLE_WORDS - 1 skeleton words
    words: int  # how many skeleton words it has
    minima: tuple[int | None, ...]  # the bin minima of its own shingles


@lru_cache(maxsize=32)
def _body_print(body: str, ignore_pattern: str) -> _BodyPrint:
    scrubbed = _scrub(body, ignore_pattern)
    words = skeleton(scrubbed)
    return _BodyPrint(
        length=len(scrubbed),
        canonical=_canonical(scrubbed).encode("utf-8", "surrogatepass"),
        head=tuple(words[: SHINGLE_WORDS - 1]),
        words=len(words),
        minima=_skeleton_minima(" ".join(words)) if len(words) >= SHINGLE_WORDS else (),
    )


@lru_cache(maxsize=32)
def _skeleton_minima(skeleton_text: str) -> tuple[int | None, ...]:
    # Keyed by the skeleton, not the text: a campaign that fills a name, a model and a
    # stock number into each body gives every copy another text but the same skeleton.
    return tuple(_bin_minima(_shingles(skeleton_text.split(" "))))


def _fingerprint_parts(msg: ParsedMessage, subject: str, body: _BodyPrint) -> bytes:
    # The canonical text of "subject\nbody" is the two canonical texts joined by a space:
    # white space folds, and case-folding maps each character on its own.
    digest = hashlib.blake2b(digest_size=16, person=b"mailgate-exact")
    heading = _canonical(subject).encode("utf-8", "surrogatepass")
    digest.update(heading)
    if heading and body.canonical:
        digest.update(b" ")
    digest.update(body.canonical)
    for attachment in sorted(hashlib.sha256(a.content).digest() for a in msg.attachments):
        digest.update(attachment)
    return digest.digest()


def _signature_parts(subject: str, body: _BodyPrint) -> bytes:
    # The shingles of the subject's and the body's words together are the body's own and
    # those that start in the subject, which reach at most SHINGLE_WORDS - 1 words into
    # the body; a bin's minimum over both sets is the smaller of the two.
    words = skeleton(subject)
    if not words:
        return _densified(body.minima)
    heading = _bin_minima(_shingles(words + list(body.head)))
    return _densified([
        b if a is None else a if b is None else min(a, b)
        for a, b in zip(heading, body.minima, strict=True)
    ])  # fmt: skip


# --- recipients --------------------------------------------------------------------------


def normalise_recipient(address: str, *, fold_local_part: bool, strip_plus_tag: bool) -> str:
    """The identity of ``address`` for duplicate purposes (see the module docstring)."""
    normal = addresses.normalise(address, fold_local_part=fold_local_part)
    local, at, domain = normal.rpartition("@")
    if at and strip_plus_tag and "+" in local[1:]:
        return f"{local[: local.index('+', 1)]}@{domain}"
    return normal


def recipient_key(dealer_id: str, normalised: str) -> bytes:
    """The store's 16-byte key for one dealer's recipient (no address is stored)."""
    return hashlib.blake2b(
        f"{dealer_id}\x00{normalised}".encode(), digest_size=16, person=b"mailgate-rcpt"
    ).digest()
