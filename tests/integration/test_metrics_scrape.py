"""Metric names and labels from a real /metrics scrape after a scenario through the gateway.

The scenario: a message delivered to two customers, one held (dangerous attachment), one
refused (a From: domain that is not the dealer's), a complaint and a bounce about what was
delivered, a policy reload and a suspension through the admin API. The scrape is parsed
with prometheus_client's own parser, so a malformed exposition fails too.
"""

from __future__ import annotations

import asyncio
import platform
from collections.abc import Awaitable, Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from tests.feedback_reports import arf, deliver, dsn, scrape
from tests.integration.admin import add_token, call
from tests.integration.conftest import Harness, dot_stuff, message

MakeHarness = Callable[..., Awaitable[Harness]]
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "messages" / "inspection"
INBOUND = {
    "listen": "127.0.0.1:0",
    "report_addresses": ["fbl@mailgate.test"],
    "bounce_domain": "bounces.mailgate.test",
}
# Every label name the gateway may use; none of them names a recipient, address or message.
ALLOWED_LABELS = {
    "dealer", "action", "code", "outcome", "state", "reason", "kind", "listener", "result",
    "level", "rate", "check", "list", "component", "channel", "le", "version", "python",
}  # fmt: skip
# name -> the label names its samples carry (histograms: of the _bucket series, minus le)
REQUIRED = {
    "mailgate_messages_received_total": {"dealer", "action"},
    "mailgate_messages_relayed_total": {"dealer"},
    "mailgate_messages_refused_total": {"reason"},
    "mailgate_findings_total": {"dealer", "code", "action"},
    "mailgate_delivery_attempts_total": {"outcome"},
    "mailgate_delivery_seconds": {"outcome"},
    "mailgate_delivery_latency_seconds": set(),
    "mailgate_queue_messages": {"state"},
    "mailgate_queue_oldest_seconds": set(),
    "mailgate_queue_high_water_messages": set(),
    "mailgate_spool_bytes": set(),
    "mailgate_held_messages": {"dealer"},
    "mailgate_complaints_total": {"dealer"},
    "mailgate_bounces_total": {"dealer", "kind"},
    "mailgate_complaint_rate": {"dealer"},
    "mailgate_bounce_rate": {"dealer"},
    "mailgate_complaint_rate_threshold": {"dealer", "level"},
    "mailgate_bounce_rate_threshold": {"dealer", "level"},
    "mailgate_rate_volume": {"dealer", "rate"},
    "mailgate_dealer_state": {"dealer", "state"},
    "mailgate_dealer_suspended": {"dealer"},
    "mailgate_policy_reloads_total": {"result"},
    "mailgate_reports_received_total": {"kind"},
    "mailgate_admin_requests_total": {"result"},
    "mailgate_dkim_signing_failures_total": {"dealer"},
    "mailgate_build_info": {"version", "python"},
    "mailgate_process_cpu_seconds_total": set(),
    "mailgate_process_resident_memory_bytes": set(),
    "mailgate_process_open_fds": set(),
    "mailgate_process_max_fds": set(),
    "mailgate_process_start_time_seconds": set(),
}


async def submit(h: Harness, data: bytes, rcpts: list[str]) -> int:
    client = await h.client()
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        for rcpt in rcpts:
            assert (await client.cmd(f"RCPT TO:<{rcpt}>")).code == 250
        return (await client.data(dot_stuff(data))).code
    finally:
        await client.close()


