"""The check page of the dealer's status site, driven in headless Chromium over WebDriver.

A manager uploads a CRM export and pastes a template; the page shows the gateway's verdict
and each finding with its problem part marked. Checked in the browser: the results, no
script on the page (what was pasted is shown escaped, never run), labels and headings,
colour contrast, and no sideways scrolling at 390 px. Screenshots at 390 and 1000 px go
to the test's directory (and to ``$MAILGATE_SCREENSHOTS_DIR`` when set, for reading). The
same path answers JSON to the dealer's scripts, and refuses cross-site form posts.
"""

from __future__ import annotations

import asyncio
import http.client
from pathlib import Path
from typing import Any

from tests.integration.admin import call, call_public
from tests.integration.conftest import Harness
from tests.integration.test_status_page import png_pixels
from tests.webdriver import FormBrowser

DEALER = "example-motors"
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "messages" / "inspection"

# A CRM export: the HTML body with an unfilled field, and an invoice that is a program.
EXPORT = (
    "From: Example Motors <sales@example-motors.test>\r\n"
    "To: buyer@customer.test\r\n"
    "Subject: Your invoice, {FirstName}\r\n"
    "Date: Mon, 1 Jun 2026 10:00:00 +0000\r\n"
    "Message-ID: <export-1@example-motors.test>\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="mix1"\r\n\r\n'
    '--mix1\r\nContent-Type: multipart/alternative; boundary="alt1"\r\n\r\n'
    "--alt1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    "Dear {FirstName}, your invoice is attached.\r\n"
    "--alt1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    "<html><body><p>Dear {FirstName},</p><p>your invoice is attached.</p></body></html>\r\n"
    "--alt1--\r\n"
    '--mix1\r\nContent-Type: application/octet-stream; name="invoice.pdf.exe"\r\n'
    'Content-Disposition: attachment; filename="invoice.pdf.exe"\r\n'
    "Content-Transfer-Encoding: base64\r\n\r\nTVqQAGhhcm1sZXNz\r\n--mix1--\r\n"
)
PASTED = (
    "<html><body><script>document.title='pwned'</script>"
    "<p>Hi [FIRST NAME], your {{vehicle_model}} is due for service.</p>"
    "<p><a href='https://example-motors.test/book'>Book</a></p></body></html>"
)

NEWSLETTER = (
    "<html><body>"
    + "<p>Spring service offers for every model in our showroom this month.</p>\n" * 1800
    + "<p><a href='https://example-motors.test/unsubscribe'>Unsubscribe</a></p></body></html>"
)


def contrast(fg: str, bg: str) -> float:
    """WCAG 2 contrast ratio of two CSS ``rgb(...)``/``rgba(...)`` colours."""

    def channels(css: str) -> list[float]:
        values = css[css.index("(") + 1 : css.index(")")].split(",")
        return [float(v) / 255 for v in values[:3]]

    def luminance(css: str) -> float:
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels(css)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


_COLOURS = """
const out = [];
for (const sel of arguments[0]) {
  for (const el of document.querySelectorAll(sel)) {
    let bg = 'rgba(0, 0, 0, 0)', node = el;
    while (node && (bg === 'rgba(0, 0, 0, 0)' || bg === 'transparent')) {
      bg = getComputedStyle(node).backgroundColor; node = node.parentElement;
    }
    if (bg === 'rgba(0, 0, 0, 0)') bg = 'rgb(255, 255, 255)';
    out.push([sel, getComputedStyle(el).color, bg]);
  }
}
return out;
"""


