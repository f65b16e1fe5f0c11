"""The SPF evaluator (RFC 7208): ``check_host`` and the records it reads (DNS through ``Lookup``).

``check_host(lookup, ip, domain, sender, helo)`` is RFC 7208 §4 evaluated here, in full:
the include, redirect, a, mx, ptr, exists, ip4, ip6 and all mechanisms, macros (§7), the
10-lookup and 2-void-lookup limits (§4.6.4) and the per-mechanism limits on MX and PTR
names. It never raises for DNS trouble: a resolver error is ``temperror``, a broken
record ``permerror``, as the RFC says a receiver would see them. ``spf_record`` picks the
SPF records out of a TXT answer and ``spf_fix`` writes the record that would let the
missing egress IPs pass. ``dns/selfcheck.py`` runs it for every sending domain.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.dns.resolver import Answer, DnsError, Lookup

__all__ = [
    "LOOKUP_LIMIT",
    "IPAddress",
    "SpfOutcome",
    "SpfResult",
    "address_rdtype",
    "check_host",
    "in_network",
    "reverse_name",
    "spf_fix",
    "spf_record",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class SpfResult(enum.StrEnum):
    """RFC 7208 §2.6 results."""

    NONE = "none"
    NEUTRAL = "neutral"
    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True, slots=True)
class SpfOutcome:
    """The result of ``check_host``, the term that decided it and the lookups it took."""

    result: SpfResult
    term: str = ""
    lookups: int = 0
    detail: str = ""


_QUALIFIERS = {
    "+": SpfResult.PASS,
    "-": SpfResult.FAIL,
    "~": SpfResult.SOFTFAIL,
    "?": SpfResult.NEUTRAL,
}
_MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
_MODIFIER = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*)=(.*)$")
_MACRO = re.compile(r"%\{([slodiphcrtv])(\d*)(r?)([.\-+,/_=]*)\}", re.IGNORECASE)
_PERCENT = re.compile(r"%(?:\{[^}]*\}|.)?")
LOOKUP_LIMIT = 10  # RFC 7208 §4.6.4
VOID_LIMIT = 2  # RFC 7208 §4.6.4
MX_LIMIT = 10  # RFC 7208 §4.6.4: names looked up per mx mechanism
PTR_LIMIT = 10  # RFC 7208 §5.5


class _PermError(Exception):
    pass


class _TempError(Exception):
    pass


def spf_record(txts: Iterable[str]) -> list[str]:
    """The TXT strings that are SPF records (RFC 7208 §4.5: ``v=spf1`` then space or end)."""
    return [t for t in txts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]


def reverse_name(ip: IPAddress, zone: str = "") -> str:
    """``ip`` as a reverse-lookup name: under ``in-addr.arpa``/``ip6.arpa``, or ``zone``."""
    if isinstance(ip, ipaddress.IPv4Address):
        labels = list(reversed(str(ip).split(".")))
        suffix = zone or "in-addr.arpa"
    else:
        labels = list(reversed(ip.exploded.replace(":", "")))
        suffix = zone or "ip6.arpa"
    return ".".join([*labels, suffix.rstrip(".")])


@dataclass
class _SpfState:
    ip: IPAddress
    sender: str
    helo: str
    lookups: int = 0
    voids: int = 0

    def count(self) -> None:
        self.lookups += 1
        if self.lookups > LOOKUP_LIMIT:
            raise _PermError(f"more than {LOOKUP_LIMIT} DNS lookups")

    def void(self, answer: Answer) -> None:
        if not answer.values:
            self.voids += 1
            if self.voids > VOID_LIMIT:
                raise _PermError(f"more than {VOID_LIMIT} lookups found nothing")


def _expand(spec: str, state: _SpfState, domain: str) -> str:
    """RFC 7208 §7 macro expansion (``exp=`` texts are not evaluated, so no c/r/t)."""
    local, _, sender_domain = state.sender.rpartition("@")

    def letter_value(letter: str) -> str:
        letter = letter.lower()
        if letter == "s":
            return state.sender
        if letter == "l":
            return local or "postmaster"
        if letter == "o":
            return sender_domain
        if letter == "d":
            return domain
        if letter == "i":
            if isinstance(state.ip, ipaddress.IPv4Address):
                return str(state.ip)
            return ".".join(state.ip.exploded.replace(":", ""))
        if letter == "v":
            return "in-addr" if isinstance(state.ip, ipaddress.IPv4Address) else "ip6"
        if letter == "h":
            return state.helo
        if letter == "p":
            return "unknown"  # §7.3: validating the PTR here would cost lookups; allowed
        raise _PermError(f"macro %{{{letter}}} is not allowed here")

    def replace(percent: re.Match[str]) -> str:
        text = percent.group(0)
        if text == "%%":
            return "%"
        if text == "%_":
            return " "
        if text == "%-":
            return "%20"
        m = _MACRO.fullmatch(text)
        if m is None:
            raise _PermError(f"bad macro {text!r} in {spec!r}")
        value = letter_value(m.group(1))
        parts = re.split("[" + re.escape(m.group(4) or ".") + "]", value)
        if m.group(3):
            parts.reverse()
        if m.group(2):
            keep = int(m.group(2))
            if keep == 0:
                raise _PermError("macro keeps zero labels")
            parts = parts[-keep:]
        return ".".join(parts)

    return _PERCENT.sub(replace, spec)


def _split_cidr(arg: str) -> tuple[str, int, int]:
    """``domain/24//64`` → (domain, 24, 64); missing parts default to full length."""
    v4, v6 = 32, 128
    if "//" in arg:
        arg, _, six = arg.partition("//")
        v6 = int(six)
    if "/" in arg:
        arg, _, four = arg.partition("/")
        v4 = int(four)
    if not (0 <= v4 <= 32 and 0 <= v6 <= 128):
        raise _PermError("CIDR length out of range")
    return arg, v4, v6


