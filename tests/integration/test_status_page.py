"""The pages a dealer and a recipient see, rendered by headless Chromium from a running gateway.

The status page must show the state and the charts: the DOM Chromium builds is checked for
the state badge and the SVG series, and a screenshot is decoded (a small PNG reader below)
to check that the state badge's colour and the chart line's colour were painted. Then the
status page, the unsubscribe page and the alert e-mail, filled with a dealer's real data
(a manual suspension, complaints, bounces, held mail), are shot at a desktop width (1280
px) and a phone's (390 px): the PNGs are kept in the test's directory (and copied to
``$MAILGATE_SCREENSHOTS_DIR`` when it is set) for a person to look at, and the words on
them are checked.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import struct
import zlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from gateway.app import Gateway
from gateway.datadir import load_or_create_key
from gateway.reputation.records import DayCounts, EventKind, FeedbackEvent, Suppression
from gateway.types import DealerId, MessageId, MessageState, NewMessage
from gateway.unsubscribe.service import UnsubscribeLinks
from gateway.web.status import SERIES_COLOUR, StatusLinks
from tests.browser import Browser
from tests.deploy.tools import need
from tests.integration.admin import add_token, call, call_public, store_message
from tests.integration.conftest import Harness, message

DEALER = "example-motors"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", "--hide-scrollbars"]  # fmt: skip


async def chromium(tmp: Path, *args: str) -> str:
    binary = need("chromium", "chromium")
    proc = await asyncio.create_subprocess_exec(
        binary, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Width, height and RGB pixels of an 8-bit, non-interlaced RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and colour in (2, 6), (depth, colour)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        rows.append(line)
        previous = line
    pixels = [
        (row[x * channels], row[x * channels + 1], row[x * channels + 2])
        for row in rows
        for x in range(width)
    ]
    return width, height, pixels


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def near(a: tuple[int, int, int], b: tuple[int, int, int], tolerance: int = 12) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


MakeHarness = Callable[..., Awaitable[Harness]]
PUBLIC_URL = "https://status.mailgate.test"


async def test_status_page_renders_state_and_chart(
    make_harness: MakeHarness, tmp_path: Path
) -> None:
    harness = await make_harness(http={"public_url": PUBLIC_URL})
    gw = harness.gateway
    assert gw.status_links is not None and gw.admin is not None
    today = gw.clock.now().date()
    for back in range(20):  # three weeks of volume, complaints rising towards the end
        await gw.storage.add_counts(
            DealerId(DEALER),
            today - timedelta(days=back),
            DayCounts(sent=400, delivered=390, complaints=max(0, 3 - back // 5),
                      hard_bounces=8),
        )  # fmt: skip
    await store_message(gw, "status.held.1", MessageState.HELD, findings=("stray-attachment",),
                        rcpt="held.customer@example.org")  # fmt: skip
    token = add_token(gw)
    answer = await call(gw, "POST", f"/api/dealers/{DEALER}/suspend", token=token,
                        body={"reason": "complaint rate 0.77% over 7 days"})  # fmt: skip
    assert answer.status == 200

    path = gw.status_links.path(DEALER)
    # the alert e-mail to the dealer's contacts carries the link
    alert = None
    for _ in range(200):
        alert = next((m for m in harness.sink.messages if b"X-Mailgate-Alert:" in m.data), None)
        if alert is not None:
            break
        await asyncio.sleep(0.05)
    assert alert is not None, "no alert e-mail reached the sink"
    parsed = email.message_from_bytes(alert.data, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    text = parsed.get_body(("plain",))
    assert text is not None and gw.status_links.url(DEALER) in text.get_content()

    page = await call_public(gw, "GET", path)
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    html = page.raw.decode()
    assert "complaint rate 0.77% over 7 days" in html
    assert "held.customer@example.org" not in html and "h***@example.org" in html
    assert "stray-attachment" in html
    # a wrong token or another dealer's token is the same 404 as an unknown dealer
    wrong = path[:-1] + ("0" if path[-1] != "0" else "1")
    assert (await call_public(gw, "GET", wrong)).status == 404
    other = gw.status_links.token("rival-motors")
    assert (await call_public(gw, "GET", f"/status/{DEALER}/{other}")).status == 404
    nobody = StatusLinks(b"k" * 32, "").token("nobody")
    assert (await call_public(gw, "GET", f"/status/nobody/{nobody}")).status == 404
    # the operators' listener does not serve it
    assert (await call(gw, "GET", path)).status == 404

    url = f"http://127.0.0.1:{gw.public_port}{path}"
    dom = await chromium(tmp_path, "--dump-dom", url)
    assert 'id="state"' in dom and "SUSPENDED" in dom
    assert '<svg id="complaint-chart"' in dom and '<svg id="bounce-chart"' in dom
    assert dom.count('class="series"') >= 2
    assert 'class="threshold-suspend"' in dom

    shot = tmp_path / "status.png"
    await chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,1800", url)
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (1000, 1800)
    red = sum(1 for p in pixels if near(p, rgb("#c62828")))
    blue = sum(1 for p in pixels if near(p, rgb(SERIES_COLOUR)))
    assert red > 1500, f"state badge not painted ({red} red pixels)"
    assert blue > 300, f"chart series not painted ({blue} blue pixels)"


SUSPEND_REASON = "Your mail is paused: many recipients say they never asked for it"
NOTE = "ticket 4411: list bought from a broker; call Bob before resuming"
HELD = (
    # (message id, subject header as the CRM wrote it, recipient, findings, note)
    ("held.1", "=?utf-8?q?Winter_tires_=E2=80=93_book_now?=", "ann.lee@example.org",
     ("stray-attachment",), ""),
    ("held.2", "Your service appointment on Friday", "bob.diaz@example.net",
     ("unfilled-merge-field",), ""),
    ("held.3", "Spring service special", "carol@example.com", (),
     "held by delivery after an internal error: KeyError: 'x'"),
)  # fmt: skip


async def fill(gw: Gateway) -> None:
    """Three weeks of a dealer's mail: volume, complaints with subjects, bounces, held mail."""
    today = gw.clock.now().date()
    dealer = DealerId(DEALER)
    for back in range(21):
        await gw.storage.add_counts(
            dealer, today - timedelta(days=back),
            DayCounts(sent=300, delivered=294, complaints=1 if back % 4 == 0 else 0,
                      hard_bounces=6, soft_bounces=2),
        )  # fmt: skip
    complaints = [("Spring service special", "dan@example.org"),
                  ("Spring service special", "erin@example.net"),
                  ("Your trade-in value", "frank@example.com")]  # fmt: skip
    for n, (subject, rcpt) in enumerate(complaints):
        at = gw.clock.now() - timedelta(hours=5 + 20 * n)
        event = FeedbackEvent(dealer, EventKind.COMPLAINT, MessageId(f"sent.{n}"), rcpt, at,
                              "abuse", subject, "smtp:192.0.2.25")  # fmt: skip
        await gw.storage.record_feedback(event, Suppression(dealer, rcpt, "spam complaint",
                                                            f"sent.{n}", at))  # fmt: skip
    at = gw.clock.now() - timedelta(hours=30)
    bounce = FeedbackEvent(dealer, EventKind.HARD_BOUNCE, MessageId("sent.9"),
                           "old.address@example.org", at, "5.1.1 user unknown",
                           "Your trade-in value", "smtp:192.0.2.26")  # fmt: skip
    await gw.storage.record_feedback(bounce)
    for mid, subject, rcpt, findings, note in HELD:
        await gw.storage.enqueue([NewMessage(
            id=MessageId(mid), dealer_id=dealer, mail_from="sales@example-motors.test",
            rcpt=rcpt, data=message(to=rcpt, subject=subject),
            received_at=gw.clock.now() - timedelta(hours=2), state=MessageState.HELD,
            findings=findings, note=note,
        )])  # fmt: skip


