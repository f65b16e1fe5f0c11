"""Which mailbox provider receives a recipient domain's mail: Google, Microsoft, Yahoo or other.

The big providers' own domains are known by name (``gmail.com``, ``outlook.com``,
``yahoo.co.uk``...). Any other domain is judged by where its mail goes: its MX hosts
(RFC 5321 §5.1), asked through the gateway's caching resolver, so a dealership's customer
at a company domain hosted by Google Workspace or Microsoft 365 counts for Google or
Microsoft, whose filters decide its fate. Without an answer (no resolver configured, a
timeout, no MX) the domain's name is all there is: a known one is classified, the rest
are "other". Answers are kept for ``CACHE_FOR`` (the resolver's cache keeps the DNS
answers for their TTL besides), failures for a short while only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from gateway.dns.resolver import DnsError, Lookup

log = logging.getLogger("gateway.dns")

GOOGLE, MICROSOFT, YAHOO, OTHER = "Google", "Microsoft", "Yahoo", "Other"
PROVIDERS = (GOOGLE, MICROSOFT, YAHOO, OTHER)  # the order reports list them in
CACHE_FOR = 24 * 3600.0  # seconds
RETRY_AFTER = 300.0  # seconds before a domain whose lookup failed is asked again
LOOKUP_TIMEOUT = 2.0

_BY_DOMAIN: dict[str, str] = {
    **dict.fromkeys(("gmail.com", "googlemail.com", "google.com"), GOOGLE),
    **dict.fromkeys(
        ("outlook.com", "hotmail.com", "live.com", "msn.com", "passport.com", "windowslive.com"),
        MICROSOFT,
    ),
    **dict.fromkeys(
        ("yahoo.com", "ymail.com", "rocketmail.com", "aol.com", "aim.com", "verizon.net"),
        YAHOO,
    ),
}
# Country variants: hotmail.co.uk, live.fr, outlook.de, yahoo.co.jp, aol.de ...
_BY_LABEL = {"hotmail": MICROSOFT, "outlook": MICROSOFT, "live": MICROSOFT, "yahoo": YAHOO,
             "aol": YAHOO, "googlemail": GOOGLE}  # fmt: skip
# MX host suffixes (the providers' documented inbound hosts).
_BY_MX: tuple[tuple[str, str], ...] = (
    ("google.com", GOOGLE),  # aspmx.l.google.com, gmail-smtp-in.l.google.com
    ("googlemail.com", GOOGLE),
    ("protection.outlook.com", MICROSOFT),  # <tenant>.mail.protection.outlook.com
    ("outlook.com", MICROSOFT),
    ("hotmail.com", MICROSOFT),
    ("yahoodns.net", YAHOO),  # mta5.am0.yahoodns.net
    ("yahoo.com", YAHOO),
    ("aol.com", YAHOO),
)
_SECOND_LEVEL = {"co", "com", "org", "net", "ne", "or"}  # yahoo.co.uk, yahoo.com.au


def by_domain(domain: str) -> str | None:
    """The provider a domain's name alone shows, or ``None`` (pure)."""
    name = domain.lower().rstrip(".")
    if name in _BY_DOMAIN:
        return _BY_DOMAIN[name]
    labels = name.split(".")
    # <provider>.<cc> or <provider>.<co|com>.<cc>
    if len(labels) == 2 or (len(labels) == 3 and labels[1] in _SECOND_LEVEL):
        return _BY_LABEL.get(labels[0])
    return None


def by_mx(hosts: Iterable[str]) -> str | None:
    """The provider whose inbound hosts these MX hosts are, or ``None`` (pure).

    The most preferred host decides (the caller gives them in preference order).
    """
    for host in hosts:
        name = host.lower().rstrip(".")
        for suffix, provider in _BY_MX:
            if name == suffix or name.endswith("." + suffix):
                return provider
        return None
    return None


def mx_hosts(values: Iterable[str]) -> list[str]:
    """The exchanges of MX answer values (``"<preference> <host>"``), most preferred first."""
    pairs: list[tuple[int, str]] = []
    for value in values:
        preference, _, host = value.partition(" ")
        try:
            pairs.append((int(preference), host))
        except ValueError:
            continue
    return [host for _, host in sorted(pairs)]


class ProviderLookup:
    """``provider(domain)``: from the name, else from the MX; cached per domain."""

    def __init__(
        self,
        resolver: Lookup | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = LOOKUP_TIMEOUT,
    ) -> None:
        self._resolver = resolver
        self._clock = clock
        self._timeout = timeout
        self._cache: dict[str, tuple[float, str]] = {}

    async def provider(self, domain: str) -> str:
        """The provider receiving ``domain``'s mail (``OTHER`` when it cannot be told)."""
        name = domain.lower().rstrip(".")
        known = by_domain(name)
        if known is not None:
            return known
        cached = self._cache.get(name)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        if self._resolver is None or not name:
            return OTHER
        try:
            async with asyncio.timeout(self._timeout):
                answer = await self._resolver.query(name, "MX")
        except (DnsError, TimeoutError) as exc:
            log.info("report: MX of %s not known (%s); counted as %s", name, exc, OTHER)
            self._cache[name] = (self._clock() + RETRY_AFTER, OTHER)
            return OTHER
        provider = by_mx(mx_hosts(answer.values)) or OTHER
        self._cache[name] = (self._clock() + CACHE_FOR, provider)
        return provider
