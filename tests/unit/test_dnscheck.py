"""SPF evaluation, record parsing, typo suggestions and mail routes over a table of records."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.dns.dmarc import (
    DmarcRecord,
    aligned,
    dmarc_records,
    org_domain,
    parse_record,
    parse_tags,
)
from gateway.dns.domains import DomainStatus, mail_route
from gateway.dns.resolver import Answer, DnsTimeout
from gateway.dns.selfcheck import dnsbl_listing
from gateway.dns.spf import SpfResult, check_host, reverse_name, spf_fix, spf_record
from gateway.dns.typos import distance, suggest


class TableLookup:
    """Answers from ``{(name, type): [values]}``; a name absent from the table is NXDOMAIN."""

    def __init__(
        self, records: dict[tuple[str, str], list[str]], slow: frozenset[str] = frozenset()
    ):
        self.records = records
        self.slow = slow
        self.asked: list[tuple[str, str]] = []

    async def query(self, name: str, rdtype: str) -> Answer:
        name = name.lower().rstrip(".")
        self.asked.append((name, rdtype))
        if name in self.slow:
            raise DnsTimeout(name)
        exists = any(key[0] == name for key in self.records)
        values = tuple(self.records.get((name, rdtype), ()))
        return Answer(name, rdtype, exists, values, 300)


EGRESS = "192.0.2.10"

SPF_CASES = [
    ("ip4", {("d.test", "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"]}, SpfResult.PASS),
    ("ip4-miss", {("d.test", "TXT"): ["v=spf1 ip4:198.51.100.1 -all"]}, SpfResult.FAIL),
    ("softfail", {("d.test", "TXT"): ["v=spf1 ~all"]}, SpfResult.SOFTFAIL),
    ("neutral-default", {("d.test", "TXT"): ["v=spf1 ip4:198.51.100.1"]}, SpfResult.NEUTRAL),
    ("none", {("d.test", "TXT"): ["some other text"]}, SpfResult.NONE),
    ("nxdomain", {}, SpfResult.NONE),
    ("two-records", {("d.test", "TXT"): ["v=spf1 -all", "v=spf1 +all"]}, SpfResult.PERMERROR),
    (
        "include-pass",
        {
            ("d.test", "TXT"): ["v=spf1 include:_spf.esp.test -all"],
            ("_spf.esp.test", "TXT"): ["v=spf1 ip4:192.0.2.10 -all"],
        },
        SpfResult.PASS,
    ),
    (
        "include-fail-continues",
        {
            ("d.test", "TXT"): ["v=spf1 include:_spf.esp.test ip4:192.0.2.10 -all"],
            ("_spf.esp.test", "TXT"): ["v=spf1 -all"],
        },
        SpfResult.PASS,
    ),
    (
        "include-missing",
        {("d.test", "TXT"): ["v=spf1 include:gone.test -all"]},
        SpfResult.PERMERROR,
    ),
    (
        "redirect",
        {
            ("d.test", "TXT"): ["v=spf1 redirect=_spf.d.test"],
            ("_spf.d.test", "TXT"): ["v=spf1 a:relay.d.test -all"],
            ("relay.d.test", "A"): ["192.0.2.10"],
        },
        SpfResult.PASS,
    ),
    (
        "mx",
        {
            ("d.test", "TXT"): ["v=spf1 mx -all"],
            ("d.test", "MX"): ["10 mx1.d.test.", "20 mx2.d.test."],
            ("mx2.d.test", "A"): ["192.0.2.10"],
        },
        SpfResult.PASS,
    ),
    (
        "a-cidr",
        {("d.test", "TXT"): ["v=spf1 a/24 -all"], ("d.test", "A"): ["192.0.2.200"]},
        SpfResult.PASS,
    ),
    (
        "exists-macro",
        {
            ("d.test", "TXT"): ["v=spf1 exists:%{ir}.allow.d.test -all"],
            ("10.2.0.192.allow.d.test", "A"): ["127.0.0.2"],
        },
        SpfResult.PASS,
    ),
    (
        "ptr",
        {
            ("d.test", "TXT"): ["v=spf1 ptr -all"],
            ("10.2.0.192.in-addr.arpa", "PTR"): ["out.d.test."],
            ("out.d.test", "A"): ["192.0.2.10"],
        },
        SpfResult.PASS,
    ),
    ("unknown-mechanism", {("d.test", "TXT"): ["v=spf1 foo:bar -all"]}, SpfResult.PERMERROR),
    ("unknown-modifier-ignored", {("d.test", "TXT"): ["v=spf1 moo=cow +all"]}, SpfResult.PASS),
    ("bad-macro", {("d.test", "TXT"): ["v=spf1 exists:%{z}.d.test -all"]}, SpfResult.PERMERROR),
    (
        "ten-lookups",
        {
            ("d.test", "TXT"): [
                "v=spf1 " + " ".join(f"a:h{n}.d.test" for n in range(11)) + " +all"
            ],
            **{(f"h{n}.d.test", "A"): ["198.51.100.1"] for n in range(11)},
        },
        SpfResult.PERMERROR,
    ),
    (
        "void-lookups",
        {("d.test", "TXT"): ["v=spf1 a:v1.d.test a:v2.d.test a:v3.d.test +all"]},
        SpfResult.PERMERROR,
    ),
    (
        "include-loop",
        {
            ("d.test", "TXT"): ["v=spf1 include:e.test -all"],
            ("e.test", "TXT"): ["v=spf1 include:d.test -all"],
        },
        SpfResult.PERMERROR,
    ),
]


@pytest.mark.parametrize(("records", "expected"), [c[1:] for c in SPF_CASES],
                         ids=[c[0] for c in SPF_CASES])  # fmt: skip
async def test_spf(records: dict[tuple[str, str], list[str]], expected: SpfResult) -> None:
    outcome = await check_host(TableLookup(records), EGRESS, "d.test")
    assert outcome.result is expected, outcome


async def test_spf_ipv6_and_temperror() -> None:
    lookup = TableLookup({("d.test", "TXT"): ["v=spf1 ip6:2001:db8::/32 -all"]})
    assert (await check_host(lookup, "2001:db8::25", "d.test")).result is SpfResult.PASS
    slow = TableLookup({}, slow=frozenset({"d.test"}))
    assert (await check_host(slow, EGRESS, "d.test")).result is SpfResult.TEMPERROR


def test_spf_helpers() -> None:
    assert spf_record(["v=spf1 -all", "v=spf10", "google-site-verification=x"]) == ["v=spf1 -all"]
    assert spf_fix("d.test", None, [EGRESS]) == 'd.test. TXT "v=spf1 ip4:192.0.2.10 -all"'
    assert (
        spf_fix("d.test", "v=spf1 include:esp.test ~all", ["2001:db8::1"])
        == 'd.test. TXT "v=spf1 ip6:2001:db8::1 include:esp.test ~all"'
    )
    assert reverse_name(ipaddress.ip_address(EGRESS), "zen.test") == "10.2.0.192.zen.test"
    assert reverse_name(ipaddress.ip_address("2001:db8::1")).endswith(".8.b.d.0.1.0.0.2.ip6.arpa")


def test_tags_alignment_dnsbl() -> None:
    assert parse_tags("v=DKIM1; k=rsa; p=MIIB AQAB") == {"v": "DKIM1", "k": "rsa", "p": "MIIBAQAB"}
    assert aligned("mail.acme.test", "acme.test", "r")
    assert not aligned("mail.acme.test", "acme.test", "s")
    assert dnsbl_listing(["127.0.0.2"]) == (True, "listed (127.0.0.2)")
    assert dnsbl_listing([]) == (False, "not listed")
    listed, note = dnsbl_listing(["127.255.255.254"])
    assert not listed and "refused" in note


TYPOS = [
    ("gmial.com", "gmail.com"),
    ("gmail.con", "gmail.com"),
    ("hotmial.com", "hotmail.com"),
    ("yahooo.com", "yahoo.com"),
    ("outlok.com", "outlook.com"),
    ("icloud.co", "icloud.com"),
    ("gmail.com", None),  # itself
    ("hmail.com", None),  # gmail.com or ymail.com: ambiguous
    ("acme-motors.test", None),  # not near any provider
]


@pytest.mark.parametrize(("domain", "expected"), TYPOS, ids=[t[0] for t in TYPOS])
def test_suggest(domain: str, expected: str | None) -> None:
    assert suggest(domain) == expected


def test_distance() -> None:
    assert distance("gmial", "gmail") == 1
    assert distance("abc", "abc") == 0
    assert distance("a", "abcdef") == 3  # capped


ROUTES = [
    ("mx", {("r.test", "MX"): ["10 mx.r.test."]}, DomainStatus.OK),
    ("implicit-a", {("r.test", "A"): ["192.0.2.1"]}, DomainStatus.OK),
    ("implicit-aaaa", {("r.test", "AAAA"): ["2001:db8::1"]}, DomainStatus.OK),
    ("null-mx", {("r.test", "MX"): ["0 ."]}, DomainStatus.NULL_MX),
    ("no-host", {("r.test", "TXT"): ["v=spf1 -all"]}, DomainStatus.NO_MAIL_HOST),
    ("nxdomain", {}, DomainStatus.NXDOMAIN),
]


@pytest.mark.parametrize(("records", "expected"), [r[1:] for r in ROUTES],
                         ids=[r[0] for r in ROUTES])  # fmt: skip
async def test_mail_route(
    records: dict[tuple[str, str], list[str]], expected: DomainStatus
) -> None:
    assert await mail_route(TableLookup(records), "r.test") is expected


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("mail.example-motors.test", "example-motors.test"),
        ("bounce.dealer.co.uk", "dealer.co.uk"),
        ("dealer.co.uk", "dealer.co.uk"),
        ("news.dealer.com.au", "dealer.com.au"),
        ("Example.COM.", "example.com"),
    ],
)
def test_org_domain_uses_the_public_suffix_list(domain: str, org: str) -> None:
    assert org_domain(domain) == org


def test_relaxed_alignment_across_a_two_label_suffix() -> None:
    assert aligned("bounce.dealer.co.uk", "dealer.co.uk", "r")
    assert not aligned("dealer.co.uk", "other.co.uk", "r")


@pytest.mark.parametrize(
    ("text", "expected", "valid"),
    [
        ("v=DMARC1; p=reject", DmarcRecord("reject"), True),
        ("v=DMARC1;p=none;adkim=s;aspf=s", DmarcRecord("none", "s", "s"), True),
        ("v=DMARC1; P=quarantine; ADKIM=s", DmarcRecord("quarantine", "s"), True),  # tag names
        ("v=DMARC1; rua=mailto:d@x.test", DmarcRecord(""), False),  # p= is required
        ("v=DMARC1; p=block", DmarcRecord("block"), False),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_dmarc_record(text: str, expected: DmarcRecord, valid: bool) -> None:
    assert parse_record(text) == expected
    assert parse_record(text).valid is valid


def test_dmarc_records_are_picked_from_txt() -> None:
    txts = ["v=spf1 -all", "v = DMARC1; p=none", "v=DMARC1;p=reject", "dmarc"]
    assert dmarc_records(txts) == ["v = DMARC1; p=none", "v=DMARC1;p=reject"]
