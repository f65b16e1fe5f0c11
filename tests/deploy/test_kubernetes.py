"""The Kubernetes manifests deliver working, signing gateway nodes, and the rules see its pods.

No cluster runs here, so the test does what the cluster would, from the manifests as
kustomize lists them:

* the pod's filesystem: the image's files (the Dockerfile's COPY lines), then every
  volumeMount of the container from the ConfigMap, Secret, claim template or emptyDir it
  names (items, subPath and defaultMode as Kubernetes applies them; a mount hides what the
  image had there), then the container's environment; the gateway is started on that
  tree, with only the placeholders an operator must replace filled in (a DKIM key, the
  shared keys, the TLS pair cert-manager would provide, a database) and the addresses
  made local. A message submitted as the example dealer must arrive DKIM-signed and
  verify; two pods of the StatefulSet, each on its own tree (its own claim) and one
  PostgreSQL, run side by side and honour each other's links;
* the exposure: which Service, Ingress and NetworkPolicy reach which container port, so
  the operators' port never leaves the cluster and the public one reaches the internet
  through the Ingress (with TLS, at the host the links name) only;
* the labels of a scrape: the Prometheus Operator's relabelling of a PodMonitor target
  (``job`` is ``<namespace>/<name>`` unless ``jobLabel`` names a pod label; then
  ``namespace``, ``pod``, ``container``, ``endpoint``), and ``promtool test rules`` runs
  MailgateDown against a pod with exactly those labels.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import shutil
import stat
import subprocess
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dkim
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from gateway.app import Gateway
from gateway.dkim.keys import generate_key, public_record
from gateway.errors import ConfigError, DataDirInUse, PolicyError
from gateway.passwords import hash_password
from gateway.settings import Settings, load_settings, parse_hostport
from gateway.smtp.tls import ensure_self_signed
from gateway.types import Credential, DealerId
from gateway.unsubscribe.links import UnsubscribeLinks
from tests.contract.conftest import PostgresBackend, pg
from tests.deploy.tools import need
from tests.integration.admin import call_public
from tests.integration.conftest import PASSWORD, dot_stuff, message
from tests.shipped import copy_shipped
from tests.sinks import Sink
from tests.smtpclient import RawSmtp

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
POD = "mailgate-0"  # a StatefulSet's pods are <name>-<ordinal>
POD_IP = "10.1.2.3"
# Kinds whose pod template runs ``replicas`` copies of one pod.
WORKLOADS = ("Deployment", "StatefulSet", "ReplicaSet", "DaemonSet")

Resource = dict[str, Any]

__all__ = ["pg"]  # fixture, imported for pytest


def resources() -> list[Resource]:
    """The resources ``kubectl apply -k deploy/k8s`` creates, with their namespace."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    found = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc:
                doc["metadata"].setdefault("namespace", kustomization["namespace"])
                found.append(doc)
    return found


def one(kind: str, name: str | None = None) -> Resource:
    (found,) = [
        r for r in resources() if r["kind"] == kind and name in (None, r["metadata"]["name"])
    ]
    return found


def workload() -> Resource:
    """The one workload that runs the gateway (the StatefulSet)."""
    (found,) = [r for r in resources() if r["kind"] in WORKLOADS]
    return found


def container() -> tuple[Resource, Resource]:
    """The workload's pod spec and its one container."""
    pod = workload()["spec"]["template"]["spec"]
    (only,) = pod["containers"]
    return pod, only


def configured() -> Settings:
    """The settings in the ConfigMap, as written (paths and addresses of the pod)."""
    text = one("ConfigMap", "mailgate-config")["data"]["mailgate.toml"]
    return Settings.model_validate(tomllib.loads(text))


# --- the labels of a scrape --------------------------------------------------------------


