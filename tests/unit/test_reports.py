"""The deliverability report's pure parts: periods, providers, figures and words, links."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType

import pytest

from gateway.findings import CATALOGUE
from gateway.policy.model import CheckRule, DealerPolicy, RateThresholds
from gateway.reports.content import HeldLine, figures, rate_lines, render
from gateway.reports.links import ReportLinks
from gateway.reports.periods import Period, due
from gateway.reports.providers import GOOGLE, MICROSOFT, OTHER, YAHOO, by_domain, by_mx, mx_hosts
from gateway.reports.records import DeliveryTally, DropTally, EventTally, FindingTally
from gateway.reputation.records import DayCounts
from gateway.types import DealerId, MessageState

DEALER = DealerPolicy(
    dealer_id=DealerId("example-motors"),
    name="Example Motors",
    auth_users=frozenset({"example-crm"}),
    from_domains=frozenset({"example-motors.test"}),
    contacts=("gm@example-motors.test",),
    checks=MappingProxyType({c: CheckRule(k.default_action) for c, k in CATALOGUE.items()}),
    complaints=RateThresholds(timedelta(days=7), 100, 0.001, 0.002, timedelta(hours=72)),
)
MON = date(2026, 1, 5)  # a Monday


@pytest.mark.parametrize(
    ("now", "every", "expected"),
    [
        (datetime(2026, 1, 6, 7, 0, tzinfo=UTC), "day", Period("day", MON, MON)),
        (datetime(2026, 1, 6, 5, 59, tzinfo=UTC), "day", Period("day", MON - timedelta(1),
                                                                 MON - timedelta(1))),
        (datetime(2026, 1, 12, 6, 0, tzinfo=UTC), "week", Period("week", MON, date(2026, 1, 11))),
        (datetime(2026, 1, 12, 5, 0, tzinfo=UTC), "week",
         Period("week", MON - timedelta(7), date(2026, 1, 4))),
        (datetime(2026, 1, 14, 1, 0, tzinfo=UTC), "week", Period("week", MON, date(2026, 1, 11))),
    ],
)  # fmt: skip
def test_the_due_period(now: datetime, every: str, expected: Period) -> None:
    assert due(every, now, 6) == expected  # type: ignore[arg-type]


def test_period_keys_and_words() -> None:
    day = Period("day", MON, MON)
    assert day.key == "day:2026-01-05" and day.describe() == "Monday 5 January 2026"
    assert day.since == datetime(2026, 1, 5, tzinfo=UTC)
    assert day.until == datetime(2026, 1, 6, tzinfo=UTC)
    week = Period("week", MON, date(2026, 1, 11))
    assert week.key == "week:2026-W02"
    assert week.describe() == "the week of 5 to 11 January 2026"
    assert due("off", datetime(2026, 1, 6, 7, tzinfo=UTC), 6) is None


@pytest.mark.parametrize(
    ("domain", "provider"),
    [("gmail.com", GOOGLE), ("GoogleMail.com", GOOGLE), ("hotmail.co.uk", MICROSOFT),
     ("outlook.de", MICROSOFT), ("live.com", MICROSOFT), ("yahoo.co.jp", YAHOO),
     ("aol.com", YAHOO), ("ymail.com", YAHOO), ("dealer-customer.test", None),
     ("mail.yahoo.example", None)],
)  # fmt: skip
def test_providers_by_domain(domain: str, provider: str | None) -> None:
    assert by_domain(domain) == provider


def test_providers_by_mx() -> None:
    assert by_mx(mx_hosts(["10 alt1.aspmx.l.google.com.", "1 aspmx.l.google.com."])) == GOOGLE
    assert by_mx(["acme-com.mail.protection.outlook.com."]) == MICROSOFT
    assert by_mx(["mta5.am0.yahoodns.net"]) == YAHOO
    assert by_mx(["mx.dealer-customer.test"]) is None
    assert by_mx([]) is None
    # the most preferred exchange decides
    assert by_mx(mx_hosts(["20 aspmx.l.google.com.", "10 mx.own.test."])) is None


def test_figures_sum_per_provider_and_render() -> None:
    period = Period("day", MON, MON)
    deliveries = [
        DeliveryTally(MON, "gmail.com", MessageState.DELIVERED, False, 40),
        DeliveryTally(MON, "gmail.com", MessageState.DELIVERED, True, 2),
        DeliveryTally(MON, "corp.test", MessageState.DELIVERED, False, 5),
        DeliveryTally(MON, "outlook.com", MessageState.FAILED, False, 1),
        DeliveryTally(MON, "outlook.com", MessageState.QUEUED, True, 1),
        DeliveryTally(MON, "yahoo.com", MessageState.HELD, False, 1),
    ]
    events = [
        EventTally(MON, "gmail.com", "hard-bounce", 2),
        EventTally(MON, "yahoo.com", "complaint", 1),
    ]
    drops = [DropTally("exact", "Your test drive", 3), DropTally("cap", "Spring offer", 1)]
    found = [
        FindingTally(("stray-attachment",), MessageState.DELIVERED, 4),
        FindingTally(("dangerous-attachment",), MessageState.HELD, 1),
    ]
    providers = {"gmail.com": GOOGLE, "corp.test": GOOGLE, "outlook.com": MICROSOFT,
                 "yahoo.com": YAHOO}  # fmt: skip
    held = HeldLine("Your invoice", "a program disguised as a .pdf file",
                    datetime(2026, 1, 5, 10, tzinfo=UTC), "b***@yahoo.com")  # fmt: skip
    day = DayCounts(sent=48, delivered=47, complaints=1, hard_bounces=2)
    report = figures(
        DEALER,
        period,
        deliveries=deliveries,
        events=events,
        drops=drops,
        findings=found,
        providers=providers,
        counts=day,
        rates=rate_lines(DEALER, [(MON, day)], MON),
        held=[held],
        status_url="https://mailgate.test/status/example-motors/abc",
    )
    google = next(r for r in report.providers if r.provider == GOOGLE)
    assert (google.accepted, google.delivered, google.delayed) == (47, 47, 2)
    assert google.hard_bounces == 2
    assert report.total.accepted == 50 and report.total.failed == 1 and report.total.waiting == 1
    assert report.total.held == 1 and report.total.complaints == 1
    assert [r.provider for r in report.providers] == [GOOGLE, MICROSOFT, YAHOO]
    assert dict(report.drops) == {"exact": 3, "cap": 1}
    assert (report.worst_subject, report.worst_drops) == ("Your test drive", 3)
    assert dict(report.repairs) == {"stray-attachment": 4}
    assert report.has_traffic
    complaints = report.rates[0]
    assert complaints.level == "low-volume" and complaints.words == (
        "not enough mail yet to judge (a rate counts from 100 delivered)"
    )

    subject, text, doc = render(report, "https://mailgate.test/reports/x?t=1")
    assert subject == "[Mailgate] Daily mail report for Example Motors: Monday 5 January 2026"
    assert ("50 messages accepted, 47 delivered (97.9% of those with an outcome), 4 repeated "
            "messages stopped.") in text  # fmt: skip
    assert "Repeated most: “Your test drive” (3 times)." in text
    assert "4 messages repaired" in text and "1 message held" in text
    assert "“Your invoice”" in text and "b***@yahoo.com" in text
    assert "Complaints: 2.128% (1 of 47 delivered" in text
    assert "https://mailgate.test/status/example-motors/abc" in text
    assert "To stop these reports: https://mailgate.test/reports/x?t=1" in text
    assert "<th scope='col'>Google</th>" in doc and "Stop these reports" in doc
    assert OTHER not in [r.provider for r in report.providers]


def test_no_traffic_no_report() -> None:
    period = Period("day", MON, MON)
    report = figures(DEALER, period, deliveries=[], events=[], drops=[], findings=[],
                     providers={}, counts=DayCounts(), rates=())  # fmt: skip
    assert not report.has_traffic


def test_report_links() -> None:
    links = ReportLinks(b"k" * 32, "https://mailgate.test/")
    url = links.url("example-motors", "GM@Example-Motors.test")
    assert url.startswith(
        "https://mailgate.test/u/reports/example-motors?to=gm@example-motors.test&t="
    )
    token = url.rsplit("t=", 1)[1]
    assert links.valid("example-motors", "gm@example-motors.test", token)
    assert not links.valid("rival-motors", "gm@example-motors.test", token)
    assert not links.valid("example-motors", "other@example-motors.test", token)
    assert not ReportLinks(b"j" * 32, "").valid("example-motors", "gm@example-motors.test", token)