def in_network(ip: IPAddress, address: str, v4: int, v6: int) -> bool:
    """True when ``address`` (text) is an IP of ``ip``'s family whose /v4 or /v6 holds ``ip``."""
    try:
        candidate = ipaddress.ip_address(address)
    except ValueError:
        return False
    if candidate.version != ip.version:
        return False
    prefix = v4 if ip.version == 4 else v6
    return ip in ipaddress.ip_network(f"{candidate}/{prefix}", strict=False)


async def _query(lookup: Lookup, name: str, rdtype: str) -> Answer:
    try:
        return await lookup.query(name, rdtype)
    except DnsError as exc:
        raise _TempError(str(exc)) from exc


def address_rdtype(ip: IPAddress) -> str:
    """The record type that holds addresses of ``ip``'s family: ``A`` or ``AAAA``."""
    return "A" if ip.version == 4 else "AAAA"


async def _mechanism(
    lookup: Lookup, state: _SpfState, domain: str, name: str, arg: str, depth: int
) -> bool:
    if name == "all":
        return True
    if name in ("ip4", "ip6"):
        try:
            network = ipaddress.ip_network(arg, strict=False)
        except ValueError as exc:
            raise _PermError(f"bad {name}:{arg}") from exc
        if (network.version == 4) != (name == "ip4"):
            raise _PermError(f"bad {name}:{arg}")
        return state.ip.version == network.version and state.ip in network
    if name == "include":
        if not arg:
            raise _PermError("include without a domain")
        state.count()
        inner = await _check(lookup, state, _expand(arg, state, domain), depth + 1)
        if inner.result is SpfResult.PASS:
            return True
        if inner.result is SpfResult.TEMPERROR:
            raise _TempError(inner.detail)
        if inner.result in (SpfResult.PERMERROR, SpfResult.NONE):
            raise _PermError(f"include:{arg}: {inner.result.value} {inner.detail}".strip())
        return False
    if name == "exists":
        if not arg:
            raise _PermError("exists without a domain")
        state.count()
        answer = await _query(lookup, _expand(arg, state, domain), "A")
        state.void(answer)
        return bool(answer.values)
    target, v4, v6 = _split_cidr(arg)
    target = _expand(target, state, domain) if target else domain
    state.count()
    if name == "a":
        answer = await _query(lookup, target, address_rdtype(state.ip))
        state.void(answer)
        return any(in_network(state.ip, a, v4, v6) for a in answer.values)
    if name == "mx":
        answer = await _query(lookup, target, "MX")
        state.void(answer)
        hosts = [v.split()[1] for v in answer.values if len(v.split()) == 2]
        if len(hosts) > MX_LIMIT:
            raise _PermError(f"mx:{target} has more than {MX_LIMIT} MX records")
        for host in hosts:
            if host == ".":
                continue
            addresses = await _query(lookup, host.rstrip("."), address_rdtype(state.ip))
            if any(in_network(state.ip, a, v4, v6) for a in addresses.values):
                return True
        return False
    # ptr (RFC 7208 §5.5; "do not use", but still evaluated as specified)
    names = await _query(lookup, reverse_name(state.ip), "PTR")
    for host in names.values[:PTR_LIMIT]:
        host = host.rstrip(".").lower()
        forward = await _query(lookup, host, address_rdtype(state.ip))
        if any(in_network(state.ip, a, 32, 128) for a in forward.values) and (
            host == target.lower() or host.endswith("." + target.lower())
        ):
            return True
    return False


