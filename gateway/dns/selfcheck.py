"""DNS self-checks: whether the receivers' SPF, DKIM and DMARC checks will pass for our mail.

``run_checks(lookup, policies, config)`` looks at what each dealer and the gateway itself
publish and returns one ``CheckOutcome`` per thing looked at; ``render()`` turns them into
the report ``mailgate dns check`` prints, with the record to publish for every problem;
``monitor()`` repeats them in the server and exports them as metrics.

Per dealer (each From: domain and each DKIM identity):

- ``spf``: the domain's SPF record authorises every egress IP (``dns/spf.py``: RFC 7208
  ``check_host`` evaluated here);
- ``dkim``: the key published at ``<selector>._domainkey.<domain>`` is the configured one
  (its ``p=`` equals the public half of the key file);
- ``dmarc``: ``_dmarc.<domain>`` exists; its policy and alignment modes are reported, and
  the check fails when neither the DKIM ``d=`` nor the envelope sender's domain aligns
  (``dns/dmarc.py``: the record, organisational domains, alignment).

For the gateway (dealer ``*``):

- ``bounce-mx`` and ``bounce-spf``: the VERP bounce domain has an MX (bounces must reach
  us) and its SPF authorises the egress IPs (it is the MAIL FROM domain receivers check);
- ``ptr-helo``: each egress IP's PTR names the HELO name, which resolves back to the IP
  (forward-confirmed reverse DNS; many receivers refuse mail without it);
- ``dnsbl``: no egress IP is listed on a configured blocklist.

This module owns running the checks and rendering them; the record parsing and
interpretation are pure functions in ``spf.py`` and ``dmarc.py``, and only this
orchestration (and the SPF evaluator) asks the DNS, through the ``Lookup`` protocol, so
tests can use a loopback server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

from gateway.dkim.keys import dns_name, public_record, zone_line
from gateway.dkim.signing import load_signing_key
from gateway.dns.dmarc import aligned, dmarc_records, org_domain, parse_record, parse_tags
from gateway.dns.resolver import Answer, DnsError, Lookup
from gateway.dns.spf import (
    LOOKUP_LIMIT,
    SpfResult,
    address_rdtype,
    check_host,
    in_network,
    reverse_name,
    spf_fix,
    spf_record,
)
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
    "config_from",
    "dnsbl_listing",
    "export",
    "monitor",
    "render",
    "run_checks",
]

log = logging.getLogger("gateway.dns")

GATEWAY = "*"  # the dealer label of the gateway's own checks


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
        records = dmarc_records((await self.txt(name)).values)
        found_at = name
        if not records and org_domain(domain) != domain:
            # RFC 7489 §6.6.3: no record at the domain, look at its organisational domain.
            parent = f"_dmarc.{org_domain(domain)}"
            records = dmarc_records((await self.txt(parent)).values)
            found_at = parent
        if len(records) != 1:
            why = "no DMARC record" if not records else "several DMARC records (all ignored)"
            self.add(dealer.dealer_id, "dmarc", name, False, why, fix)
            return
        record = parse_record(records[0])
        policy, adkim, aspf = record.policy, record.adkim, record.aspf
        if not record.valid:
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
            forward = (await self.lookup.query(helo, address_rdtype(ip))).values if helo else ()
            helo_ok = any(in_network(ip, a, 32, 128) for a in forward)
            fixes = []
            if helo not in names:
                fixes.append(f"ask the provider of {ip} to set its PTR to {helo}.")
            if not helo_ok:
                fixes.append(f"publish {helo}. {address_rdtype(ip)} {ip}")
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
