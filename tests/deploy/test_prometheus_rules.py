"""The alert rules pass ``promtool check rules`` and their unit tests (``promtool test rules``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.deploy.tools import need

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def test_rules_check() -> None:
    promtool = need("promtool", "prometheus")
    done = subprocess.run(
        [promtool, "check", "rules", str(PROMETHEUS / "rules.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_unit_tests() -> None:
    promtool = need("promtool", "prometheus")
    done = subprocess.run(
        [promtool, "test", "rules", "rules_test.yml"],
        capture_output=True, text=True, timeout=120, cwd=PROMETHEUS,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_the_issue_asks_for_exists_and_is_tested() -> None:
    rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    wanted = {
        "MailgateDealerWarned", "MailgateDealerSuspended",
        "MailgateComplaintRateApproachingThreshold", "MailgateQueueOldestMessageOld",
        "MailgateDeliveryFailuresRising", "MailgateDnsCheckFailing",
        "MailgateEgressIpBlocklisted", "MailgateSpoolNearHighWater",
    }  # fmt: skip
    assert wanted <= alerts
    tests = yaml.safe_load((PROMETHEUS / "rules_test.yml").read_text())
    fired = {
        t["alertname"]
        for case in tests["tests"]
        for t in case["alert_rule_test"]
        if t.get("exp_alerts")
    }
    # Every rule has a case in which it fires (and so can fire at all).
    assert alerts <= fired, sorted(alerts - fired)
