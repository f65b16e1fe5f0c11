"""DNS self-checks: whether the receivers' SPF, DKIM and DMARC checks will pass for our mail.

``run_checks(lookup, policies, config)`` looks at what each dealer and the gateway itself
publish and returns one ``CheckOutcome`` per thing looked at; ``render()`` turns them into
the report ``mailgate dns check`` prints, with the record to publish for every problem.

Per dealer (each From: domain and each DKIM identity):

- ``spf``: the domain's SPF record authorises every egress IP (RFC 7208 ``check_host``,
  evaluated here: include, redirect, a, mx, ptr, exists, ip4, ip6, all, macros, the
  10-lookup and 2-void-lookup limits);
- ``dkim``: the key published at ``<selector>._domainkey.<domain>`` is the configured one
  (its ``p=`` equals the public half of the key file);
- ``dmarc``: ``_dmarc.<domain>`` exists; its policy and alignment modes are reported, and
  the check fails when neither the DKIM ``d=`` nor the envelope sender's domain aligns.

For the gateway (dealer ``*``):

- ``bounce-mx`` and ``bounce-spf``: the VERP bounce domain has an MX (bounces must reach
  us) and its SPF authorises the egress IPs (it is the MAIL FROM domain receivers check);
- ``ptr-helo``: each egress IP's PTR names the HELO name, which resolves back to the IP
  (forward-confirmed reverse DNS; many receivers refuse mail without it);
- ``dnsbl``: no egress IP is listed on a configured blocklist.

The record parsing and interpretation are pure functions; only the orchestration asks
the DNS, through the ``Lookup`` protocol, so tests can use a loopback server.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import ipaddress
import logging
import re
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field

from publicsuffixlist import PublicSuffixList

from gateway.dkim.keys import dns_name, public_record, zone_line
from gateway.dkim.signing import load_signing_key
from gateway.dns.resolver import Answer, DnsError, Lookup
from gateway.errors import SigningError
from gateway.metrics import Metrics
from gateway.policy.model import DealerPolicy, DkimSettings, PolicySet
from gateway.policy.store import PolicyStore
from gateway.settings import Settings

__all__ = [
    "GATEWAY",
    "CheckConfig",
    "CheckOutcome",
    "Report",
    "SpfOutcome",
    "SpfResult",
    "check_host",
    "config_from",
    "dnsbl_listing",
    "export",
    "monitor",
    "parse_tags",
    "render",
    "reverse_name",
    "run_checks",
    "spf_record",
]

log = logging.getLogger("gateway.dns")

GATEWAY = "*"  # the dealer label of the gateway's own checks
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """What the checks compare the DNS with (from settings)."""

    egress_ips: tuple[str, ...] = ()
    helo_name: str = ""
    bounce_domain: str = ""
    dnsbl_zones: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """One check of one thing: ``ok``, or what is wrong and what to publish (``fix``).

    ``unknown`` is set when the DNS did not answer: the check failed to run, which is
    reported (and exported) as not ok, but is not a statement about the records.
    """

    dealer: str
    check: str
    subject: str
    ok: bool
    detail: str
    fix: str = ""
    unknown: bool = False


# -- SPF (RFC 7208) -----------------------------------------------------------------------


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


def _in_network(ip: IPAddress, address: str, v4: int, v6: int) -> bool:
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


def _address_type(ip: IPAddress) -> str:
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
        answer = await _query(lookup, target, _address_type(state.ip))
        state.void(answer)
        return any(_in_network(state.ip, a, v4, v6) for a in answer.values)
    if name == "mx":
        answer = await _query(lookup, target, "MX")
        state.void(answer)
        hosts = [v.split()[1] for v in answer.values if len(v.split()) == 2]
        if len(hosts) > MX_LIMIT:
            raise _PermError(f"mx:{target} has more than {MX_LIMIT} MX records")
        for host in hosts:
            if host == ".":
                continue
            addresses = await _query(lookup, host.rstrip("."), _address_type(state.ip))
            if any(_in_network(state.ip, a, v4, v6) for a in addresses.values):
                return True
        return False
    # ptr (RFC 7208 §5.5; "do not use", but still evaluated as specified)
    names = await _query(lookup, reverse_name(state.ip), "PTR")
    for host in names.values[:PTR_LIMIT]:
        host = host.rstrip(".").lower()
        forward = await _query(lookup, host, _address_type(state.ip))
        if any(_in_network(state.ip, a, 32, 128) for a in forward.values) and (
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


# -- tag lists: DKIM key records, DMARC records -------------------------------------------


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


# -- DNSBL ------------------------------------------------------------------------------


def dnsbl_listing(values: Sequence[str]) -> tuple[bool, str]:
    """Interpret a blocklist's A answer: ``(listed, note)``.

    Listings are 127.0.0.2-127.0.0.255 (RFC 5782 §2.1). Spamhaus answers 127.255.255.x
    to say the query itself was refused (public resolvers, over quota): not a listing,
    and not a clean bill either, so the note says so.
    """
    codes = [v for v in values if v.startswith("127.")]
    errors = [v for v in codes if v.startswith("127.255.255.")]
    listings = [v for v in codes if v not in errors]
    if listings:
        return True, "listed (" + ", ".join(sorted(listings)) + ")"
    if errors:
        return False, "the list refused the query (" + ", ".join(errors) + "); use own resolver"
    return False, "not listed"


# -- the checks -----------------------------------------------------------------------------


@dataclass
class _Run:
    lookup: Lookup
    config: CheckConfig
    outcomes: list[CheckOutcome] = field(default_factory=list)

    def add(
        self,
        dealer: str,
        check: str,
        subject: str,
        ok: bool,
        detail: str,
        fix: str = "",
        unknown: bool = False,
    ) -> None:
        self.outcomes.append(CheckOutcome(dealer, check, subject, ok, detail, fix, unknown))

    async def txt(self, name: str) -> Answer:
        return await self.lookup.query(name, "TXT")

    # SPF of one domain for every egress IP
    async def spf(self, dealer: str, check: str, domain: str) -> None:
        if not self.config.egress_ips:
            self.add(dealer, check, domain, False, "no dns.egress_ips configured: nothing to check",
                     unknown=True)  # fmt: skip
            return
        missing: list[str] = []
        notes: list[str] = []
        current: str | None = None
        unknown = False
        for ip in self.config.egress_ips:
            outcome = await check_host(self.lookup, ip, domain, helo=self.config.helo_name)
            if outcome.result is SpfResult.PASS:
                notes.append(
                    f"{ip} pass ({outcome.term}, {outcome.lookups} of {LOOKUP_LIMIT} lookups)"
                )
                continue
            unknown = unknown or outcome.result is SpfResult.TEMPERROR
            missing.append(ip)
            why = f"{outcome.term} " if outcome.term else ""
            notes.append(f"{ip} {outcome.result.value} {why}{outcome.detail}".strip())
        if not missing:
            self.add(dealer, check, domain, True, "; ".join(notes))
            return
        try:
            records = spf_record((await self.txt(domain)).values)
            current = records[0] if len(records) == 1 else None
        except DnsError:
            pass
        fix = spf_fix(domain, current, missing)
        self.add(dealer, check, domain, False, "; ".join(notes), fix, unknown)

    async def dkim(self, dealer: DealerPolicy, identity: DkimSettings) -> None:
        name = dns_name(identity.selector, identity.domain)
        try:
            expected = public_record(load_signing_key(identity).key)
        except SigningError as exc:
            self.add(dealer.dealer_id, "dkim", name, False, f"configured key unusable: {exc}")
            return
        fix = "publish " + zone_line(identity.selector, identity.domain, expected)
        want = parse_tags(expected)["p"]
        answer = await self.txt(name)
        records = [parse_tags(v) for v in answer.values]
        keys = [r for r in records if "p" in r and r.get("v", "DKIM1") == "DKIM1"]
        if not keys:
            self.add(dealer.dealer_id, "dkim", name, False, "no DKIM key record published", fix)
        elif len(keys) > 1:
            self.add(dealer.dealer_id, "dkim", name, False,
                     f"{len(keys)} key records published; verifiers may pick any",
                     "publish only: " + fix.removeprefix("publish "))  # fmt: skip
        elif not keys[0]["p"]:
            self.add(dealer.dealer_id, "dkim", name, False, "the key is revoked (empty p=)", fix)
        elif keys[0]["p"] != want:
            self.add(dealer.dealer_id, "dkim", name, False,
                     f"the published key is not the one in {identity.key_file}",
                     "replace it: " + fix.removeprefix("publish "))  # fmt: skip
        else:
            kind = keys[0].get("k", "rsa")
            self.add(dealer.dealer_id, "dkim", name, True, f"published key matches ({kind})")

    async def dmarc(self, dealer: DealerPolicy, domain: str) -> None:
        name = f"_dmarc.{domain}"
        fix = f'publish {name}. TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}"'
        answer = await self.txt(name)
        records = [v for v in answer.values if v.replace(" ", "").upper().startswith("V=DMARC1")]
        found_at = name
        if not records and org_domain(domain) != domain:
            parent = f"_dmarc.{org_domain(domain)}"
            records = [
                v
                for v in (await self.txt(parent)).values
                if v.replace(" ", "").upper().startswith("V=DMARC1")
            ]
            found_at = parent
        if len(records) != 1:
            why = "no DMARC record" if not records else "several DMARC records (all ignored)"
            self.add(dealer.dealer_id, "dmarc", name, False, why, fix)
            return
        tags = parse_tags(records[0])
        policy = tags.get("p", "")
        adkim, aspf = tags.get("adkim", "r"), tags.get("aspf", "r")
        if policy not in ("none", "quarantine", "reject"):
            self.add(dealer.dealer_id, "dmarc", found_at, False,
                     f"invalid policy p={policy or '(missing)'}", fix)  # fmt: skip
            return
        dkim_ok = [i.domain for i in dealer.dkim if aligned(i.domain, domain, adkim)]
        mail_from = self.config.bounce_domain or domain
        spf_ok = aligned(mail_from, domain, aspf)
        detail = (
            f"p={policy} adkim={adkim} aspf={aspf}"
            f"{' (inherited from ' + found_at + ')' if found_at != name else ''}; "
            f"DKIM {'aligned (d=' + dkim_ok[0] + ')' if dkim_ok else 'not aligned'}, "
            f"SPF {'aligned' if spf_ok else 'not aligned'} (MAIL FROM @{mail_from})"
        )
        if not dkim_ok and not spf_ok:
            self.add(dealer.dealer_id, "dmarc", found_at, False, detail,
                     f"sign with d={domain} (mailgate dkim keygen --dealer {dealer.dealer_id})"
                     )  # fmt: skip
            return
        self.add(dealer.dealer_id, "dmarc", found_at, True, detail)

    async def bounce_mx(self, hostname: str) -> None:
        domain = self.config.bounce_domain
        answer = await self.lookup.query(domain, "MX")
        fix = f"publish {domain}. MX 10 {hostname}."
        if answer.values and answer.values[0].split()[-1] != ".":
            hosts = ", ".join(v.split()[-1] for v in answer.values)
            self.add(GATEWAY, "bounce-mx", domain, True, f"MX {hosts}")
        else:
            why = "does not exist" if answer.nxdomain else "no MX record (or a null MX)"
            self.add(GATEWAY, "bounce-mx", domain, False, why, fix)

    async def ptr_helo(self) -> None:
        helo = self.config.helo_name.lower().rstrip(".")
        for text in self.config.egress_ips:
            ip = ipaddress.ip_address(text)
            names = [n.lower().rstrip(".") for n in (await self.lookup.query(
                reverse_name(ip), "PTR")).values]  # fmt: skip
            forward = (await self.lookup.query(helo, _address_type(ip))).values if helo else ()
            helo_ok = any(_in_network(ip, a, 32, 128) for a in forward)
            fixes = []
            if helo not in names:
                fixes.append(f"ask the provider of {ip} to set its PTR to {helo}.")
            if not helo_ok:
                fixes.append(f"publish {helo}. {_address_type(ip)} {ip}")
            ptr_text = ", ".join(names) or "none"
            detail = f"PTR {ptr_text}; HELO {helo} -> {', '.join(forward) or 'nothing'}"
            self.add(GATEWAY, "ptr-helo", str(ip), not fixes, detail, "; ".join(fixes))

    async def dnsbl(self) -> dict[str, int]:
        listed: dict[str, int] = {}
        for zone in self.config.dnsbl_zones:
            listed[zone] = 0
            for text in self.config.egress_ips:
                ip = ipaddress.ip_address(text)
                answer = await self.lookup.query(reverse_name(ip, zone), "A")
                is_listed, note = dnsbl_listing(answer.values)
                fix = ""
                if is_listed:
                    listed[zone] += 1
                    try:
                        reason: tuple[str, ...] = (await self.txt(reverse_name(ip, zone))).values
                    except DnsError:
                        reason = ()
                    note += (": " + " ".join(reason)) if reason else ""
                    fix = f"request delisting of {ip} from {zone} once the cause is fixed"
                self.add(GATEWAY, "dnsbl", f"{ip} @ {zone}", not is_listed, note, fix)
        return listed


async def _guarded(run: _Run, dealer: str, check: str, subject: str, step: Awaitable[None]) -> None:
    """Run one check; DNS trouble becomes an ``unknown`` outcome instead of an exception."""
    try:
        await step
    except DnsError as exc:
        run.add(dealer, check, subject, False, f"DNS did not answer: {exc}", unknown=True)


@dataclass(frozen=True, slots=True)
class Report:
    """Every outcome of one run, and the count of listed egress IPs per blocklist."""

    outcomes: tuple[CheckOutcome, ...]
    dnsbl_listed: dict[str, int]

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(o.ok for o in self.outcomes)

    def by_check(self) -> dict[tuple[str, str], bool]:
        """``(dealer, check) -> ok`` (all of that check's outcomes passed)."""
        out: dict[tuple[str, str], bool] = {}
        for o in self.outcomes:
            out[(o.dealer, o.check)] = out.get((o.dealer, o.check), True) and o.ok
        return out


async def run_checks(
    lookup: Lookup,
    policies: PolicySet,
    config: CheckConfig,
    *,
    dealer: str | None = None,
    hostname: str = "",
) -> Report:
    """Check every dealer (or only ``dealer``) and, without ``dealer``, the gateway too."""
    run = _Run(lookup, config)
    dealers = [d for d in policies.dealers.values() if dealer is None or d.dealer_id == dealer]
    for d in sorted(dealers, key=lambda x: x.dealer_id):
        for domain in sorted(d.from_domains):
            await _guarded(run, d.dealer_id, "spf", domain, run.spf(d.dealer_id, "spf", domain))
            await _guarded(run, d.dealer_id, "dmarc", domain, run.dmarc(d, domain))
        for identity in d.dkim:
            subject = dns_name(identity.selector, identity.domain)
            await _guarded(run, d.dealer_id, "dkim", subject, run.dkim(d, identity))
    listed: dict[str, int] = {}
    if dealer is None:
        if config.bounce_domain:
            bounce = config.bounce_domain
            await _guarded(run, GATEWAY, "bounce-mx", bounce,
                           run.bounce_mx(hostname or config.helo_name))  # fmt: skip
            await _guarded(run, GATEWAY, "bounce-spf", bounce,
                           run.spf(GATEWAY, "bounce-spf", bounce))  # fmt: skip
        if config.egress_ips and config.helo_name:
            await _guarded(run, GATEWAY, "ptr-helo", config.helo_name, run.ptr_helo())
        try:
            listed = await run.dnsbl()
        except DnsError as exc:
            run.add(GATEWAY, "dnsbl", ",".join(config.dnsbl_zones), False,
                    f"DNS did not answer: {exc}", unknown=True)  # fmt: skip
    return Report(tuple(run.outcomes), listed)


def render(report: Report) -> str:
    """The readable report: one block per dealer, one line per check, fixes indented."""
    lines: list[str] = []
    current = None
    for o in report.outcomes:
        if o.dealer != current:
            current = o.dealer
            if lines:
                lines.append("")
            lines.append("gateway" if o.dealer == GATEWAY else f"dealer {o.dealer}")
        mark = "ok  " if o.ok else ("??  " if o.unknown else "FAIL")
        lines.append(f"  {mark} {o.check:<10} {o.subject}: {o.detail}")
        if o.fix:
            lines.append(f"       fix: {o.fix}")
    failed = sum(not o.ok for o in report.outcomes)
    lines.append("")
    if not report.outcomes:
        lines.append("nothing to check")
    elif failed:
        lines.append(f"{failed} of {len(report.outcomes)} checks need attention")
    else:
        lines.append(f"all {len(report.outcomes)} checks passed")
    return "\n".join(lines).lstrip("\n")


def config_from(settings: Settings) -> CheckConfig:
    """The check configuration ``mailgate.toml`` describes."""
    return CheckConfig(
        egress_ips=tuple(settings.dns.egress_ips),
        helo_name=settings.dns.helo_name or settings.upstream.helo_name or settings.server.hostname,
        bounce_domain=settings.inbound.bounce_domain,
        dnsbl_zones=tuple(settings.dns.dnsbl_zones),
    )


def export(report: Report, metrics: Metrics) -> None:
    """Set ``mailgate_dns_check_ok`` and ``mailgate_dnsbl_listed`` from ``report``."""
    for (dealer, check), ok in report.by_check().items():
        metrics.dns_check_ok.labels(dealer, check).set(1 if ok else 0)
    for zone, count in report.dnsbl_listed.items():
        metrics.dnsbl_listed.labels(zone).set(count)


async def monitor(
    lookup: Lookup,
    policies: PolicyStore,
    config: CheckConfig,
    metrics: Metrics,
    interval: float,
    hostname: str = "",
) -> None:
    """Repeat the checks every ``interval`` seconds and export them (runs until cancelled).

    Problems are logged at WARNING when a check starts failing and at INFO when it
    passes again, not at every run.
    """
    previous: dict[tuple[str, str, str], bool] = {}
    while True:
        try:
            report = await run_checks(lookup, policies.current, config, hostname=hostname)
        except Exception:  # the monitor must outlive a bug in one check
            log.exception("DNS self-check failed")
        else:
            export(report, metrics)
            for o in report.outcomes:
                key = (o.dealer, o.check, o.subject)
                if previous.get(key, True) and not o.ok:
                    fix = f" (fix: {o.fix})" if o.fix else ""
                    log.warning("DNS check %s failed dealer=%s %s: %s%s", o.check, o.dealer,
                                o.subject, o.detail, fix)  # fmt: skip
                elif previous.get(key) is False and o.ok:
                    log.info("DNS check %s passes again dealer=%s %s", o.check, o.dealer,
                             o.subject)  # fmt: skip
                previous[key] = o.ok
        await asyncio.sleep(interval)
