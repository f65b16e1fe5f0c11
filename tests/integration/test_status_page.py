"""The dealers' status page, rendered by headless Chromium from a running gateway.

The page must show the state and the charts: the DOM Chromium builds is checked for the
state badge and the SVG series, and a screenshot is decoded (a small PNG reader below)
to check that the state badge's colour and the chart line's colour were painted.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import struct
import zlib
from datetime import timedelta
from pathlib import Path

from gateway.reputation.records import DayCounts
from gateway.types import DealerId, MessageState
from gateway.web.status import SERIES_COLOUR, StatusLinks
from tests.deploy.tools import need
from tests.integration.admin import add_token, call, store_message
from tests.integration.conftest import Harness

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


async def test_status_page_renders_state_and_chart(harness: Harness, tmp_path: Path) -> None:
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

    page = await call(gw, "GET", path)
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    html = page.raw.decode()
    assert "complaint rate 0.77% over 7 days" in html
    assert "held.customer@example.org" not in html and "h***@example.org" in html
    assert "stray-attachment" in html
    # a wrong token or another dealer's token is the same 404 as an unknown dealer
    assert (await call(gw, "GET", path[:-1] + ("0" if path[-1] != "0" else "1"))).status == 404
    other = gw.status_links.token("rival-motors")
    assert (await call(gw, "GET", f"/status/{DEALER}/{other}")).status == 404
    assert (await call(gw, "GET", f"/status/nobody/{StatusLinks(b'k' * 32, '').token('nobody')}")
            ).status == 404  # fmt: skip

    url = f"http://127.0.0.1:{gw.http_port}{path}"
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
