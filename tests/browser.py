"""Headless Chromium through chromedriver (W3C WebDriver over HTTP, stdlib only).

``Browser.shot(url, width, path)`` loads a page at a viewport width, as a phone does when the
width is small (device emulation: the page's ``<meta name=viewport>`` applies), and saves a
full-page PNG; ``text`` and ``html`` return what the page shows. Used by the page tests to
look at what a dealer or a recipient sees.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64decode
from pathlib import Path
from typing import Any

from tests.deploy.tools import need

PHONE_MAX_WIDTH = 500  # narrower viewports are emulated as a phone (touch, mobile layout)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Browser:
    """One chromedriver process and one headless Chromium session."""

    def __init__(self, profile: Path) -> None:
        driver = need("chromedriver", "chromium-driver")
        binary = need("chromium", "chromium")
        self._port = _free_port()
        self._proc = subprocess.Popen(
            [driver, f"--port={self._port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                self._call("GET", "/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    self._proc.kill()
                    raise
                time.sleep(0.1)
        options = {
            "binary": binary,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                     "--disable-background-networking", "--no-first-run",
                     f"--user-data-dir={profile}", "--window-size=1280,900"],
        }  # fmt: skip
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}}
        self._session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self._port}{path}", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def _session_call(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, f"/session/{self._session}{path}", body)

    def _cdp(self, cmd: str, params: dict[str, Any]) -> Any:
        return self._session_call("POST", "/goog/cdp/execute", {"cmd": cmd, "params": params})

    def open(self, url: str, width: int) -> None:
        """Load ``url`` in a viewport ``width`` CSS pixels wide."""
        self._cdp(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1,
             "mobile": width <= PHONE_MAX_WIDTH},
        )  # fmt: skip
        self._session_call("POST", "/url", {"url": url})

    def script(self, source: str) -> Any:
        """Run ``source`` (a function body) in the page and return its value."""
        return self._session_call("POST", "/execute/sync", {"script": source, "args": []})

    def text(self) -> str:
        """The page's visible text."""
        return str(self.script("return document.body.innerText;"))

    def html(self) -> str:
        """The page's DOM as HTML."""
        return str(self.script("return document.documentElement.outerHTML;"))

    def overflows(self, width: int) -> bool:
        """True when the page is laid out wider than ``width`` (the screen it was opened at).

        A page without a viewport meta tag is laid out 980 px wide on a phone and shrunk,
        so this is true for it as well as for one that scrolls sideways.
        """
        laid_out = self.script(
            "const d = document.documentElement; return Math.max(d.scrollWidth, d.clientWidth);"
        )
        return int(laid_out) > width + 1

    def click(self, css: str) -> None:
        """Click the first element matching the CSS selector ``css``."""
        found = self._session_call("POST", "/element", {"using": "css selector", "value": css})
        element = next(iter(found.values()))
        self._session_call("POST", f"/element/{element}/click", {})

    def shot(self, url: str, width: int, path: Path) -> Path:
        """A full-page PNG of ``url`` at ``width``, saved to ``path`` (and the copy folder)."""
        self.open(url, width)
        return self.capture(width, path)

    def capture(self, width: int, path: Path) -> Path:
        """A full-page PNG of the page shown now (opened at ``width``), saved to ``path``."""
        size = self._cdp("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": width, "height": int(size["height"]) + 1, "scale": 1}
        shot = self._cdp(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b64decode(shot["data"]))
        keep = os.environ.get("MAILGATE_SCREENSHOTS_DIR")
        if keep:  # a folder where a person looks at them after the run
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / path.name)
        return path

    def close(self) -> None:
        """End the session and the driver."""
        try:
            self._call("DELETE", f"/session/{self._session}")
        finally:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
