"""The deployment files parse and agree with the code (Docker itself is not run here).

Checked: every YAML and JSON file parses; the compose file has the stack and the cluster
profile and mounts files that exist; the settings files load with the real settings loader;
every metric the dashboard and the alert rules query is one the gateway exports; the image
runs as a non-root user with a health check; the systemd unit carries its hardening; the
Kubernetes manifests are the set the kustomization lists; prometheus.yml passes
``promtool check config``.
"""

from __future__ import annotations

import configparser
import ipaddress
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml

from gateway.app import Gateway
from gateway.metrics import Metrics
from gateway.settings import Settings, load_settings, parse_hostport
from tests.deploy.tools import need
from tests.smtpclient import RawSmtp

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
METRIC = re.compile(r"\bmailgate_[a-z_]+\b")


def exported_families() -> dict[str, set[str]]:
    """Each metric family the gateway exports -> the sample names it is queried by."""
    families: dict[str, set[str]] = {}
    for family in Metrics().registry.collect():
        names = {family.name, f"{family.name}_total"}
        names |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
        families[family.name] = names
    return families


def exported_metrics() -> set[str]:
    return set().union(*exported_families().values())


# Gauges computed from the shared store: every node exports the same value, so a query
# that sums them over nodes counts each thing once per node.
STORE_GAUGES = (
    "mailgate_held_messages", "mailgate_queue_messages", "mailgate_queue_oldest_seconds",
    "mailgate_spool_bytes", "mailgate_dealer_state", "mailgate_dealer_suspended",
    "mailgate_complaint_rate", "mailgate_bounce_rate", "mailgate_complaint_rate_threshold",
    "mailgate_bounce_rate_threshold", "mailgate_rate_volume", "mailgate_rate_min_volume",
    "mailgate_suppressed_addresses", "mailgate_consent_recipients",
    "mailgate_queue_high_water_messages",
)  # fmt: skip


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (DEPLOY / "grafana" / "dashboards" / "mailgate.json").read_text()
    )
    return loaded


