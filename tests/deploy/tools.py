"""Finding the external tools the deployment tests need (promtool, haproxy, chromium)."""

from __future__ import annotations

import os
import shutil

import pytest


def need(tool: str, package: str) -> str:
    """The tool's path; skipped when absent locally, a failure when absent in CI."""
    # /usr/sbin (haproxy) is not on every user's PATH.
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is not None:
        return path
    message = f"{tool} not found (Debian package {package}; .ci/run installs it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)