def scrape_labels() -> dict[str, str]:
    """The target labels the Prometheus Operator gives one pod of the StatefulSet.

    As prometheus-operator's generatePodMonitorConfig: ``job`` first from the PodMonitor's
    namespace and name, then from the pod label ``jobLabel`` names when the pod has it,
    then the endpoint's own relabelings (only ``replace`` is used by anyone here).
    """
    monitor = one("PodMonitor")
    deployment = workload()
    template = deployment["spec"]["template"]
    _pod, main = container()
    pod_labels: dict[str, str] = template["metadata"]["labels"]
    assert all(
        pod_labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items()
    ), "the PodMonitor does not select the StatefulSet's pods"
    assert monitor["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    namespace = monitor["metadata"]["namespace"]
    labels = {
        "instance": f"{POD_IP}:{ports[endpoint['port']]}",
        "namespace": namespace,
        "pod": POD,
        "container": main["name"],
        "job": f"{namespace}/{monitor['metadata']['name']}",
        "endpoint": endpoint["port"],
    }
    job_label = monitor["spec"].get("jobLabel")
    if job_label and pod_labels.get(job_label):
        labels["job"] = pod_labels[job_label]
    assert not monitor["spec"].get("podTargetLabels"), "extend scrape_labels for these"
    for rule in endpoint.get("relabelings", []):
        assert rule.get("action", "replace") == "replace", rule
        value = ";".join(labels.get(s, "") for s in rule.get("sourceLabels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        if match:
            labels[rule["targetLabel"]] = match.expand(
                rule.get("replacement", "$1").replace("$", "\\")
            )
    return labels


def compose_scrape_labels() -> dict[str, str]:
    """The labels deploy/prometheus/prometheus.yml gives the compose node ``mailgate``."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    return {"job": job["job_name"], "instance": f"{POD_IP}:{sd['port']}"}


def test_the_podmonitor_gives_the_job_name_the_rules_select() -> None:
    assert scrape_labels()["job"] == compose_scrape_labels()["job"] == "mailgate"


@pytest.mark.parametrize("source", ["kubernetes", "compose"])
def test_mailgate_down_fires_for_a_pod_with_the_labels_it_really_has(
    tmp_path: Path, source: str
) -> None:
    promtool = need("promtool", "prometheus")
    labels = scrape_labels() if source == "kubernetes" else compose_scrape_labels()
    selector = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    cases = {
        "rule_files": [str(DEPLOY / "prometheus" / "rules.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": f"up{{{selector}}}", "values": "1 1 0 0 0 0 0"}],
                "alert_rule_test": [
                    {"eval_time": "3m", "alertname": "MailgateDown", "exp_alerts": []},
                    {
                        "eval_time": "5m",
                        "alertname": "MailgateDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {**labels, "severity": "critical"},
                                "exp_annotations": {
                                    "summary": f"Mailgate {labels['instance']} does not "
                                    "answer scrapes"
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "down_test.yml"
    path.write_text(yaml.safe_dump(cases))
    done = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- the exposure -------------------------------------------------------------------------


def container_port(spec: int | str) -> int:
    """A Service's targetPort or a NetworkPolicy's port, as the container's port number."""
    _pod, main = container()
    if isinstance(spec, int):
        return spec
    (number,) = [p["containerPort"] for p in main["ports"] if p["name"] == spec]
    return int(number)


def listener_ports() -> tuple[int, int]:
    """(operators' port, public port) of the pod, from the settings it runs with."""
    settings = configured()
    return parse_hostport(settings.http.listen)[1], parse_hostport(settings.public.listen)[1]


def selects_the_pods(selector: dict[str, str]) -> bool:
    labels: dict[str, str] = workload()["spec"]["template"]["metadata"]["labels"]
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def services() -> dict[str, Resource]:
    return {r["metadata"]["name"]: r for r in resources() if r["kind"] == "Service"}


def test_the_operators_port_stays_in_the_cluster() -> None:
    ops, public = listener_ports()
    assert ops != public
    reaching_ops = []
    for name, service in services().items():
        assert selects_the_pods(service["spec"]["selector"]), name
        targets = {container_port(p.get("targetPort", p["port"])) for p in service["spec"]["ports"]}
        kind = service["spec"].get("type", "ClusterIP")
        outside = kind in ("LoadBalancer", "NodePort") or service["spec"].get("externalIPs")
        if outside:
            # Reached from the internet: SMTP only, never either HTTP listener.
            assert not targets & {ops, public}, (name, targets)
        if ops in targets:
            reaching_ops.append(name)
            assert kind == "ClusterIP" and not service["spec"].get("externalIPs"), name
    # Prometheus scrapes the pods themselves (the PodMonitor) on the operators' port.
    (endpoint,) = one("PodMonitor")["spec"]["podMetricsEndpoints"]
    assert container_port(endpoint["port"]) == ops
    assert reaching_ops == ["mailgate-ops"]
    assert services()["mailgate-ops"]["spec"]["clusterIP"] == "None"  # headless
    assert workload()["spec"]["serviceName"] == "mailgate-ops"


def test_the_public_port_reaches_the_internet_through_the_ingress_with_tls() -> None:
    _ops, public = listener_ports()
    settings = configured()
    ingress = one("Ingress")
    tls_hosts = {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
    paths = []
    for rule in ingress["spec"]["rules"]:
        assert rule["host"] in tls_hosts, rule["host"]
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            service = services()[backend["name"]]
            assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
            (port,) = [
                p
                for p in service["spec"]["ports"]
                if backend["port"].get("name") == p["name"]
                or backend["port"].get("number") == p["port"]
            ]
            assert container_port(port["targetPort"]) == public, path
            paths.append((rule["host"], path["path"], path["pathType"]))
    # Only the two public paths, at the host the links in mail name, over https.
    host = urlsplit(settings.http.public_url).hostname
    assert settings.http.public_url.startswith("https://")
    assert settings.unsubscribe.base_url.startswith("https://")
    assert urlsplit(settings.unsubscribe.base_url).hostname == host
    assert sorted(paths) == [(host, "/status/", "Prefix"), (host, "/u/", "Prefix")]


def test_the_network_policy_opens_only_smtp_to_everyone() -> None:
    ops, public = listener_ports()
    (policy,) = [r for r in resources() if r["kind"] == "NetworkPolicy"]
    assert selects_the_pods(policy["spec"]["podSelector"]["matchLabels"])
    assert "Ingress" in policy["spec"]["policyTypes"]
    open_to_all: set[int] = set()
    restricted: dict[int, list[Any]] = {}
    for rule in policy["spec"]["ingress"]:
        ports = {container_port(p["port"]) for p in rule["ports"]}
        if not rule.get("from"):
            open_to_all |= ports
        for port in ports:
            restricted.setdefault(port, []).extend(rule.get("from", []))
    submission = parse_hostport(configured().submission.listen)[1]
    reports = parse_hostport(configured().inbound.listen)[1]
    assert open_to_all == {submission, reports}
    # The HTTP listeners: from one namespace each (the ingress controller's, Prometheus's).
    for port in (ops, public):
        (source,) = restricted[port]
        assert set(source) == {"namespaceSelector"}, source
    assert restricted[ops] != restricted[public]


# --- one data directory per pod -----------------------------------------------------------


def test_no_two_pods_share_a_data_volume() -> None:
    # A claim named in a pod template is the same volume in every replica: with more than
    # one, the second pod's gateway would find the data directory locked (and, before the
    # lock, shared the first one's node id).
    for r in resources():
        if r["kind"] in WORKLOADS:
            claims = [v for v in r["spec"]["template"]["spec"].get("volumes", [])
                      if "persistentVolumeClaim" in v]  # fmt: skip
            assert r["spec"].get("replicas", 1) == 1 or not claims, r["metadata"]["name"]
    assert not [r for r in resources() if r["kind"] == "PersistentVolumeClaim"]
    statefulset = workload()
    assert statefulset["kind"] == "StatefulSet" and statefulset["spec"]["replicas"] >= 2
    _pod, main = container()
    settings = configured()
    (data,) = [m for m in main["volumeMounts"] if m["mountPath"] == str(settings.server.data_dir)]
    templates = {t["metadata"]["name"]: t for t in statefulset["spec"]["volumeClaimTemplates"]}
    assert templates[data["name"]]["spec"]["accessModes"] == ["ReadWriteOnce"]
    # Several nodes: the one store is PostgreSQL, and each node's id is its pod's name.
    storage = next(e for e in main["env"] if e["name"] == "MAILGATE_STORAGE_URL")
    secret = one("Secret", storage["valueFrom"]["secretKeyRef"]["name"])
    assert secret["stringData"][storage["valueFrom"]["secretKeyRef"]["key"]].startswith(
        "postgresql://"
    )
    node = next(e for e in main["env"] if e["name"] == "MAILGATE_SERVER_NODE_ID")
    assert node["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # What the nodes share comes from one Secret, not from a node's own directory.
    pod, _main = container()
    secrets_mounted = {
        m["mountPath"]
        for m in main["volumeMounts"]
        for v in pod["volumes"]
        if v["name"] == m["name"] and "secret" in v
    }
    for shared in (settings.ref_key_file, settings.status_key_file, settings.admin_token_file):
        assert str(shared.parent) in secrets_mounted, shared
        assert not shared.is_relative_to(settings.server.data_dir), shared


# --- the pod's filesystem ------------------------------------------------------------------


def image_files(root: Path) -> None:
    """What the Dockerfile copies into the image (policies/ without keys/, the settings)."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "COPY policies /etc/mailgate/policies" in dockerfile
    assert "COPY deploy/compose/mailgate.toml /etc/mailgate/mailgate.toml" in dockerfile
    assert "policies/keys/*.pem" in (DEPLOY / "Dockerfile.dockerignore").read_text()
    policies = root / "etc/mailgate/policies"
    copy_shipped(policies)  # what a clean checkout holds: no keys, no local dealers
    shutil.copy(DEPLOY / "compose" / "mailgate.toml", root / "etc/mailgate/mailgate.toml")
    (root / "var/lib/mailgate").mkdir(parents=True)
    (root / "tmp").mkdir()


def image_environment() -> dict[str, str]:
    env = {}
    dockerfile = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    for line in dockerfile.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(MAILGATE_\w+)=(\S+)", line))
    return env


Provided = dict[str, dict[str, bytes]]


def volume_files(volume: Resource, provided: Provided) -> dict[str, bytes]:
    """Path (relative to the mount) -> content of a ConfigMap or Secret volume.

    ``provided``: Secret entries the operator replaces (placeholders) or cert-manager
    creates, by Secret name and key, over what the manifest holds.
    """
    if "configMap" in volume:
        source, name = volume["configMap"], volume["configMap"]["name"]
        data = {k: v.encode() for k, v in one("ConfigMap", name).get("data", {}).items()}
    else:
        source, name = volume["secret"], volume["secret"]["secretName"]
        data = {}
        if [r for r in resources() if r["kind"] == "Secret" and r["metadata"]["name"] == name]:
            secret = one("Secret", name)
            data = {k: v.encode() for k, v in secret.get("stringData", {}).items()}
            data |= {k: base64.b64decode(v) for k, v in secret.get("data", {}).items()}
        data |= provided.get(name, {})
    if "items" in source:
        return {item["path"]: data[item["key"]] for item in source["items"]}
    return data


def mount(root: Path, provided: Provided) -> None:
    """The pod's volumes at ``root``; a claim template is this pod's own empty claim."""
    pod, main = container()
    volumes = {v["name"]: v for v in pod["volumes"]}
    claims = {t["metadata"]["name"] for t in workload()["spec"].get("volumeClaimTemplates", [])}
    for spec in main["volumeMounts"]:
        target = root / spec["mountPath"].lstrip("/")
        if spec["name"] in claims:
            assert spec["name"] not in volumes, "a claim template and a volume share a name"
            target.mkdir(parents=True, exist_ok=True)
            continue
        volume = volumes[spec["name"]]
        if "emptyDir" in volume:
            target.mkdir(parents=True, exist_ok=True)
            continue
        files = volume_files(volume, provided)
        mode = (volume.get("secret") or volume.get("configMap") or {}).get("defaultMode", 0o644)
        if "subPath" in spec:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(files[spec["subPath"]])
            continue
        if target.exists():
            shutil.rmtree(target)  # the mount hides the image's directory
        for relative, content in files.items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            path.chmod(mode)


def rebased(text: str, root: Path) -> str:
    for prefix in ("/etc/mailgate", "/var/lib/mailgate"):
        text = text.replace(prefix, f"{root}{prefix}")
    return text


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    server = await Sink().start()
    yield server
    await server.stop()


def pod_settings(
    root: Path, provided: Provided, sink_port: int, *, pod: str = POD, storage_url: str = ""
) -> Settings:
    """The settings ``mailgate serve`` reads in the pod ``pod``, on a tree made at ``root``.

    ``storage_url``: the operator's PostgreSQL (default: SQLite in the pod's data volume).
    """
    image_files(root)
    mount(root, provided)
    _pod, main = container()
    env = {k: rebased(v, root) for k, v in image_environment().items()}
    for var in main["env"]:
        source = var.get("valueFrom", {})
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name"
            env[var["name"]] = pod
        elif var["name"] == "MAILGATE_STORAGE_URL":  # the operator's PostgreSQL
            env[var["name"]] = storage_url or f"sqlite:///{root}/var/lib/mailgate/mailgate.db"
        else:
            env[var["name"]] = var["value"]
    config = root / "etc/mailgate/mailgate.toml"
    config.write_text(rebased(config.read_text(), root))
    assert main["args"] == ["serve"]
    # Local addresses for the listeners and the upstream, nothing else changed.
    env |= {
        "MAILGATE_SUBMISSION_LISTEN": "127.0.0.1:0",
        "MAILGATE_INBOUND_LISTEN": "127.0.0.1:0",
        "MAILGATE_HTTP_LISTEN": "127.0.0.1:0",
        "MAILGATE_PUBLIC_LISTEN": "127.0.0.1:0",
        "MAILGATE_UPSTREAM_HOST": "127.0.0.1",
        "MAILGATE_UPSTREAM_PORT": str(sink_port),
        "MAILGATE_UPSTREAM_TLS": "none",
    }
    return load_settings(config, env)


def tls_pair(directory: Path) -> dict[str, bytes]:
    """What cert-manager would put in the mailgate-tls Secret."""
    cert, key = ensure_self_signed(directory, "mailgate.example.net")
    return {"tls.crt": cert.read_bytes(), "tls.key": key.read_bytes()}


def shared_keys() -> dict[str, bytes]:
    """The operator's values for the placeholders of mailgate-secrets (``head -c 32``)."""
    return {"ref.key": secrets.token_bytes(32), "status.key": secrets.token_bytes(32)}


def dkim_key() -> tuple[Any, bytes]:
    key = generate_key("rsa")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key, pem


async def add_crm_login(gateway: Gateway) -> None:
    await gateway.storage.set_credential(
        Credential(
            "example-crm",
            DealerId("example-motors"),
            hash_password(PASSWORD, log_n=10),
            gateway.clock.now(),
        )
    )


async def test_the_manifests_run_a_gateway_that_signs(tmp_path: Path, sink: Sink) -> None:
    key, pem = dkim_key()
    placeholder = one("Secret", "mailgate-dkim")["stringData"]
    assert list(placeholder) == ["example-motors.test.mg1.pem"]
    root = tmp_path / "pod"
    provided = {
        "mailgate-dkim": {"example-motors.test.mg1.pem": pem},
        "mailgate-tls": tls_pair(tmp_path / "cert-manager"),
        "mailgate-secrets": shared_keys(),
    }
    settings = pod_settings(root, provided, sink.port)
    policies = root / "etc/mailgate/policies"
    assert settings.server.policies_dir == policies
    # The dealers are the ConfigMap's, their keys the Secret's; defaults from the image.
    assert sorted(p.name for p in (policies / "dealers").iterdir()) == ["example-motors.toml"]
    assert (policies / "defaults.toml").exists() and (policies / "presets").is_dir()
    key_file = policies / "keys" / "example-motors.test.mg1.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o440  # owner and fsGroup only
    assert stat.S_IMODE(settings.ref_key_file.stat().st_mode) == 0o440
    assert settings.server.node_id == POD and settings.server.log_format == "json"
    assert settings.submission.tls_cert is not None and settings.submission.tls_cert.exists()

    gateway = await Gateway.build(settings)
    await add_crm_login(gateway)
    await gateway.start()
    try:
        client = await RawSmtp.connect("127.0.0.1", gateway.submission_port)
        await client.login("example-crm", PASSWORD)
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        assert (await client.cmd("RCPT TO:<customer@example.org>")).code == 250
        reply = await client.data(dot_stuff(message()))
        assert reply.code == 250, reply
        await client.close()
        for _ in range(200):
            if sink.messages:
                break
            await asyncio.sleep(0.05)
    finally:
        await gateway.stop()
    (delivered,) = sink.messages
    assert delivered.data.startswith(b"DKIM-Signature:")
    record = public_record(key).encode()

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mg1._domainkey.example-motors.test."
        return record

    assert dkim.verify(delivered.data, dnsfunc=dns)


async def test_two_pods_run_side_by_side_on_their_own_volumes(
    tmp_path: Path, sink: Sink, pg: PostgresBackend
) -> None:
    _key, pem = dkim_key()
    provided = {  # one Secret: every pod gets the same files
        "mailgate-dkim": {"example-motors.test.mg1.pem": pem},
        "mailgate-tls": tls_pair(tmp_path / "cert-manager"),
        "mailgate-secrets": shared_keys(),
    }
    names = [f"mailgate-{n}" for n in range(workload()["spec"]["replicas"])]
    gateways: list[Gateway] = []
    try:
        for name in names:
            settings = pod_settings(
                tmp_path / name, provided, sink.port, pod=name, storage_url=pg.url
            )
            gateways.append(await Gateway.build(settings))
            await gateways[-1].start()
        first, second = gateways[0], gateways[1]
        assert [g.node for g in gateways] == names  # distinct, stable identities
        assert first.settings.server.data_dir != second.settings.server.data_dir

        # A status link made by one node opens on the other, at the Ingress's https host.
        assert first.status_links is not None and second.status_links is not None
        link = first.status_links.url("example-motors")
        assert link == second.status_links.url("example-motors")
        assert link.startswith(configured().http.public_url + "/status/example-motors/")
        page = await call_public(second, "GET", first.status_links.path("example-motors"))
        assert page.status == 200 and b"Example Motors" in page.raw
        # So does a one-click unsubscribe link made with the other node's tracking key.
        ref_key = first.settings.ref_key_file.read_bytes()
        links = UnsubscribeLinks(ref_key, configured().unsubscribe.base_url, "")
        token = links.token("example-motors", "ann@example.org", "m1.1")
        assert (await call_public(second, "GET", f"/u/{token}")).status == 200

        # Two pods on one data volume (the old layout): the second is refused.
        crowded = second.settings.model_copy(
            update={
                "server": second.settings.server.model_copy(
                    update={"data_dir": first.settings.server.data_dir}
                )
            }
        )
        with pytest.raises(DataDirInUse, match="in use by another mailgate process"):
            await Gateway.build(crowded)
    finally:
        for gateway in reversed(gateways):
            await gateway.stop()


async def test_the_placeholder_shared_keys_stop_the_gateway_from_starting(
    tmp_path: Path, sink: Sink
) -> None:
    _key, pem = dkim_key()
    provided = {
        "mailgate-dkim": {"example-motors.test.mg1.pem": pem},
        "mailgate-tls": tls_pair(tmp_path / "cert-manager"),
    }
    settings = pod_settings(tmp_path / "pod", provided, sink.port)
    with pytest.raises(ConfigError, match=r"ref\.key: tracking key must be 32 bytes"):
        await Gateway.build(settings)


async def test_the_placeholder_key_stops_the_gateway_from_starting(
    tmp_path: Path, sink: Sink
) -> None:
    provided = {
        "mailgate-tls": tls_pair(tmp_path / "cert-manager"),
        "mailgate-secrets": shared_keys(),
    }
    settings = pod_settings(tmp_path / "pod", provided, sink.port)
    with pytest.raises(PolicyError) as refused:
        await Gateway.build(settings)
    assert "keys/example-motors.test.mg1.pem" in str(refused.value)
    assert "is not a PEM private key" in str(refused.value)


def test_kustomize_builds_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (it is not a Debian package; CI has none)")
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    built = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == sorted(
        (r["kind"], r["metadata"]["name"]) for r in resources()
    )
    assert {d["metadata"]["namespace"] for d in built} == {"mailgate"}