def test_every_yaml_and_json_file_parses() -> None:
    files = [p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml", ".json")]
    assert len(files) >= 12
    for path in files:
        text = path.read_text()
        if path.suffix == ".json":
            json.loads(text)
        else:
            assert [d for d in yaml.safe_load_all(text) if d is not None], path


def test_compose_stack_and_cluster_profile() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services: dict[str, Any] = compose["services"]
    default = {name for name, s in services.items() if not s.get("profiles")}
    assert {"mailgate", "postgres", "prometheus", "grafana", "mailsink"} <= default
    cluster = {name for name, s in services.items() if "cluster" in s.get("profiles", [])}
    assert cluster == {"mailgate-a", "mailgate-b", "loadbalancer"}
    for name in ("mailgate", "mailgate-a", "mailgate-b"):
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert "postgresql://" in services[name]["environment"]["MAILGATE_STORAGE_URL"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), volume
    haproxy = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    assert "server a mailgate-a:2525" in haproxy and "server b mailgate-b:2525" in haproxy
    assert "GET /readyz" in haproxy


def test_compose_images_are_pinned_to_releases() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    for name, service in services.items():
        image = service["image"]
        if "build" in service:
            assert image == "mailgate:local", name  # built from this checkout
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and re.fullmatch(r"v?\d+\.\d+(\.\d+)?", tag), (name, image)


def test_compose_cluster_nodes_trust_proxy_headers_from_the_balancer_only() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    (subnet,) = [c["subnet"] for c in compose["networks"]["default"]["ipam"]["config"]]
    balancer = services["loadbalancer"]["networks"]["default"]["ipv4_address"]
    assert ipaddress.ip_address(balancer) in ipaddress.ip_network(subnet)
    toml = DEPLOY / "compose" / "mailgate.toml"
    for name in ("mailgate-a", "mailgate-b"):
        settings = load_settings(toml, services[name]["environment"])
        assert settings.submission.proxy_protocol_from == [balancer], name
        assert settings.inbound.proxy_protocol_from == [balancer], name
    # The single node is reached directly: it trusts no header.
    single = load_settings(toml, services["mailgate"]["environment"])
    assert single.submission.proxy_protocol_from == single.inbound.proxy_protocol_from == []
    haproxy = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    assert haproxy.count("default-server send-proxy-v2 ") == 2


async def test_feedback_listener_starts_with_the_compose_settings(tmp_path: Path) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    toml = DEPLOY / "compose" / "mailgate.toml"
    settings = load_settings(toml, services["mailgate"]["environment"])
    assert settings.inbound.enabled
    port = parse_hostport(settings.inbound.listen)[1]
    assert f"{port}:{port}" in [str(p).split("#")[0].strip() for p in services["mailgate"]["ports"]]
    haproxy = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    assert f"bind :{port}" in haproxy and f"server a mailgate-a:{port}" in haproxy

    # Started as the container would be, with its paths and addresses made local (the
    # same MAILGATE_* overrides compose itself uses), the report listener answers.
    shutil.copytree(DEPLOY.parent / "policies", tmp_path / "policies")
    local = load_settings(
        toml,
        {
            "MAILGATE_SERVER_DATA_DIR": str(tmp_path / "var"),
            "MAILGATE_SERVER_POLICIES_DIR": str(tmp_path / "policies"),
            "MAILGATE_SUBMISSION_LISTEN": "127.0.0.1:0",
            "MAILGATE_INBOUND_LISTEN": "127.0.0.1:0",
            "MAILGATE_HTTP_LISTEN": "127.0.0.1:0",
            "MAILGATE_UPSTREAM_HOST": "127.0.0.1",
        },
    )
    gateway = await Gateway.build(local)
    await gateway.start()
    try:
        assert gateway.inbound is not None and gateway.inbound_port > 0
        client = await RawSmtp.connect("127.0.0.1", gateway.inbound_port)
        assert client.banner is not None and client.banner.code == 220
        assert (await client.cmd("EHLO mx.example")).code == 250
        assert (await client.cmd("MAIL FROM:<>")).code == 250
        address = settings.inbound.report_addresses[0]
        assert (await client.cmd(f"RCPT TO:<{address}>")).code == 250
        await client.close()
    finally:
        await gateway.stop()


def test_settings_files_load() -> None:
    for text in (
        (DEPLOY / "mailgate.toml.example").read_text(),
        (DEPLOY / "compose" / "mailgate.toml").read_text(),
        yaml.safe_load((DEPLOY / "k8s" / "configmap.yaml").read_text())["data"]["mailgate.toml"],
    ):
        Settings.model_validate(tomllib.loads(text))


def test_the_example_settings_show_every_key() -> None:
    text = (DEPLOY / "mailgate.toml.example").read_text()
    parts = re.split(r"^\[(\w+)\]", text, flags=re.M)
    sections = dict(zip(parts[1::2], parts[2::2], strict=True))
    missing = [
        f"{name}.{key}"
        for name, field in Settings.model_fields.items()
        for key in getattr(field.annotation, "model_fields", {})
        if not re.search(rf"^#?\s*{key}\s*=", sections.get(name, ""), re.M)
    ]
    assert missing == [], missing


def test_dashboard_and_rules_query_only_exported_metrics() -> None:
    exported = exported_metrics()
    board = dashboard()
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for wanted in ("complaint rate against thresholds", "volume", "findings by code",
                   "duplicates dropped", "queue", "delivery latency"):  # fmt: skip
        assert wanted in titles, wanted
    rules = (DEPLOY / "prometheus" / "rules.yml").read_text()
    used = set(METRIC.findall(" ".join(exprs))) | set(METRIC.findall(rules))
    assert used, "no metric found"
    assert used <= exported, sorted(used - exported)
    provisioning = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    uid = provisioning["datasources"][0]["uid"]
    assert all(p["datasource"]["uid"] == uid for p in board["panels"] if "datasource" in p)


def test_every_exported_metric_is_on_the_dashboard_or_in_a_rule() -> None:
    board = dashboard()
    text = " ".join(t["expr"] for p in board["panels"] for t in p.get("targets", []))
    text += (DEPLOY / "prometheus" / "rules.yml").read_text()
    used = set(METRIC.findall(text))
    unused = sorted(name for name, names in exported_families().items() if not names & used)
    assert unused == [], unused


def test_dashboard_never_sums_a_gauge_every_node_reports() -> None:
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            for gauge in STORE_GAUGES:
                summed = re.search(rf"\b(sum|count)\s*(by\s*\([^)]*\)\s*)?\(\s*{gauge}\b",
                                   target["expr"])  # fmt: skip
                assert summed is None, (panel["title"], target["expr"])
                if re.search(rf"\b{gauge}\b", target["expr"]):
                    assert re.search(rf"\b(max|min)\s*(by\s*\([^)]*\)\s*)?\(\s*{gauge}\b",
                                     target["expr"]), (panel["title"], target["expr"])  # fmt: skip


def test_stat_panels_have_thresholds() -> None:
    stats = [p for p in dashboard()["panels"] if p["type"] == "stat"]
    assert len(stats) >= 5
    for panel in stats:
        config = panel["fieldConfig"]
        steps = [config["defaults"].get("thresholds", {}).get("steps", [])]
        steps += [
            prop["value"]["steps"]
            for override in config["overrides"]
            for prop in override["properties"]
            if prop["id"] == "thresholds"
        ]
        assert max(len(s) for s in steps) >= 2, panel["title"]  # a colour change somewhere
        assert all(s[0]["value"] is None for s in steps if s), panel["title"]  # a base step


def test_image_is_slim_non_root_with_a_health_check() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", dockerfile, re.M)
    user = re.search(r"^USER (\S+)", dockerfile, re.M)
    assert user is not None and not user.group(1).startswith(("root", "0"))
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile


def test_systemd_unit_is_hardened() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "mailgate.service").read_text())
    service = unit["Service"]
    assert service["User"] == "mailgate" and "serve" in service["ExecStart"]
    for key, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "RestrictSUIDSGID": "yes",
        "MemoryDenyWriteExecute": "yes", "CapabilityBoundingSet": "",
    }.items():  # fmt: skip
        assert service[key] == value, key
    assert service["ExecReload"].endswith("-HUP $MAINPID")


def test_kubernetes_manifests() -> None:
    k8s = DEPLOY / "k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    kinds: dict[str, list[dict[str, Any]]] = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((k8s / name).read_text()):
            kinds.setdefault(doc["kind"], []).append(doc)
    assert set(kinds) == {
        "ConfigMap", "Secret", "PersistentVolumeClaim", "Deployment", "Service", "PodMonitor",
    }  # fmt: skip
    (deployment,) = kinds["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v]  # fmt: skip
    assert claims == [kinds["PersistentVolumeClaim"][0]["metadata"]["name"]]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    ports = {p["name"] for p in container["ports"]}
    (monitor,) = kinds["PodMonitor"]
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports


def test_prometheus_config(tmp_path: Path) -> None:
    promtool = need("promtool", "prometheus")
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(DEPLOY / "prometheus" / "rules.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([promtool, "check", "config", str(path)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