async def test_scrape_after_a_scenario(make_harness: MakeHarness) -> None:
    h = await make_harness(inbound=INBOUND)
    gw = h.gateway
    token = add_token(gw)
    dealers = set(gw.policies.current.dealers)

    good = message(to="undisclosed-recipients:;", subject="Service reminder")
    assert await submit(h, good, ["ann@customers.example", "bob@customers.example"]) == 250
    held = (SAMPLES / "double-extension.eml").read_bytes()
    assert await submit(h, held, ["cid@customers.example"]) == 250
    foreign = message(sender="sales@rival-motors.test")
    assert await submit(h, foreign, ["dan@customers.example"]) >= 500
    client = await h.client()
    try:  # refused before the checks run: an envelope sender of another dealer's domain
        assert (await client.cmd("MAIL FROM:<sales@rival-motors.test>")).code == 553
    finally:
        await client.close()
    await h.wait_delivered(2)

    by_rcpt = {m.rcpt_tos[0]: m for m in h.sink.messages}
    ann, bob = by_rcpt["ann@customers.example"], by_rcpt["bob@customers.example"]
    replies = await deliver(
        gw.inbound_port, ["fbl@mailgate.test"], arf(ann.data, "ann@customers.example")
    )
    assert replies[-1].startswith("250"), replies
    bounce = dsn(bob.mail_from, [("bob@customers.example", "5.1.1", "failed")], bob.data)
    replies = await deliver(gw.inbound_port, [bob.mail_from], bounce, sender="")
    assert replies[-1].startswith("250"), replies

    assert (await call(gw, "POST", "/api/policies/reload", token=token)).status == 200
    suspended = await call(
        gw, "POST", "/api/dealers/example-motors/suspend", token=token, body={"reason": "test"}
    )
    assert suspended.status == 200
    await gw.guard.refresh()

    page = await asyncio.to_thread(scrape, gw.http_port)
    families = {f.name: f for f in text_string_to_metric_families(page)}
    for family in families.values():
        assert family.name.startswith("mailgate_"), family.name
        assert family.documentation, f"{family.name} has no help text"
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, (sample.name, sample.labels)
            for name, value in sample.labels.items():
                assert "@" not in value and "<" not in value, (sample.name, name, value)
            if "dealer" in sample.labels:
                assert sample.labels["dealer"] in dealers | {"*"}, sample

    def labels_of(name: str) -> set[str]:
        family = families.get(name.removesuffix("_total"))
        assert family is not None, f"{name} missing from the scrape"
        assert family.samples, f"{name} has no samples after the scenario"
        names: set[str] = set()
        for sample in family.samples:
            names |= set(sample.labels) - {"le"}
        return names

    for name, expected in REQUIRED.items():
        assert labels_of(name) == expected, name

    def value(name: str, **labels: str) -> float:
        family = families[name.removesuffix("_total").removesuffix("_count")]
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
        raise AssertionError(f"no sample {name}{labels}")

    dealer = "example-motors"
    assert value("mailgate_messages_received_total", dealer=dealer, action="accept") == 1
    assert value("mailgate_messages_received_total", dealer=dealer, action="hold") == 1
    assert value("mailgate_messages_relayed_total", dealer=dealer) >= 2  # + alert mail
    assert value("mailgate_findings_total", dealer=dealer, code="dangerous-attachment",
                 action="hold") == 1  # fmt: skip
    assert value("mailgate_delivery_attempts_total", outcome="delivered") >= 2
    assert value("mailgate_delivery_latency_seconds_count") >= 2
    assert value("mailgate_complaints_total", dealer=dealer) == 1
    assert value("mailgate_bounces_total", dealer=dealer, kind="hard") == 1
    assert value("mailgate_held_messages", dealer=dealer) == 1
    assert value("mailgate_queue_messages", state="held") == 1
    assert value("mailgate_dealer_suspended", dealer=dealer) == 1
    assert value("mailgate_dealer_state", dealer=dealer, state="suspended") == 1
    assert value("mailgate_dealer_state", dealer="rival-motors", state="active") == 1
    assert value("mailgate_complaint_rate_threshold", dealer=dealer, level="suspend") == 0.002
    assert value("mailgate_policy_reloads_total", result="ok") == 1
    # Present at 0 from the start, so the first failed reload is an increase a rule sees.
    assert value("mailgate_policy_reloads_total", result="failed") == 0
    for each in dealers:
        assert value("mailgate_dkim_signing_failures_total", dealer=each) == 0
    assert value("mailgate_build_info", version=__version__, python=platform.python_version()) == 1
    assert value("mailgate_process_resident_memory_bytes") > 0
    assert value("mailgate_queue_high_water_messages") == gw.settings.storage.queue_high_water


async def test_a_dealer_removed_from_policy_leaves_no_series(make_harness: MakeHarness) -> None:
    h = await make_harness()
    gw = h.gateway
    token = add_token(gw)
    suspended = await call(
        gw, "POST", "/api/dealers/rival-motors/suspend", token=token, body={"reason": "test"}
    )
    assert suspended.status == 200
    before = await asyncio.to_thread(scrape, gw.http_port)
    assert 'mailgate_dealer_suspended{dealer="rival-motors"} 1.0' in before
    assert 'mailgate_dkim_signing_failures_total{dealer="rival-motors"} 0.0' in before

    (gw.settings.server.policies_dir / "dealers" / "rival-motors.toml").unlink()
    assert (await call(gw, "POST", "/api/policies/reload", token=token)).status == 200
    after = await asyncio.to_thread(scrape, gw.http_port)
    # MailgateDealerSuspended would otherwise go on firing for a dealer that is gone.
    assert 'dealer="rival-motors"' not in after
    assert 'mailgate_dealer_suspended{dealer="example-motors"} 0.0' in after
    assert 'mailgate_policy_reloads_total{result="ok"} 1.0' in after
