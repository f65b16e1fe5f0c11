"""DMARC (RFC 7489): the record, its policy and identifier alignment (pure).

``dmarc_records`` picks the DMARC records out of a TXT answer and ``parse_record`` reads
one into its policy and alignment modes; ``org_domain`` finds the organisational domain
(RFC 7489 §3.2, from the public suffix list shipped inside the package: no network) and
``aligned`` compares two identifiers in relaxed or strict mode (§3.1). ``parse_tags``
reads the tag=value lists of RFC 6376 §3.2, which DMARC records use (§6.4) and DKIM key
records too. ``dns/selfcheck.py`` asks the DNS and reports what these say.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

__all__ = [
    "POLICIES",
    "DmarcRecord",
    "aligned",
    "dmarc_records",
    "org_domain",
    "parse_record",
    "parse_tags",
]

POLICIES = ("none", "quarantine", "reject")  # RFC 7489 §6.3 p=


def parse_tags(text: str) -> dict[str, str]:
    """RFC 6376 §3.2 tag=value list (also DMARC's, RFC 7489 §6.4); names lower-cased."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags[name.strip().lower()] = "".join(value.split())
    return tags


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # the list ships inside the package: no network


def org_domain(domain: str) -> str:
    """The organisational domain (RFC 7489 §3.2): one label below the public suffix.

    ``mail.dealer.co.uk`` → ``dealer.co.uk``. A name that is itself a public suffix is
    its own organisational domain.
    """
    name = domain.lower().rstrip(".")
    return _public_suffixes().privatesuffix(name) or name


def aligned(a: str, b: str, mode: str) -> bool:
    """DMARC identifier alignment (RFC 7489 §3.1): ``s`` exact, ``r`` same org domain."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b if mode == "s" else org_domain(a) == org_domain(b)


def dmarc_records(txts: Iterable[str]) -> list[str]:
    """The TXT strings that are DMARC records (RFC 7489 §6.4: they start ``v=DMARC1``)."""
    return [t for t in txts if t.replace(" ", "").upper().startswith("V=DMARC1")]


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """One DMARC record: ``p=`` (empty when missing) and the alignment modes (``r``/``s``)."""

    policy: str
    adkim: str = "r"
    aspf: str = "r"

    @property
    def valid(self) -> bool:
        """True when ``p=`` is one of the policies RFC 7489 §6.3 defines."""
        return self.policy in POLICIES


def parse_record(text: str) -> DmarcRecord:
    """Read a DMARC record; alignment modes default to relaxed (RFC 7489 §6.3)."""
    tags = parse_tags(text)
    return DmarcRecord(tags.get("p", ""), tags.get("adkim", "r"), tags.get("aspf", "r"))
