"""The admin API keeps the contract of its own ``/api/openapi.json``: a bounded schemathesis pass.

A real gateway process serves the API on loopback; schemathesis reads the description from
it and runs every phase (coverage, fuzzing, stateful) against every operation with every
check: no 5xx, only documented statuses, content types and headers, responses that match
their schemas, schema-valid requests accepted, schema-violating ones refused, the token
required, ``Allow`` on a 405 naming exactly the documented methods. The seed and the number
of cases per operation are fixed, so a failure reproduces (the output gives the ``curl``
line); what it found before its first run was fixed in ``gateway/admin`` (a 500 on an
``after`` beyond 64 bits, Starlette's own 405 naming undocumented methods, blank reasons,
durations and consent fields the description allowed and the handlers refused). The two
consent rules no schema can state (not after tomorrow, a last payment not before the sale)
are kept for the cases meant to be valid by ``contract_hooks.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gateway.admin.tokens import create_token
from tests.deploy.tools import need
from tests.integration.conftest import policies_dir
from tests.procs import free_port, write_config

REPO = Path(__file__).resolve().parents[2]
SEED = 20261206
CASES = 25  # per operation and phase; the run stays under a minute on two cores


def _schemathesis() -> str:
    beside = Path(sys.executable).parent / "schemathesis"
    if beside.exists():
        return str(beside)
    return need("schemathesis", "schemathesis (pip, in .[dev])")


@pytest.mark.slow
@pytest.mark.timeout(300)  # schemathesis itself is given 240 s
def test_the_admin_api_keeps_its_openapi_description(tmp_path: Path) -> None:
    schemathesis = _schemathesis()
    http = free_port()
    data = tmp_path / "var"
    config = write_config(
        tmp_path / "mailgate.toml",
        {
            "server": {
                "hostname": "mailgate.test",
                "data_dir": str(data),
                "policies_dir": str(policies_dir(tmp_path)),
                "log_level": "warning",
            },
            "submission": {"listen": f"127.0.0.1:{free_port()}"},
            "http": {"listen": f"127.0.0.1:{http}"},
        },
    )
    data.mkdir()
    token = create_token(data / "admin-tokens", "contract")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env["PYTHONPATH"] = str(REPO)
    env["SCHEMATHESIS_HOOKS"] = "tests.integration.contract_hooks"
    log = (tmp_path / "gateway.log").open("wb")
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--config", str(config), "serve"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{http}/api/openapi.json"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                assert gateway.poll() is None, (tmp_path / "gateway.log").read_text()
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.2)
        done = subprocess.run(
            [
                schemathesis, "--no-color", "run", url,
                "--header", f"Authorization: Bearer {token}",
                "--checks", "all",
                "--max-examples", str(CASES),
                "--seed", str(SEED),
                "--workers", "2",
                "--generation-database", "none",
                "--request-timeout", "10",
            ],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
    finally:
        os.killpg(gateway.pid, signal.SIGTERM)
        try:
            gateway.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(gateway.pid, signal.SIGKILL)
            gateway.wait()
        log.close()
    report = done.stdout[-12000:] + done.stderr[-3000:]
    assert done.returncode == 0, report
    assert "passed" in done.stdout and " failures" not in done.stdout, report
    shutil.rmtree(tmp_path / ".hypothesis", ignore_errors=True)
