"""``mailgate dns check`` and the server's periodic checks, against a loopback DNS server.

One good zone, then one broken record at a time: no SPF, SPF without the egress IP, the
wrong DKIM key, no DMARC, a listed egress IP, a PTR that does not name the HELO host.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.dkim.keys import generate_key, public_record, write_private_key
from gateway.dns.resolver import Resolver
from gateway.dns.selfcheck import GATEWAY, CheckConfig, Report, render, run_checks
from gateway.policy.loader import load_policy_set
from tests.dnsserver import DnsServer
from tests.integration.conftest import Harness, policies_dir
from tests.procs import write_config

MakeHarness = Callable[..., Awaitable[Harness]]
EGRESS = "192.0.2.10"
DOMAIN = "example-motors.test"
BOUNCE = "bounce.mailgate.test"
CONFIG = CheckConfig(
    egress_ips=(EGRESS,), helo_name="out.mailgate.test", bounce_domain=BOUNCE,
    dnsbl_zones=("bl.test",),
)  # fmt: skip


@pytest.fixture
def policies(tmp_path: Path) -> tuple[Path, str]:
    """The shipped policies, example-motors signing with a fresh key; returns its record."""
    directory = policies_dir(tmp_path)
    key = generate_key("rsa")
    write_private_key(directory / "keys" / f"{DOMAIN}.mg1.pem", key)
    dealer = directory / "dealers" / "example-motors.toml"
    dealer.write_text(
        dealer.read_text()
        + f'\n[[dkim]]\ndomain = "{DOMAIN}"\nselector = "mg1"\nkey_file = "keys/{DOMAIN}.mg1.pem"\n'
    )
    return directory, public_record(key)


def publish_good(server: DnsServer, dkim_record: str) -> None:
    server.add_txt(DOMAIN, f"v=spf1 include:_spf.{DOMAIN} ~all")
    server.add_txt(f"_spf.{DOMAIN}", "v=spf1 ip4:192.0.2.0/28 -all")
    server.add_txt(f"mg1._domainkey.{DOMAIN}", dkim_record)
    server.add_txt(f"_dmarc.{DOMAIN}", "v=DMARC1; p=quarantine; adkim=r; aspf=s")
    server.add_txt("rival-motors.test", "v=spf1 ip4:192.0.2.10 -all")
    server.add_txt("_dmarc.rival-motors.test", "v=DMARC1; p=none")
    server.add(BOUNCE, "MX", "10 mx.mailgate.test.")
    server.add_txt(BOUNCE, "v=spf1 ip4:192.0.2.10 -all")
    server.add("10.2.0.192.in-addr.arpa", "PTR", "out.mailgate.test.")
    server.add("out.mailgate.test", "A", EGRESS)
    server.add("mailgate.test", "A", "192.0.2.1")  # the zone bl.test is empty: not listed
    server.add("bl.test", "SOA", "ns.bl.test. hostmaster.bl.test. 1 3600 600 86400 60")


@pytest.fixture
def dns_server(policies: tuple[Path, str]) -> Iterator[DnsServer]:
    with DnsServer() as server:
        publish_good(server, policies[1])
        yield server


async def check(server: DnsServer, directory: Path, dealer: str | None = None) -> Report:
    resolver = Resolver([f"127.0.0.1:{server.port}"], timeout=2.0)
    return await run_checks(resolver, load_policy_set(directory), CONFIG, dealer=dealer)


def failures(report: Report) -> dict[tuple[str, str], str]:
    return {(o.dealer, o.check): f"{o.detail} | {o.fix}" for o in report.outcomes if not o.ok}


async def test_good_records_pass(dns_server: DnsServer, policies: tuple[Path, str]) -> None:
    report = await check(dns_server, policies[0])
    assert failures(report) == {
        # rival-motors has no DKIM entry, and VERP makes its SPF unaligned: DMARC cannot pass.
        ("rival-motors", "dmarc"): failures(report).get(("rival-motors", "dmarc"), "missing"),
    }
    assert "DKIM not aligned" in failures(report)[("rival-motors", "dmarc")]
    checks = {(o.dealer, o.check) for o in report.outcomes}
    assert checks >= {
        ("example-motors", "spf"), ("example-motors", "dkim"), ("example-motors", "dmarc"),
        (GATEWAY, "bounce-mx"), (GATEWAY, "bounce-spf"), (GATEWAY, "ptr-helo"), (GATEWAY, "dnsbl"),
    }  # fmt: skip
    text = render(report)
    assert "p=quarantine adkim=r aspf=s; DKIM aligned (d=example-motors.test)" in text
    assert "192.0.2.10 pass (include:_spf.example-motors.test, 1 of 10 lookups)" in text


def replaced(name: str, rdtype: str, value: str) -> Callable[[DnsServer], None]:
    def change(server: DnsServer) -> None:
        server.remove(name, rdtype)
        if rdtype == "TXT":
            server.add_txt(name, value)
        else:
            server.add(name, rdtype, value)

    return change


BROKEN: dict[str, tuple[Callable[[DnsServer], None], tuple[str, str], str]] = {
    "no-spf": (lambda s: s.remove(DOMAIN, "TXT"), ("example-motors", "spf"),
               f'{DOMAIN}. TXT "v=spf1 ip4:{EGRESS} -all"'),
    "spf-without-egress": (
        replaced(f"_spf.{DOMAIN}", "TXT", "v=spf1 -all"),
        ("example-motors", "spf"),
        f'{DOMAIN}. TXT "v=spf1 ip4:{EGRESS} include:_spf.{DOMAIN} ~all"',
    ),
    "wrong-dkim-key": (
        replaced(f"mg1._domainkey.{DOMAIN}", "TXT", public_record(generate_key("rsa"))),
        ("example-motors", "dkim"), "replace it: mg1._domainkey.example-motors.test. 3600 IN TXT",
    ),
    "no-dkim-key": (lambda s: s.remove(f"mg1._domainkey.{DOMAIN}"),
                    ("example-motors", "dkim"), "publish mg1._domainkey.example-motors.test."),
    "no-dmarc": (lambda s: s.remove(f"_dmarc.{DOMAIN}"), ("example-motors", "dmarc"),
                 f'publish _dmarc.{DOMAIN}. TXT "v=DMARC1; p=none'),
    "listed-ip": (lambda s: s.add("10.2.0.192.bl.test", "A", "127.0.0.2"), (GATEWAY, "dnsbl"),
                  "request delisting of 192.0.2.10 from bl.test"),
    "ptr-mismatch": (
        replaced("10.2.0.192.in-addr.arpa", "PTR", "host-10.isp.test."),
        (GATEWAY, "ptr-helo"), "set its PTR to out.mailgate.test.",
    ),
    "bounce-without-mx": (lambda s: s.remove(BOUNCE, "MX"), (GATEWAY, "bounce-mx"),
                          f"publish {BOUNCE}. MX 10"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BROKEN))
async def test_broken_record_is_reported_with_its_fix(
    case: str, dns_server: DnsServer, policies: tuple[Path, str]
) -> None:
    breaks, key, fix = BROKEN[case]
    breaks(dns_server)
    found = failures(await check(dns_server, policies[0]))
    found.pop(("rival-motors", "dmarc"), None)
    assert list(found) == [key], found
    assert fix in found[key]


async def test_one_dealer_only(dns_server: DnsServer, policies: tuple[Path, str]) -> None:
    report = await check(dns_server, policies[0], dealer="example-motors")
    assert {o.dealer for o in report.outcomes} == {"example-motors"}
    assert report.ok


def test_cli(
    dns_server: DnsServer, policies: tuple[Path, str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    config = write_config(tmp_path / "mailgate.toml", {
        "server": {"hostname": "mailgate.test", "data_dir": str(tmp_path / "var"),
                   "policies_dir": str(policies[0])},
        "inbound": {"bounce_domain": BOUNCE},
        "dns": {"helo_name": "out.mailgate.test"},
    })  # fmt: skip
    with config.open("a") as f:  # write_config writes scalars only
        f.write(f'nameservers = ["127.0.0.1:{dns_server.port}"]\n'
                f'egress_ips = ["{EGRESS}"]\ndnsbl_zones = ["bl.test"]\n')  # fmt: skip
    assert main(["--config", str(config), "dns", "check", "--dealer", "example-motors"]) == 0
    assert "checks passed" in capsys.readouterr().out
    dns_server.remove(f"_dmarc.{DOMAIN}")
    assert main(["--config", str(config), "dns", "check"]) == 1
    out = capsys.readouterr().out
    assert "FAIL dmarc" in out and "fix: publish _dmarc.example-motors.test." in out
    assert "dealer example-motors" in out and "gateway" in out
    assert main(["--config", str(config), "dns", "check", "--dealer", "nobody"]) == 2


async def test_server_exports_the_checks(make_harness: MakeHarness) -> None:
    with DnsServer() as server:
        server.add_txt(DOMAIN, f"v=spf1 ip4:{EGRESS} -all")  # rival-motors publishes nothing
        server.add("10.2.0.192.bl.test", "A", "127.0.0.2")
        h = await make_harness(
            dns={"nameservers": [f"127.0.0.1:{server.port}"], "egress_ips": [EGRESS],
                 "dnsbl_zones": ["bl.test"], "validate_recipients": False},
        )  # fmt: skip
        registry = h.gateway.metrics.registry

        def ok(dealer: str, check: str) -> float | None:
            return registry.get_sample_value(
                "mailgate_dns_check_ok", {"dealer": dealer, "check": check}
            )

        for _ in range(200):
            if ok(GATEWAY, "dnsbl") is not None:
                break
            await asyncio.sleep(0.02)
        assert ok("example-motors", "spf") == 1
        assert ok("rival-motors", "spf") == 0
        assert ok(GATEWAY, "dnsbl") == 0
        assert registry.get_sample_value("mailgate_dnsbl_listed", {"list": "bl.test"}) == 1
