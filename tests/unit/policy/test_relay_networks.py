"""relay_networks: dealer files bind source networks; defaults.toml bounds how wide."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path

import pytest

from gateway.errors import PolicyError, Problem
from gateway.policy.loader import load_policy_set

from .policyfiles import MakeDir, dealer_toml, defaults_toml


def problems_of(root: Path) -> list[tuple[str, str, str]]:
    with pytest.raises(PolicyError) as info:
        load_policy_set(root)
    return [(Path(p.file).name, p.key, p.message) for p in info.value.problems]


def networks(text: str) -> str:
    return f"relay_networks = [{text}]\n"


def test_off_by_default(make_dir: MakeDir) -> None:
    policy_set = load_policy_set(make_dir())
    dealer = policy_set.dealer("good-motors")
    assert dealer is not None and dealer.relay_networks == ()
    assert policy_set.dealer_for_ip("127.0.0.1") is None


def test_bound_networks_name_their_dealer(make_dir: MakeDir) -> None:
    root = make_dir(
        {
            "dealers/good-motors.toml": dealer_toml(
                "good-motors", extra=networks('"10.20.0.0/24", "2001:db8:5::/64"')
            ),
            "dealers/other-motors.toml": dealer_toml(
                "other-motors", extra=networks('"127.0.0.1/32"')
            ),
        }
    )
    policy_set = load_policy_set(root)
    good = policy_set.dealer("good-motors")
    assert good is not None
    assert good.relay_networks == (ip_network("10.20.0.0/24"), ip_network("2001:db8:5::/64"))
    assert policy_set.dealer_for_ip("10.20.0.77") == (good, ip_network("10.20.0.0/24"))
    assert policy_set.dealer_for_ip("2001:db8:5::9") == (good, ip_network("2001:db8:5::/64"))
    # A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6 addresses.
    assert policy_set.dealer_for_ip("::ffff:10.20.0.5") == (good, ip_network("10.20.0.0/24"))
    found = policy_set.dealer_for_ip("127.0.0.1")
    assert found is not None and found[0].dealer_id == "other-motors"
    assert policy_set.dealer_for_ip("10.20.1.1") is None
    assert policy_set.dealer_for_ip("127.0.0.2") is None
    assert policy_set.dealer_for_ip("not an address") is None


def test_networks_wider_than_the_limit_are_refused(make_dir: MakeDir) -> None:
    root = make_dir(
        {
            "dealers/good-motors.toml": dealer_toml(
                "good-motors", extra=networks('"10.0.0.0/8", "10.30.0.0/23", "2001:db8::/32"')
            )
        }
    )
    found = problems_of(root)
    assert [(f, k) for f, k, _ in found] == [
        ("good-motors.toml", "relay_networks[0]"),
        ("good-motors.toml", "relay_networks[1]"),
        ("good-motors.toml", "relay_networks[2]"),
    ]
    assert "10.0.0.0/8 is wider than the /24" in found[0][2]
    assert "limits.relay_prefix_v4" in found[0][2]
    assert "2001:db8::/32 is wider than the /56" in found[2][2]


def test_the_operator_sets_the_limit_in_defaults_only(make_dir: MakeDir) -> None:
    wide = dealer_toml("good-motors", extra=networks('"10.30.0.0/20"'))
    limits = "\n[limits]\nrelay_prefix_v4 = 20\n"
    root = make_dir({"defaults.toml": defaults_toml() + limits, "dealers/good-motors.toml": wide})
    dealer = load_policy_set(root).dealer("good-motors")
    assert dealer is not None and dealer.relay_networks == (ip_network("10.30.0.0/20"),)
    # A dealer file cannot raise its own limit.
    root = make_dir({"defaults.toml": defaults_toml(), "dealers/good-motors.toml": wide + limits})
    assert ("good-motors.toml", "limits", "unknown key") in problems_of(root)


def test_malformed_and_overlapping_networks(make_dir: MakeDir) -> None:
    root = make_dir(
        {
            "dealers/good-motors.toml": dealer_toml(
                "good-motors", extra=networks('"10.20.0.0/24", "10.20.0.128/25"')
            ),
            "dealers/other-motors.toml": dealer_toml(
                "other-motors", extra=networks('"10.20.0.9/32"')
            ),
            "dealers/typo-motors.toml": dealer_toml(
                "typo-motors", extra=networks('"10.40.0.1/24", "ten.example"')
            ),
        }
    )
    found = problems_of(root)
    messages = {(f, k): m for f, k, m in found}
    assert sorted(messages) == [
        ("good-motors.toml", "relay_networks[1]"),
        ("other-motors.toml", "relay_networks[0]"),
        ("typo-motors.toml", "relay_networks[0]"),
        ("typo-motors.toml", "relay_networks[1]"),
    ]
    assert "has host bits set" in messages["typo-motors.toml", "relay_networks[0]"]
    assert "not a network in CIDR form" in messages["typo-motors.toml", "relay_networks[1]"]
    assert "overlaps another of this dealer's" in messages["good-motors.toml", "relay_networks[1]"]
    other = messages["other-motors.toml", "relay_networks[0]"]
    assert "overlaps a network of dealer 'good-motors'" in other


def test_problem_rendering_names_the_file(make_dir: MakeDir) -> None:
    root = make_dir(
        {"dealers/good-motors.toml": dealer_toml("good-motors", extra=networks('"0.0.0.0/0"'))}
    )
    with pytest.raises(PolicyError) as info:
        load_policy_set(root)
    problem: Problem = info.value.problems[0]
    assert str(problem).startswith(str(root / "dealers" / "good-motors.toml"))
