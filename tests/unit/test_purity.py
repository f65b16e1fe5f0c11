"""The pure core loads no I/O: importing it pulls in no storage, settings, SMTP or event loop."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PURE = [
    "gateway.pipeline",
    "gateway.intake.prepare",
    "gateway.intake.repair",
    "gateway.mail.message",
    "gateway.mail.mimetree",
    "gateway.mail.rewrite",
    "gateway.mail.addresses",
    "gateway.unsubscribe.links",
    "gateway.duplicates.fingerprints",
    "gateway.tracking",
    "gateway.tokens",
    "gateway.clock",
    "gateway.mail.addresslists",
    "gateway.reputation.csvformat",
    "gateway.consent.csvformat",
    "gateway.policy.options",
    "gateway.policy.model",
    "gateway.delivery.backoff",
    "gateway.dns.dmarc",
]
FORBIDDEN = (
    "gateway.storage",
    "gateway.settings",
    "gateway.smtp",
    "gateway.admin",
    "gateway.web",
    "gateway.cli",
    "gateway.app",
    "gateway.metrics",
    "aiosmtpd",
    "aiosmtplib",
    "aiosqlite",
    "asyncpg",
    "asyncio",
)


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_imports_no_io(module: str) -> None:
    # A fresh interpreter: this test process has imported everything already.
    code = f"import {module}, sys, json; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                       capture_output=True, text=True).stdout)  # fmt: skip
    bad = [m for m in loaded if m in FORBIDDEN or m.startswith(tuple(p + "." for p in FORBIDDEN))]
    assert not bad, f"{module} loads {bad}"
