"""Can a recipient domain receive mail at all? Decided at RCPT, from the domain's DNS.

RFC 5321 §5.1: mail goes to the domain's MX hosts, or, when it has no MX records, to the
domain's own address (the "implicit MX"). So a domain receives no mail when it does not
exist (NXDOMAIN), when it has neither MX nor A/AAAA records, or when it publishes a null MX
(``MX 0 .``, RFC 7505 §3: "this domain accepts no mail"). Relaying such mail only buys a
bounce a few seconds later and a worse bounce rate for the dealer, so the recipient is
refused with ``550 5.1.2`` while the CRM user is still looking at the address, with a
suggestion when the domain looks like a typo of a common provider.

Answers come from the caching resolver (one query per domain per TTL). A timeout or a
server failure lets the recipient through (fail open: a slow resolver must not stop
mail), and is logged and counted.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass

from gateway.dns.resolver import DnsError, DnsTimeout, Lookup
from gateway.dns.typos import suggest
from gateway.metrics import Metrics

__all__ = ["DomainStatus", "DomainVerdict", "RecipientDomains", "mail_route"]

log = logging.getLogger("gateway.dns")


class DomainStatus(enum.StrEnum):
    """What the DNS says about a domain as a mail destination (also the metric label)."""

    OK = "ok"
    NXDOMAIN = "nxdomain"
    NO_MAIL_HOST = "no-mail-host"  # neither MX nor A/AAAA
    NULL_MX = "null-mx"
    TIMEOUT = "timeout"  # unknown: let through
    ERROR = "error"  # unknown: let through

    @property
    def refused(self) -> bool:
        """True when mail to the domain cannot be delivered."""
        return self in (DomainStatus.NXDOMAIN, DomainStatus.NO_MAIL_HOST, DomainStatus.NULL_MX)


_WHY = {
    DomainStatus.NXDOMAIN: "does not exist",
    DomainStatus.NO_MAIL_HOST: "has no mail server (no MX and no address records)",
    DomainStatus.NULL_MX: "accepts no mail (null MX, RFC 7505)",
}


@dataclass(frozen=True, slots=True)
class DomainVerdict:
    """The outcome for one recipient domain; ``suggestion`` only when refused."""

    domain: str
    status: DomainStatus
    suggestion: str | None = None

    @property
    def refused(self) -> bool:
        """True when the recipient should be refused."""
        return self.status.refused

    @property
    def why(self) -> str:
        """Why the domain cannot receive mail, as a phrase ("does not exist"); "" if it can."""
        return _WHY.get(self.status, "")


def _is_null_mx(values: tuple[str, ...]) -> bool:
    # RFC 7505 §3: a null MX is the only MX record, preference 0, exchange ".". A domain
    # that lists it next to real MX hosts is misconfigured; the real hosts still work.
    return len(values) == 1 and values[0].split() == ["0", "."]


async def mail_route(lookup: Lookup, domain: str) -> DomainStatus:
    """Where mail to ``domain`` would go, as a status (raises ``DnsError`` when unknown)."""
    mx = await lookup.query(domain, "MX")
    if mx.nxdomain:
        return DomainStatus.NXDOMAIN
    if mx.values:
        return DomainStatus.NULL_MX if _is_null_mx(mx.values) else DomainStatus.OK
    a = await lookup.query(domain, "A")
    if a.values:
        return DomainStatus.OK
    aaaa = await lookup.query(domain, "AAAA")
    return DomainStatus.OK if aaaa.values else DomainStatus.NO_MAIL_HOST


class RecipientDomains:
    """The RCPT-time check; ``timeout`` bounds the whole decision for one domain."""

    def __init__(self, lookup: Lookup, metrics: Metrics, *, timeout: float = 2.0) -> None:
        self._lookup = lookup
        self._metrics = metrics
        self._timeout = timeout

    async def check(self, domain: str) -> DomainVerdict:
        """Decide on ``domain``; never raises for DNS trouble (that lets the mail through)."""
        domain = domain.lower().rstrip(".")
        try:
            async with asyncio.timeout(self._timeout):
                status = await mail_route(self._lookup, domain)
        except (TimeoutError, DnsTimeout):
            status = DomainStatus.TIMEOUT
            log.warning("recipient domain %s: no DNS answer in %.1fs; accepted", domain,
                        self._timeout)  # fmt: skip
        except DnsError as exc:
            status = DomainStatus.ERROR
            log.warning("recipient domain %s: DNS failed (%s); accepted", domain, exc)
        self._metrics.recipient_domains.labels(status.value).inc()
        if status.refused:
            log.info("recipient domain %s refused: %s", domain, _WHY[status])
            return DomainVerdict(domain, status, suggest(domain))
        return DomainVerdict(domain, status)
