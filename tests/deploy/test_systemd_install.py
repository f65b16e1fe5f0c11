"""The systemd install, as the README gives it, in a throw-away root: the unit and the paths.

``systemd-analyze verify`` checks the unit as shipped (with ``/opt/mailgate`` made to exist
in a private mount namespace, so nothing is installed on this machine). Then a throw-away
root gets what the README installs: the virtualenv at ``/opt/mailgate``, the settings at
``/etc/mailgate/mailgate.toml`` (the example file with ``server.data_dir`` and
``server.policies_dir`` set as the README says), the policies at ``/etc/mailgate/policies``
and the state directory. In it, the gateway runs exactly as the unit runs it (its
``Environment=``, ``WorkingDirectory=`` and ``ExecStart=``), and ``mailgate admin token
create`` runs twice: as the unit would (same environment, directory and config), and as an
operator types it on the host (another directory, no variables, no ``--config``: the
system settings file is found by itself). Both tokens must open the running gateway's API,
i.e. both were written where the gateway reads them. A settings file that leaves the data
directory relative must make the command refuse, not write a token elsewhere.

Needs root (mount namespaces, chroot) and ``unshare``: skipped without them, failed in CI.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.tools import need
from tests.procs import free_port
from tests.shipped import copy_shipped

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "mailgate.service"
EXAMPLE = REPO / "deploy" / "mailgate.toml.example"
DATA_DIR = "/var/lib/mailgate"
POLICIES_DIR = "/etc/mailgate/policies"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need_namespaces() -> str:
    unshare = need("unshare", "util-linux")
    probe = subprocess.run([unshare, "--mount", "true"], capture_output=True, check=False)
    if os.geteuid() != 0 or probe.returncode != 0:
        message = "needs root and mount namespaces (unshare --mount)"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return unshare


def unit_service() -> configparser.SectionProxy:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    return unit["Service"]


def unit_environment() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        if line.startswith("Environment="):
            for item in shlex.split(line.removeprefix("Environment=")):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def _run_in_namespace(
    unshare: str, script: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (sh) as root in a private mount namespace; nothing leaks out of it."""
    proc = subprocess.Popen(
        [unshare, "--mount", "--propagation", "private", "sh", "-euc", script],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"timed out:\n{out}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = need("systemd-analyze", "systemd")
    unshare = _need_namespaces()
    if not Path("/usr/local/share/man").is_dir():
        pytest.skip("no /usr/local/share/man to mount the manual page on")
    service = unit_service()
    assert service["ExecStart"].split()[0] == "/opt/mailgate/bin/mailgate"
    units = tmp_path / "units"
    units.mkdir()
    shutil.copy(UNIT, units / "mailgate.service")
    broken = UNIT.read_text().replace(
        "ExecStart=/opt/mailgate/bin/mailgate", "ExecStart=/opt/mailgate/bin/absent"
    )
    assert broken != UNIT.read_text()
    (units / "broken").mkdir()
    (units / "broken" / "mailgate.service").write_text(broken)
    # /opt/mailgate and the manual page exist only inside the namespace: this virtualenv
    # and `mailgate man`, installed as the README says (the unit's Documentation= is checked).
    man_dir = "/usr/local/share/man"
    mount_opt = "\n".join([
        "mount -t tmpfs tmpfs /opt && mkdir /opt/mailgate",
        f"mount --bind {sys.prefix} /opt/mailgate",
        f"mount -t tmpfs tmpfs {man_dir} && mkdir {man_dir}/man1",
        f"/opt/mailgate/bin/mailgate man > {man_dir}/man1/mailgate.1",
    ])  # fmt: skip
    good = _run_in_namespace(unshare, f"{mount_opt}\n{analyze} verify {units}/mailgate.service")
    assert good.returncode == 0 and good.stdout.strip() == "", good.stdout
    # and verify does look: the same unit with a missing ExecStart binary fails
    bad = _run_in_namespace(
        unshare, f"{mount_opt}\n{analyze} verify {units}/broken/mailgate.service || echo failed=$?"
    )
    assert "bin/absent is not executable" in bad.stdout and "failed=" in bad.stdout


def test_unit_names_its_directories() -> None:
    service = unit_service()
    env = unit_environment()
    assert service["WorkingDirectory"] == DATA_DIR
    assert env["MAILGATE_SERVER_DATA_DIR"] == DATA_DIR
    assert env["MAILGATE_SERVER_POLICIES_DIR"] == POLICIES_DIR
    assert service["StateDirectory"] == "mailgate" and DATA_DIR in service["ReadWritePaths"]
    assert "--config /etc/mailgate/mailgate.toml" in service["ExecStart"]


def readme_settings(data_dir: str = DATA_DIR) -> str:
    """The example settings file, edited as the README's install step says (ports: free ones)."""
    text = EXAMPLE.read_text()
    text, n = re.subn(r'(?m)^data_dir = "[^"]*"', f'data_dir = "{data_dir}"', text)
    assert n == 1
    text, n = re.subn(r'(?m)^policies_dir = "[^"]*"', f'policies_dir = "{POLICIES_DIR}"', text)
    assert n == 1
    # this machine runs other gateways: every listener on a free loopback port
    text = re.sub(r'(?m)^listen = "[^"]*"', lambda _m: f'listen = "127.0.0.1:{free_port()}"', text)
    text = re.sub(r'(?m)^# hostname = "[^"]*"', 'hostname = "mailgate.install.test"', text)
    return text


def http_port(settings: str) -> int:
    section = settings.split("\n[http]", 1)[1]
    match = re.search(r'(?m)^listen = "127\.0\.0\.1:(\d+)"', section)
    assert match is not None
    return int(match.group(1))


def test_the_cli_on_the_host_uses_the_gateway_store_and_token_file(tmp_path: Path) -> None:
    unshare = _need_namespaces()
    root = tmp_path / "root"
    etc = root / "etc" / "mailgate"
    etc.mkdir(parents=True)
    settings = readme_settings()
    (etc / "mailgate.toml").write_text(settings)
    (etc / "relative.toml").write_text(EXAMPLE.read_text())  # data_dir "var", as shipped
    copy_shipped(root / POLICIES_DIR.lstrip("/"))
    (root / DATA_DIR.lstrip("/")).mkdir(parents=True, mode=0o750)  # StateDirectory=
    for name in ("usr", "dev", "proc", "tmp", "opt/mailgate", "home/operator", "out"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for name in ("bin", "sbin", "lib", "lib64"):
        if Path(f"/usr/{name}").is_dir():
            (root / name).symlink_to(f"usr/{name}")

    # The interpreter and this checkout at their own paths (the virtualenv points there),
    # the virtualenv also at /opt/mailgate.
    binds: list[str] = []
    for path in sorted({"/usr", sys.base_prefix, sys.prefix, str(REPO)}):
        if any(path != other and path.startswith(other + "/") for other in binds):
            continue
        binds.append(path)
    mounts = [f"mkdir -p {root}{p} && mount --rbind {p} {root}{p}" for p in binds]
    mounts += [
        f"mount --rbind /dev {root}/dev",
        f"mount --rbind /proc {root}/proc",
        f"mount -t tmpfs tmpfs {root}/tmp",
        f"mount --bind {sys.prefix} {root}/opt/mailgate",
    ]
    service = unit_service()
    unit_env = " ".join(f"{k}={shlex.quote(v)}" for k, v in unit_environment().items())
    host_env = "PATH=/usr/bin:/bin HOME=/home/operator LANG=C.UTF-8"
    port = http_port(settings)
    mailgate = "/opt/mailgate/bin/mailgate"
    probe = f"import urllib.request as u; u.urlopen('http://127.0.0.1:{port}/healthz', timeout=1)"
    inside = f"""
set -u
host="env -i {host_env}"
unit="env -i {host_env} {unit_env}"
mailgate={mailgate}
cd {service["WorkingDirectory"]}
$unit {service["ExecStart"]} > /out/serve.log 2>&1 &
gateway=$!
trap 'kill -TERM $gateway 2>/dev/null || true' EXIT
up=no
for i in $(seq 1 150); do
  if /opt/mailgate/bin/python -c "{probe}" 2>/dev/null; then up=yes; break; fi
  sleep 0.2
done
echo "up=$up"
# as the unit would: its environment, its working directory, its config
$unit $mailgate --config /etc/mailgate/mailgate.toml admin token create --name unit \\
  > /out/unit.out 2>&1 || echo "unit-rc=$?"
# as the operator types it on the host: elsewhere, no variables, no --config
cd /home/operator
$host $mailgate admin token create --name operator > /out/operator.out 2>&1 \\
  || echo "operator-rc=$?"
for who in unit operator; do
  token=$(grep '^mgt_' /out/$who.out || true)
  $host MAILGATE_ADMIN_TOKEN="$token" $mailgate admin health --json > /out/$who.health 2>&1 \\
    || echo "$who-health-rc=$?"
done
# a settings file that leaves data_dir relative: refused, nothing written here
$host MAILGATE_CONFIG=/etc/mailgate/relative.toml $mailgate admin token create \\
  > /out/relative.out 2>&1 || echo "relative-rc=$?"
ls -A /home/operator > /out/home.ls
kill -TERM $gateway; wait $gateway || echo "serve-rc=$?"
trap - EXIT
"""
    (root / "inside.sh").write_text(inside)
    outer = "\n".join([*mounts, f"exec chroot {root} /bin/sh /inside.sh"])
    done = _run_in_namespace(unshare, outer)
    out = root / "out"
    log = (out / "serve.log").read_text() if (out / "serve.log").exists() else ""
    assert "up=yes" in done.stdout, f"{done.stdout}\n--- serve.log ---\n{log}"
    for who in ("unit", "operator"):
        created = (out / f"{who}.out").read_text()
        assert f"{who}-rc" not in done.stdout, created
        assert f"added to {DATA_DIR}/admin-tokens" in created, created
        health = (out / f"{who}.health").read_text()
        assert f"{who}-health-rc" not in done.stdout, health
        assert '"storage": "ok"' in health, health
    assert "relative-rc=2" in done.stdout
    refused = (out / "relative.out").read_text()
    assert "no Mailgate data at /home/operator/var/mailgate.db" in refused, refused
    assert "settings from /etc/mailgate/relative.toml" in refused
    assert (out / "home.ls").read_text() == ""  # no var/ in the operator's directory
    assert "serve-rc" not in done.stdout, log  # SIGTERM: a clean exit
    tokens = (root / DATA_DIR.lstrip("/") / "admin-tokens").read_text()
    assert "unit" in tokens and "operator" in tokens