async def _check(lookup: Lookup, state: _SpfState, domain: str, depth: int) -> SpfOutcome:
    if depth > LOOKUP_LIMIT:
        return SpfOutcome(SpfResult.PERMERROR, lookups=state.lookups, detail="include loop")
    try:
        answer = await _query(lookup, domain, "TXT")
    except _TempError as exc:
        return SpfOutcome(SpfResult.TEMPERROR, lookups=state.lookups, detail=str(exc))
    if answer.nxdomain:
        return SpfOutcome(SpfResult.NONE, lookups=state.lookups, detail=f"{domain} does not exist")
    records = spf_record(answer.values)
    if not records:
        return SpfOutcome(SpfResult.NONE, lookups=state.lookups, detail=f"{domain}: no SPF record")
    if len(records) > 1:
        return SpfOutcome(
            SpfResult.PERMERROR, lookups=state.lookups, detail=f"{domain}: several SPF records"
        )
    try:
        return await _evaluate(lookup, state, domain, records[0], depth)
    except _PermError as exc:
        return SpfOutcome(SpfResult.PERMERROR, lookups=state.lookups, detail=str(exc))
    except _TempError as exc:
        return SpfOutcome(SpfResult.TEMPERROR, lookups=state.lookups, detail=str(exc))


async def _evaluate(
    lookup: Lookup, state: _SpfState, domain: str, record: str, depth: int
) -> SpfOutcome:
    redirect: str | None = None
    seen_modifiers: set[str] = set()
    directives: list[tuple[SpfResult, str, str, str]] = []
    for term in record.split()[1:]:
        modifier = _MODIFIER.match(term)
        if modifier and ":" not in modifier.group(1):
            key = modifier.group(1).lower()
            if key in ("redirect", "exp"):
                if key in seen_modifiers:
                    raise _PermError(f"{key}= appears twice")
                seen_modifiers.add(key)
                if key == "redirect":
                    redirect = modifier.group(2)
            continue  # §6: unknown modifiers are ignored
        qualifier = SpfResult.PASS
        if term[0] in _QUALIFIERS:
            qualifier, term = _QUALIFIERS[term[0]], term[1:]
        name, sep, arg = term.partition(":")
        if not sep and "/" in name:
            name, _, cidr = name.partition("/")
            arg = "/" + cidr
        name = name.lower()
        if name not in _MECHANISMS:
            raise _PermError(f"unknown mechanism {name!r}")
        if name in ("ip4", "ip6", "include", "exists") and not arg:
            raise _PermError(f"{name} needs an argument")
        directives.append((qualifier, name, arg, term))
    for qualifier, name, arg, term in directives:
        if await _mechanism(lookup, state, domain, name, arg, depth):
            text = term if qualifier is SpfResult.PASS else f"{_prefix(qualifier)}{term}"
            return SpfOutcome(qualifier, term=text, lookups=state.lookups)
    if redirect is not None:
        state.count()
        target = _expand(redirect, state, domain)
        inner = await _check(lookup, state, target, depth + 1)
        if inner.result is SpfResult.NONE:
            raise _PermError(f"redirect={target}: no SPF record")
        return SpfOutcome(inner.result, f"redirect={target} {inner.term}".strip(),
                          state.lookups, inner.detail)  # fmt: skip
    return SpfOutcome(SpfResult.NEUTRAL, lookups=state.lookups, detail="no term matched")


def _prefix(result: SpfResult) -> str:
    return {v: k for k, v in _QUALIFIERS.items()}[result]


async def check_host(
    lookup: Lookup, ip: str, domain: str, sender: str = "", helo: str = ""
) -> SpfOutcome:
    """RFC 7208 §4 ``check_host(ip, domain, sender)``; never raises for DNS trouble."""
    state = _SpfState(ipaddress.ip_address(ip), sender or f"postmaster@{domain}", helo)
    return await _check(lookup, state, domain.rstrip(".").lower(), 0)


def spf_fix(domain: str, current: str | None, missing: Sequence[str]) -> str:
    """The SPF record to publish at ``domain`` so that ``missing`` IPs pass."""
    terms = [f"ip{ipaddress.ip_address(ip).version}:{ip}" for ip in missing]
    if current is None:
        return f'{domain}. TXT "v=spf1 {" ".join(terms)} -all"'
    parts = current.split()
    return f'{domain}. TXT "{" ".join([parts[0], *terms, *parts[1:]])}"'
