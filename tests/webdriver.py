"""A small W3C WebDriver client over chromedriver, for tests that fill in and send forms.

Plain HTTP to a chromedriver process on loopback (https://www.w3.org/TR/webdriver2/): a
session with headless Chromium, navigation, finding elements, typing (a file path typed
into a file input uploads it), clicking, reading text, and screenshots at a given viewport
width through the Chrome DevTools commands chromedriver forwards (``goog/cdp/execute``).
Blocking: call it from a thread while the gateway runs on the test's event loop.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.deploy.tools import need

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--no-first-run", "--hide-scrollbars",
        "--force-device-scale-factor=1"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WebDriverError(AssertionError):
    """chromedriver answered with an error."""


class Browser:
    """One chromedriver process and one Chromium session."""

    def __init__(self, profile: Path) -> None:
        driver = need("chromedriver", "chromium-driver")
        binary = need("chromium", "chromium")
        self.port = _free_port()
        self._proc = subprocess.Popen(
            [driver, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                if self._call("GET", "/status")["ready"]:
                    break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                self._proc.kill()
                raise WebDriverError("chromedriver did not start")
            time.sleep(0.1)
        caps = {"browserName": "chrome", "goog:chromeOptions": {
            "binary": binary, "args": [*ARGS, f"--user-data-dir={profile}"]}}  # fmt: skip
        try:
            answer = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        except BaseException:
            self._proc.kill()
            raise
        self.session = str(answer["sessionId"])

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=90) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as exc:
            raise WebDriverError(exc.read().decode(errors="replace")[:2000]) from None

    def _s(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self._s("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        return str(self._s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT])

    def wait_for(self, css: str, timeout: float = 20.0) -> str:
        """The element once it is on the page (after a form's navigation, say)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.find(css)
            except WebDriverError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def find_all(self, css: str) -> list[str]:
        found = self._s("POST", "/elements", {"using": "css selector", "value": css})
        return [str(e[ELEMENT]) for e in found]

    def type(self, element: str, text: str) -> None:
        self._s("POST", f"/element/{element}/value", {"text": text})

    def click(self, element: str) -> None:
        self._s("POST", f"/element/{element}/click", {})

    def text(self, element: str) -> str:
        return str(self._s("GET", f"/element/{element}/text"))

    def source(self) -> str:
        return str(self._s("GET", "/source"))

    def title(self) -> str:
        return str(self._s("GET", "/title"))

    def script(self, code: str) -> Any:
        """Run ``code`` as the test (DevTools, not the page: the page's CSP does not apply)."""
        return self._s("POST", "/execute/sync", {"script": code, "args": []})

    def cdp(self, cmd: str, **params: Any) -> Any:
        return self._s("POST", "/goog/cdp/execute", {"cmd": cmd, "params": params})

    def viewport(self, width: int, height: int = 900) -> None:
        """Emulate a ``width`` CSS pixels wide viewport (a 390 px phone, a desktop)."""
        self.cdp("Emulation.setDeviceMetricsOverride", width=width, height=height,
                 deviceScaleFactor=1, mobile=width < 600)  # fmt: skip

    def screenshot(self, path: Path, width: int) -> tuple[int, int]:
        """A full-page PNG at ``width``; returns the page's (scroll width, height)."""
        self.viewport(width)
        size = self.script(
            "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
        )
        clip = {"x": 0, "y": 0, "width": width, "height": size[1], "scale": 1}
        shot = self.cdp("Page.captureScreenshot", captureBeyondViewport=True, clip=clip)
        path.write_bytes(base64.b64decode(shot["data"]))
        return int(size[0]), int(size[1])

    def close(self) -> None:
        try:
            self._s("DELETE", "")
        except (WebDriverError, OSError):
            pass
        finally:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
