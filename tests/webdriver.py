"""``tests.browser.Browser`` with forms: find elements, type into fields, upload a file.

For the tests that fill in and send a page's form (the check page): a file path typed into
a file input uploads that file (W3C WebDriver "Element Send Keys"), and ``wait_for`` waits
out the navigation a form's submission starts. Blocking: call it from a thread while the
gateway runs on the test's event loop.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.browser import PHONE_MAX_WIDTH, Browser

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


class FormBrowser(Browser):
    """A browser session that can fill in forms."""

    def find(self, css: str) -> str:
        """The first element matching ``css`` (WebDriver raises when there is none)."""
        found = self._session_call("POST", "/element", {"using": "css selector", "value": css})
        return str(found[ELEMENT])

    def exists(self, css: str) -> bool:
        return bool(self.find_all(css))

    def find_all(self, css: str) -> list[str]:
        found = self._session_call("POST", "/elements", {"using": "css selector", "value": css})
        return [str(e[ELEMENT]) for e in found]

    def wait_for(self, css: str, timeout: float = 20.0) -> str:
        """The element once it is on the page (after a form's navigation, say)."""
        deadline = time.monotonic() + timeout
        while not self.exists(css):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {css} on the page after {timeout}s: {self.text()[:500]}")
            time.sleep(0.1)
        return self.find(css)

    def type(self, css: str, text: str) -> None:
        """Type ``text`` into the field (a file input: upload the file at that path)."""
        self._session_call("POST", f"/element/{self.find(css)}/value", {"text": text})

    def texts(self, css: str) -> list[str]:
        """The visible text of every element matching ``css``."""
        return [
            str(self._session_call("GET", f"/element/{element}/text"))
            for element in self.find_all(css)
        ]

    def title(self) -> str:
        return str(self._session_call("GET", "/title"))

    def resize(self, width: int) -> None:
        """Lay the page shown now out at ``width`` CSS pixels (no reload)."""
        self._cdp(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1,
             "mobile": width <= PHONE_MAX_WIDTH},
        )  # fmt: skip

    def screenshot(self, path: Path, width: int) -> tuple[int, int]:
        """A full-page PNG at ``width``; returns the page's laid-out (width, height)."""
        self.resize(width)
        size = self.script(
            "const d = document.documentElement;"
            "return [Math.max(d.scrollWidth, d.clientWidth), d.scrollHeight];"
        )
        self.capture(width, path)
        return int(size[0]), int(size[1])