async def test_pages_at_desktop_and_phone_widths(make_harness: MakeHarness, tmp_path: Path) -> None:
    h = await make_harness(
        http={"public_url": PUBLIC_URL},
        unsubscribe={"base_url": "https://mailgate.test"},
        alerts={"operators": ["noc@mailgate.test"]},
    )
    gw = h.gateway
    assert gw.status_links is not None
    await fill(gw)
    token = add_token(gw, name="ops-jane")
    answer = await call(gw, "POST", f"/api/dealers/{DEALER}/suspend", token=token,
                        body={"reason": SUSPEND_REASON, "note": NOTE, "for": "72h"})  # fmt: skip
    assert answer.status == 200
    await h.wait_delivered(2)  # the dealer's copy and the operators' copy of the alert
    alert = next(m for m in h.sink.messages if m.rcpt_tos == ["gm@example-motors.test"])
    parsed = email.message_from_bytes(alert.data, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    html_part = parsed.get_body(("html",))
    assert html_part is not None
    alert_file = tmp_path / "alert.html"
    alert_file.write_text(str(html_part.get_content()))

    links = UnsubscribeLinks(load_or_create_key(gw.settings.ref_key_file), "https://mailgate.test")
    unsubscribe = links.token(DEALER, "gina@example.org", "sent.7")
    public = f"http://127.0.0.1:{gw.public_port}"
    pages = {
        "status": f"{public}{gw.status_links.path(DEALER)}",
        "unsubscribe": f"{public}/u/{unsubscribe}",
        "alert": alert_file.as_uri(),
    }
    shots = tmp_path / "screens"
    browser = await asyncio.to_thread(Browser, tmp_path / "chromium-profile")
    seen: dict[tuple[str, int], str] = {}
    try:
        for name, url in pages.items():
            for width in (1280, 390):
                shot = shots / f"{name}-{width}.png"
                await asyncio.to_thread(browser.shot, url, width, shot)
                png_width, png_height, _ = png_pixels(shot.read_bytes())
                assert png_width == width and png_height > 300, (name, width, png_height)
                seen[(name, width)] = await asyncio.to_thread(browser.text)
                if width == 390:
                    assert not await asyncio.to_thread(browser.overflows, width), (
                        f"{name} scrolls sideways on a phone"
                    )
        # The person presses the button: the one-click POST, and the page it answers with.
        await asyncio.to_thread(browser.open, pages["unsubscribe"], 390)
        await asyncio.to_thread(browser.click, "button")
        await asyncio.to_thread(browser.capture, 390, shots / "unsubscribed-390.png")
        seen[("unsubscribed", 390)] = await asyncio.to_thread(browser.text)
    finally:
        await asyncio.to_thread(browser.close)

    status = seen[("status", 390)]
    assert "Suspended by your Mailgate operator on " in status
    assert f"Reason given: {SUSPEND_REASON}." in status
    assert "The suspension ends by itself at " in status
    assert "Your Mailgate operator suspended your mail for the reason above." in status
    for jargon in ("low-volume", "events of volume", "list cleaned since"):
        assert jargon not in status
    assert "Not enough mail yet to judge" not in status  # 7 days of 300 a day is enough
    assert "Spam complaints" in status and "At the suspension level" in status
    assert "Where you stand" in seen[("status", 1280)]  # a column head; a label on a phone
    # the held table names each message: when, subject, to whom (masked), why
    assert "Winter tires – book now" in status
    assert "Your service appointment on Friday" in status
    assert "a***@example.org" in status and "ann.lee@example.org" not in status
    assert "stray-attachment" in status and "unfilled-merge-field" in status
    assert "Held by the gateway for your operator to look at; it is not lost." in status
    assert "KeyError" not in status  # the operators' note stays with them
    for secret in ("ticket 4411", "ops-jane"):
        assert secret not in status

    for width in (1280, 390):
        page = seen[("unsubscribe", width)]
        assert "Unsubscribe from Example Motors" in page
        assert "Stop marketing e-mail from Example Motors to gina@example.org?" in page
        assert "this sender" not in page

    done = seen[("unsubscribed", 390)]
    assert "gina@example.org will get no more marketing e-mail from Example Motors." in done
    now = gw.clock.now()
    entry = await gw.storage.find_suppression(DealerId(DEALER), "gina@example.org", now)
    assert entry is not None and entry.reason == "unsubscribe request"

    mail = seen[("alert", 390)]
    assert SUSPEND_REASON in mail
    assert "Your gateway operator suspended your mail for the reason given above." in mail
    assert "Reply to this message (it reaches noc@mailgate.test)" in mail
    assert "below" not in mail.split("What to do next", 1)[1]
    assert "ticket 4411" not in mail and "ops-jane" not in mail
