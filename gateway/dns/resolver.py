"""A caching DNS resolver on dnspython's asynchronous resolver.

``Resolver.query(name, type)`` answers with an ``Answer``: the record values as text,
whether the name exists, and how long the answer may be kept. Answers, including
negative ones (NXDOMAIN and "no records of this type"), are cached for their TTL (RFC 2308
§5: a negative answer for the SOA's minimum, capped by the SOA's own TTL), so a domain is
asked about once per TTL however many recipients it has. Concurrent questions for the
same name and type share one query. Every query has a bounded lifetime; a timeout raises
``DnsTimeout`` and a server failure ``DnsFailure``, and neither is cached, so the next
question asks again.

Nameservers are explicit (``host`` or ``host:port``, as tests use a server on loopback);
with none given, the system's resolver configuration (``/etc/resolv.conf``) is used.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.message
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.rrset

from gateway.errors import GatewayError
from gateway.settings import DnsSettings

__all__ = [
    "Answer",
    "DnsError",
    "DnsFailure",
    "DnsTimeout",
    "Lookup",
    "Resolver",
    "from_settings",
]

DEFAULT_NEGATIVE_TTL = 300  # seconds, when a negative answer carries no SOA
MAX_TTL = 86400  # never keep an answer longer than a day, whatever its TTL says


class DnsError(GatewayError):
    """No usable answer (the name's existence is unknown)."""


class DnsTimeout(DnsError):
    """No answer within the lifetime."""


class DnsFailure(DnsError):
    """SERVFAIL, REFUSED, no reachable nameserver, or a malformed answer."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer to one question.

    ``values`` are in presentation form, except that a TXT record's strings are joined
    without separators (RFC 7208 §3.3, RFC 6376 §3.6.2.2) and MX records read
    ``"<preference> <exchange>"``. ``exists`` is ``False`` for NXDOMAIN; an existing
    name without records of the type has ``exists`` and no ``values`` (NODATA).
    """

    name: str
    rdtype: str
    exists: bool
    values: tuple[str, ...]
    ttl: int

    @property
    def nxdomain(self) -> bool:
        """True when the name does not exist at all."""
        return not self.exists


class Lookup(Protocol):
    """What the checks need from a resolver (tests may pass a table instead)."""

    async def query(self, name: str, rdtype: str) -> Answer:
        """Answer one question; raise ``DnsTimeout`` or ``DnsFailure`` when there is none."""
        ...


def _nameserver(text: str) -> dns.nameserver.Nameserver:
    host, port = text, 53
    if text.startswith("["):  # [::1]:5353
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif text.count(":") == 1:  # 127.0.0.1:5353 (a bare IPv6 address has several colons)
        host, _, port_text = text.partition(":")
        port = int(port_text)
    return dns.nameserver.Do53Nameserver(host, port)


def _values(rrset: dns.rrset.RRset | None) -> tuple[str, ...]:
    if rrset is None:
        return ()
    out: list[str] = []
    for rdata in rrset:
        if rrset.rdtype == dns.rdatatype.TXT:
            out.append(b"".join(rdata.strings).decode("utf-8", "replace"))
        elif rrset.rdtype == dns.rdatatype.MX:
            out.append(f"{rdata.preference} {rdata.exchange.to_text()}")
        else:
            out.append(rdata.to_text())
    return tuple(out)


def _negative_ttl(response: dns.message.Message | None, default: int) -> int:
    if response is None:
        return default
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return min(rrset.ttl, rrset[0].minimum)  # type: ignore[no-any-return]
    return default


class Resolver:
    """Asynchronous, caching resolver; see the module docstring."""

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        *,
        timeout: float = 2.0,
        negative_ttl: int = DEFAULT_NEGATIVE_TTL,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if nameservers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [_nameserver(n) for n in nameservers]
        else:
            self._resolver = dns.asyncresolver.Resolver()
        self._resolver.timeout = timeout
        self._resolver.lifetime = timeout
        self._timeout = timeout
        self._negative_ttl = negative_ttl
        self._max_entries = max_entries
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, Answer]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[Answer]] = {}

    @property
    def timeout(self) -> float:
        """The lifetime of one question, in seconds."""
        return self._timeout

    def cached(self, name: str, rdtype: str) -> Answer | None:
        """The cached, unexpired answer, or ``None``."""
        key = (name.lower().rstrip("."), rdtype.upper())
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._cache[key]
            return None
        return entry[1]

    async def query(self, name: str, rdtype: str) -> Answer:
        """Answer ``rdtype`` for ``name`` from the cache or the nameservers."""
        key = (name.lower().rstrip("."), rdtype.upper())
        hit = self.cached(*key)
        if hit is not None:
            return hit
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(*key))
            self._inflight[key] = pending
            pending.add_done_callback(lambda _f: self._inflight.pop(key, None))
        # shield: a caller that gives up does not cancel the query the others wait for.
        return await asyncio.shield(pending)

    async def _fetch(self, name: str, rdtype: str) -> Answer:
        try:
            result = await self._resolver.resolve(
                name + ".", rdtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN as exc:
            responses = exc.responses()  # type: ignore[no-untyped-call]
            response = next(iter(responses.values()), None) if responses else None
            answer = Answer(name, rdtype, False, (), _negative_ttl(response, self._negative_ttl))
        except dns.exception.Timeout as exc:
            raise DnsTimeout(f"{name} {rdtype}: no answer within {self._timeout:g}s") from exc
        except (dns.resolver.NoNameservers, dns.resolver.YXDOMAIN) as exc:
            raise DnsFailure(f"{name} {rdtype}: {exc}") from exc
        except dns.exception.DNSException as exc:
            raise DnsFailure(f"{name} {rdtype}: {exc}") from exc
        else:
            if result.rrset is None:
                ttl = _negative_ttl(result.response, self._negative_ttl)
            else:
                ttl = int(max(0.0, result.expiration - time.time()))
            answer = Answer(name, rdtype, True, _values(result.rrset), ttl)
        self._store((name, rdtype), answer)
        return answer

    def _store(self, key: tuple[str, str], answer: Answer) -> None:
        ttl = min(answer.ttl, MAX_TTL)
        if ttl <= 0:
            return
        if len(self._cache) >= self._max_entries:
            now = self._clock()
            for old in [k for k, (until, _) in self._cache.items() if until <= now]:
                del self._cache[old]
            while len(self._cache) >= self._max_entries:
                del self._cache[next(iter(self._cache))]  # the oldest insertion
        self._cache[key] = (self._clock() + ttl, answer)


def from_settings(settings: DnsSettings) -> Resolver:
    """The resolver ``[dns]`` describes."""
    return Resolver(
        settings.nameservers,
        timeout=settings.timeout.total_seconds(),
        negative_ttl=int(settings.negative_ttl.total_seconds()),
    )