def browse(url: str, tmp: Path) -> dict[str, Any]:
    """Upload, paste and screenshot in Chromium; returns what the page showed."""
    seen: dict[str, Any] = {}
    export = tmp / "invoice-template.eml"
    export.write_bytes(EXPORT.encode())
    browser = FormBrowser(tmp / "profile")
    try:
        browser.open(url, 1000)
        seen["title"] = browser.title()
        seen["form_source"] = browser.html()
        browser.type("#file", str(export))
        browser.click("button[type=submit]")
        seen["upload_verdict"] = browser.texts(browser_wait(browser, "#verdict"))[0]
        seen["upload_findings"] = browser.texts("article.finding")
        seen["upload_marks"] = browser.texts("mark")
        seen["upload_lang"] = browser.script("return document.documentElement.lang")
        seen["scripts"] = browser.script("return document.scripts.length")
        seen["labels"] = browser.script(
            "return [...document.querySelectorAll('input,textarea')].filter(e => e.type !== "
            "'hidden').map(e => [e.id, !!document.querySelector(`label[for='${e.id}']`)])"
        )
        seen["headings"] = browser.script(
            "return [...document.querySelectorAll('h1,h2,h3')].map(h => h.tagName)"
        )
        seen["colours"] = browser.script(
            _COLOURS.replace("arguments[0]", str(["body", "#verdict", ".badge", "mark",
                                                  "button", ".muted", "a", "dd", ".where"]))
        )  # fmt: skip
        for width in (390, 1000):
            seen[f"upload_{width}"] = browser.screenshot(tmp / f"check-upload-{width}.png", width)

        browser.open(url, 1000)
        browser.type("#subject", "Service reminder for {FirstName}")
        browser.type("#html", PASTED)
        browser.click("button[type=submit]")
        seen["paste_verdict"] = browser.texts(browser_wait(browser, "#verdict"))[0]
        seen["paste_marks"] = browser.texts("mark")
        seen["paste_title"] = browser.title()
        seen["paste_scripts"] = browser.script("return document.scripts.length")
        seen["paste_textarea"] = browser.script("return document.getElementById('html').value")
        for width in (390, 1000):
            seen[f"paste_{width}"] = browser.screenshot(tmp / f"check-paste-{width}.png", width)

        # A long newsletter exported as .html: where Gmail clips it.
        newsletter = tmp / "spring-newsletter.html"
        newsletter.write_text(NEWSLETTER)
        browser.open(url, 1000)
        browser.type("#subject", "Spring offers")
        browser.type("#file", str(newsletter))
        browser.click("button[type=submit]")
        seen["clip_verdict"] = browser.texts(browser_wait(browser, "#verdict"))[0]
        seen["clip_marks"] = browser.texts("mark.clip")
        seen["clip_text"] = browser.texts(".loc-clipping")[0]
        seen["clip_390"] = browser.screenshot(tmp / "check-clipping-390.png", 390)
    finally:
        browser.close()
    return seen


def browser_wait(browser: FormBrowser, css: str) -> str:
    browser.wait_for(css)
    return css


