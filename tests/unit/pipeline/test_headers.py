from __future__ import annotations

from pathlib import Path

import pytest

from gateway import pipeline
from gateway.findings import CATALOGUE
from gateway.mail.message import ParseLimits, parse
from gateway.pipeline.base import CheckContext, Finding
from gateway.policy.model import DealerPolicy

MESSAGES = Path(__file__).parents[2] / "data" / "messages"
LIMITS = ParseLimits(max_header_bytes=102_400, max_mime_depth=100)

# One sample per behaviour: file name -> the finding codes the checks must report.
EXPECTED: dict[str, list[str]] = {
    "good.eml": [],
    "uppercase-domain.eml": [],
    "encoded-display-name.eml": [],
    "folded-from.eml": [],
    "other-domain.eml": ["from-domain-not-allowed"],
    "display-name-spoof.eml": ["from-domain-not-allowed"],
    "subdomain.eml": ["from-domain-not-allowed"],
    "second-address-foreign.eml": ["from-domain-not-allowed"],
    "unreadable-from.eml": ["from-domain-not-allowed"],
    "missing-from.eml": ["missing-from"],
    "two-from.eml": ["multiple-from"],
    "display-name-other-address.eml": ["display-name-address"],
    "display-name-encoded-address.eml": ["display-name-address"],
    "display-name-own-address.eml": [],
    "sender-other-domain.eml": ["sender-domain-not-allowed"],
    "sender-own-domain.eml": [],
}


# The From: checks of headers.py; the other checks have their own tables.
HEADER_CODES = {
    "missing-from",
    "multiple-from",
    "from-domain-not-allowed",
    "sender-domain-not-allowed",
    "display-name-address",
}


def header_findings(raw: bytes, dealer: DealerPolicy, ctx: CheckContext) -> list[Finding]:
    findings = pipeline.run(parse(raw, LIMITS), dealer, ctx)
    return [f for f in findings if f.code in HEADER_CODES]


def test_every_sample_has_an_expectation() -> None:
    assert sorted(p.name for p in MESSAGES.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_findings(name: str, dealer: DealerPolicy, ctx: CheckContext) -> None:
    findings = header_findings((MESSAGES / name).read_bytes(), dealer, ctx)
    assert [f.code for f in findings] == EXPECTED[name]


def test_detail_names_domain_and_dealer(dealer: DealerPolicy, ctx: CheckContext) -> None:
    (finding,) = header_findings((MESSAGES / "other-domain.eml").read_bytes(), dealer, ctx)
    assert finding.detail == "mail.other.test is not a domain of example-motors"
    assert finding.data["domain"] == "mail.other.test"
    assert finding.data["dealer"] == "example-motors"


def test_same_foreign_domain_reported_once(dealer: DealerPolicy, ctx: CheckContext) -> None:
    raw = b"From: a@evil.test, b@EVIL.test\r\nSender: a@evil.test\r\n\r\nx\r\n"
    findings = header_findings(raw, dealer, ctx)
    assert [(f.code, f.data["domain"]) for f in findings] == [
        ("from-domain-not-allowed", "evil.test"),
        ("sender-domain-not-allowed", "evil.test"),
    ]


def test_display_name_detail_names_the_shown_address(
    dealer: DealerPolicy, ctx: CheckContext
) -> None:
    raw = (MESSAGES / "display-name-encoded-address.eml").read_bytes()
    (finding,) = header_findings(raw, dealer, ctx)
    assert finding.detail == (
        "the From: display name shows sales@other-dealer.example, an address of "
        "other-dealer.example, which is not a domain of example-motors"
    )


# -- registry conformance: every entry is a named, well-behaved check ---------------------


@pytest.mark.parametrize("check", pipeline.CHECKS, ids=pipeline.check_name)
def test_check_conforms(check: pipeline.Check, dealer: DealerPolicy, ctx: CheckContext) -> None:
    assert pipeline.check_name(check) == check.__name__
    for name in EXPECTED:
        msg = parse((MESSAGES / name).read_bytes(), LIMITS)
        for finding in check(msg, dealer, ctx):
            assert isinstance(finding, Finding)
            assert finding.code in CATALOGUE
            assert finding.detail and "\n" not in finding.detail


def test_registry_is_unique_and_ordered() -> None:
    names = [pipeline.check_name(c) for c in pipeline.CHECKS]
    assert len(set(names)) == len(names)
    # Cheapest, most decisive first: structural problems before the domain lookup.
    assert names.index("missing_from") < names.index("from_domain_not_allowed")


def test_run_does_not_swallow_a_raising_check(dealer: DealerPolicy, ctx: CheckContext) -> None:
    def broken(msg: object, dealer: object, ctx: object) -> list[Finding]:
        raise RuntimeError("bug")

    msg = parse((MESSAGES / "good.eml").read_bytes(), LIMITS)
    with pytest.raises(RuntimeError):
        pipeline.run(msg, dealer, ctx, checks=(*pipeline.CHECKS, broken))
    assert pipeline.check_name(broken) == "broken"
