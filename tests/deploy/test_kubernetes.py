"""The Kubernetes manifests deliver a working, signing gateway, and the rules see its pods.

No cluster runs here, so the test does what the cluster would, from the manifests as
kustomize lists them:

* the pod's filesystem: the image's files (the Dockerfile's COPY lines), then every
  volumeMount of the container from the ConfigMap, Secret, PVC or emptyDir it names
  (items, subPath and defaultMode as Kubernetes applies them; a mount hides what the
  image had there), then the container's environment; the gateway is started on that
  tree, with only the placeholders an operator must replace filled in (a DKIM key, the
  TLS pair cert-manager would provide, a database) and the addresses made local. A
  message submitted as the example dealer must arrive DKIM-signed and verify;
* the labels of a scrape: the Prometheus Operator's relabelling of a PodMonitor target
  (``job`` is ``<namespace>/<name>`` unless ``jobLabel`` names a pod label; then
  ``namespace``, ``pod``, ``container``, ``endpoint``), and ``promtool test rules`` runs
  MailgateDown against a pod with exactly those labels.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dkim
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from gateway.app import Gateway
from gateway.dkim.keys import generate_key, public_record
from gateway.errors import PolicyError
from gateway.passwords import hash_password
from gateway.settings import Settings, load_settings
from gateway.smtp.tls import ensure_self_signed
from gateway.types import Credential, DealerId
from tests.deploy.tools import need
from tests.integration.conftest import PASSWORD, dot_stuff, message
from tests.shipped import copy_shipped
from tests.sinks import Sink
from tests.smtpclient import RawSmtp

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
POD = "mailgate-5f7c9d8b6-x2x7q"
POD_IP = "10.1.2.3"

Resource = dict[str, Any]


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


def container() -> tuple[Resource, Resource]:
    """The Deployment's pod spec and its one container."""
    pod = one("Deployment")["spec"]["template"]["spec"]
    (only,) = pod["containers"]
    return pod, only


# --- the labels of a scrape --------------------------------------------------------------


def scrape_labels() -> dict[str, str]:
    """The target labels the Prometheus Operator gives one pod of the Deployment.

    As prometheus-operator's generatePodMonitorConfig: ``job`` first from the PodMonitor's
    namespace and name, then from the pod label ``jobLabel`` names when the pod has it,
    then the endpoint's own relabelings (only ``replace`` is used by anyone here).
    """
    monitor = one("PodMonitor")
    deployment = one("Deployment")
    template = deployment["spec"]["template"]
    _pod, main = container()
    pod_labels: dict[str, str] = template["metadata"]["labels"]
    assert all(
        pod_labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items()
    ), "the PodMonitor does not select the Deployment's pods"
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


def volume_files(volume: Resource, provided: dict[str, dict[str, bytes]]) -> dict[str, bytes]:
    """Path (relative to the mount) -> content of a ConfigMap or Secret volume."""
    if "configMap" in volume:
        source, name = volume["configMap"], volume["configMap"]["name"]
        data = {k: v.encode() for k, v in one("ConfigMap", name).get("data", {}).items()}
    else:
        source, name = volume["secret"], volume["secret"]["secretName"]
        if name in provided:  # what the operator replaces, or what cert-manager creates
            data = provided[name]
        else:
            secret = one("Secret", name)
            data = {k: v.encode() for k, v in secret.get("stringData", {}).items()}
            data |= {k: base64.b64decode(v) for k, v in secret.get("data", {}).items()}
    if "items" in source:
        return {item["path"]: data[item["key"]] for item in source["items"]}
    return data


def mount(root: Path, provided: dict[str, dict[str, bytes]]) -> None:
    pod, main = container()
    volumes = {v["name"]: v for v in pod["volumes"]}
    for spec in main["volumeMounts"]:
        target = root / spec["mountPath"].lstrip("/")
        volume = volumes[spec["name"]]
        if "persistentVolumeClaim" in volume or "emptyDir" in volume:
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


def pod_settings(root: Path, provided: dict[str, dict[str, bytes]], sink_port: int) -> Settings:
    """The settings ``mailgate serve`` reads in the pod, on a tree made at ``root``."""
    image_files(root)
    mount(root, provided)
    _pod, main = container()
    env = {k: rebased(v, root) for k, v in image_environment().items()}
    for var in main["env"]:
        source = var.get("valueFrom", {})
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name"
            env[var["name"]] = POD
        elif var["name"] == "MAILGATE_STORAGE_URL":  # the operator's PostgreSQL, here SQLite
            env[var["name"]] = f"sqlite:///{root}/var/lib/mailgate/mailgate.db"
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
        "MAILGATE_UPSTREAM_HOST": "127.0.0.1",
        "MAILGATE_UPSTREAM_PORT": str(sink_port),
        "MAILGATE_UPSTREAM_TLS": "none",
    }
    return load_settings(config, env)


def tls_pair(directory: Path) -> dict[str, bytes]:
    """What cert-manager would put in the mailgate-tls Secret."""
    cert, key = ensure_self_signed(directory, "mailgate.example.net")
    return {"tls.crt": cert.read_bytes(), "tls.key": key.read_bytes()}


async def test_the_manifests_run_a_gateway_that_signs(tmp_path: Path, sink: Sink) -> None:
    key = generate_key("rsa")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    placeholder = one("Secret", "mailgate-dkim")["stringData"]
    assert list(placeholder) == ["example-motors.test.mg1.pem"]
    root = tmp_path / "pod"
    provided = {
        "mailgate-dkim": {"example-motors.test.mg1.pem": pem},
        "mailgate-tls": tls_pair(tmp_path / "cert-manager"),
    }
    settings = pod_settings(root, provided, sink.port)
    policies = root / "etc/mailgate/policies"
    assert settings.server.policies_dir == policies
    # The dealers are the ConfigMap's, their keys the Secret's; defaults from the image.
    assert sorted(p.name for p in (policies / "dealers").iterdir()) == ["example-motors.toml"]
    assert (policies / "defaults.toml").exists() and (policies / "presets").is_dir()
    key_file = policies / "keys" / "example-motors.test.mg1.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o440  # owner and fsGroup only
    assert settings.server.node_id == POD and settings.server.log_format == "json"
    assert settings.submission.tls_cert is not None and settings.submission.tls_cert.exists()

    gateway = await Gateway.build(settings)
    await gateway.storage.set_credential(
        Credential(
            "example-crm",
            DealerId("example-motors"),
            hash_password(PASSWORD, log_n=10),
            gateway.clock.now(),
        )
    )
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


async def test_the_placeholder_key_stops_the_gateway_from_starting(
    tmp_path: Path, sink: Sink
) -> None:
    settings = pod_settings(
        tmp_path / "pod", {"mailgate-tls": tls_pair(tmp_path / "cert-manager")}, sink.port
    )
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