def post(port: int, path: str, headers: dict[str, str], body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


async def test_check_page_upload_paste_and_narrow_screen(harness: Harness, tmp_path: Path) -> None:
    gw = harness.gateway
    assert gw.status_links is not None
    path = gw.status_links.path(DEALER) + "/check"
    url = f"http://127.0.0.1:{gw.public_port}{path}"
    seen = await asyncio.to_thread(browse, url, tmp_path)

    assert seen["title"] == "Check a message before sending: Example Motors"
    assert 'enctype="multipart/form-data"' in seen["form_source"]
    # The upload: the program held, the unfilled field marked in subject, text and HTML.
    assert seen["upload_verdict"] == "The gateway would hold it for an operator."
    findings = "\n".join(seen["upload_findings"])
    assert "Dangerous attachment" in findings and "Unfilled merge field" in findings
    assert "Hold the message" in findings and "How to fix it" in findings
    assert "invoice.pdf.exe" in seen["upload_marks"]
    assert seen["upload_marks"].count("{FirstName}") == 3  # subject, text, HTML
    assert seen["upload_lang"] == "en"
    # Accessible: every field labelled, one h1 then h2/h3, readable contrast (WCAG AA).
    assert seen["labels"] and all(labelled for _id, labelled in seen["labels"]), seen["labels"]
    assert seen["headings"][0] == "H1" and seen["headings"].count("H1") == 1
    for selector, fg, bg in seen["colours"]:
        assert contrast(fg, bg) >= 4.5, (selector, fg, bg)
    # No script on the page, and the pasted one was shown, not run.
    assert seen["scripts"] == 0 and seen["paste_scripts"] == 0
    assert seen["paste_title"] != "pwned"
    assert seen["paste_textarea"] == PASTED  # the form keeps what was pasted, as text
    assert seen["paste_verdict"].startswith("The gateway would deliver it")
    assert {"[FIRST NAME]", "{{vehicle_model}}", "{FirstName}"} <= set(seen["paste_marks"])
    # The clipping point of the newsletter, and what Gmail would hide.
    assert seen["clip_verdict"].startswith("The gateway would deliver it")
    assert seen["clip_marks"] == ["✂ Gmail clips here (byte 104,448)"]
    assert "1 link after this point, the unsubscribe link among them" in seen["clip_text"]
    # 390 px: nothing wider than the screen.
    assert seen["clip_390"][0] <= 390
    for name in ("upload", "paste"):
        scroll_width, height = seen[f"{name}_390"]
        assert scroll_width <= 390, (name, scroll_width)
        width, shot_height, pixels = png_pixels((tmp_path / f"check-{name}-390.png").read_bytes())
        assert width == 390 and abs(shot_height - height) <= 1  # the whole page
        yellow = sum(1 for p in pixels if p[0] > 240 and p[1] > 220 and p[2] < 80)
        assert yellow > 200, f"no marked excerpt painted at 390 px ({yellow})"


async def test_check_page_refuses_cross_site_posts(harness: Harness) -> None:
    gw = harness.gateway
    assert gw.status_links is not None
    path = gw.status_links.path(DEALER) + "/check"
    port = gw.public_port
    form = b"html=%3Cp%3EHi+%7BName%7D%3C%2Fp%3E&subject=x"
    base = {"Content-Type": "application/x-www-form-urlencoded"}
    ours = f"http://127.0.0.1:{port}"
    cases = [
        ({"Origin": ours}, 200),
        ({"Referer": ours + path}, 200),
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({}, 403),  # neither Origin nor Referer
        ({"Referer": "https://evil.example/page"}, 403),
        ({"Sec-Fetch-Site": "same-origin"}, 200),
        ({"Sec-Fetch-Site": "cross-site", "Origin": ours}, 403),  # Fetch Metadata wins
        ({"Sec-Fetch-Site": "same-site"}, 403),
    ]
    for extra, expected in cases:
        status = await asyncio.to_thread(post, port, path, {**base, **extra}, form)
        assert status == expected, (extra, status)
    wrong = path.replace(gw.status_links.token(DEALER), gw.status_links.token("rival-motors"))
    status = await asyncio.to_thread(post, port, wrong, {**base, "Origin": ours}, form)
    assert status == 404
    # nothing was stored
    assert await gw.storage.list_messages(limit=5) == []


async def test_check_page_headers_allow_no_script(harness: Harness) -> None:
    gw = harness.gateway
    assert gw.status_links is not None
    page = await call_public(gw, "GET", gw.status_links.path(DEALER) + "/check")
    assert page.status == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert "form-action 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["cache-control"] == "no-store"
    assert b"<script" not in page.raw
    # the form's POST carries a real Origin: the page asks for same-origin referrers
    assert b"<meta name='referrer' content='same-origin'>" in page.raw
    # the operators' listener does not serve it
    assert (await call(gw, "GET", gw.status_links.path(DEALER) + "/check")).status == 404


async def test_the_dealers_check_api_on_its_status_path(harness: Harness) -> None:
    gw = harness.gateway
    assert gw.status_links is not None
    path = gw.status_links.path(DEALER) + "/check"
    answer = await call_public(gw, "POST", path, body={"html": PASTED, "subject": "Hi"})
    assert answer.status == 200, answer.raw
    assert answer.body["verdict"] == "tag" and answer.body["stored"] is False
    field = next(f for f in answer.body["findings"] if f["code"] == "unfilled-merge-field")
    assert {loc["text"] for loc in field["locations"]} == {"[FIRST NAME]", "{{vehicle_model}}"}
    answer = await call_public(gw, "POST", path, raw=EXPORT.encode(),
                               content_type="message/rfc822")  # fmt: skip
    assert answer.status == 200 and answer.body["verdict"] == "hold"
    assert (await call_public(gw, "POST", path, body={"eml": "x", "html": "y"})).status == 400
    assert (await call_public(gw, "POST", path, body={"nope": 1})).status == 400
    assert (await call_public(gw, "POST", path, raw=b"[1", content_type="application/json")
            ).status == 400  # fmt: skip
    other = path.replace(gw.status_links.token(DEALER), gw.status_links.token("rival-motors"))
    assert (await call_public(gw, "POST", other, body={"html": PASTED})).status == 404
