"""A dealer's day, end to end: what it sent, what came back, and what the dealer is told.

The dealer's CRM sends a day of mixed mail through real SMTP sessions: a follow-up to six
customers at Gmail, Outlook, Yahoo and at company domains hosted by Google and Microsoft
(told apart by their MX, from a DNS server on loopback), the same follow-up again to two of
them (duplicates), an offer to one who already had one today (the frequency cap), an
``unknown1.txt`` message (repaired), an invoice that is a program (held), a customer whose
server defers once and one whose server refuses. A hard and a soft bounce and a complaint
come back through the inbound listener. Then the day's report e-mail reaches the dealer's
contact at the sink with the right numbers, once, and the contact's unsubscribe link works.
The status page shows the same day: what was stopped and fixed, delivery per provider, the
held message with its subject, a dot for the day on the complaint and bounce charts; the
check page flags the defects of the day's templates. Both pages are shot in Chromium at
1280 and 390 px (kept in the test's directory, and in ``$MAILGATE_SCREENSHOTS_DIR``).
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import html.parser
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.policy.options import FrequencyCapOptions
from gateway.reports.periods import Period
from gateway.reputation.records import EventKind
from gateway.types import DealerId, MessageState
from tests.dnsserver import DnsServer
from tests.feedback_reports import arf, deliver, dsn
from tests.integration.admin import call_public
from tests.integration.conftest import Harness, dot_stuff, message
from tests.sinks import Received
from tests.webdriver import FormBrowser

MakeHarness = Callable[..., Awaitable[Harness]]
DEALER = DealerId("example-motors")
CONTACT = "gm@example-motors.test"
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "messages" / "inspection"
PUBLIC_URL = "https://status.mailgate.test"
INBOUND = {
    "listen": "127.0.0.1:0",
    "report_addresses": ["fbl@mailgate.test"],
    "bounce_domain": "bounces.mailgate.test",
}
FOLLOW_UP = ["ann@gmail.com", "bob@corp-google.test", "cy@outlook.com", "di@yahoo.com",
             "ed@other.test", "fay@corp-ms.test"]  # fmt: skip
ZONE = {
    "gmail.com MX": ["5 gmail-smtp-in.l.google.com."],
    "outlook.com MX": ["10 outlook-com.olc.protection.outlook.com."],
    "yahoo.com MX": ["1 mta5.am0.yahoodns.net."],
    "corp-google.test MX": ["1 aspmx.l.google.com.", "5 alt1.aspmx.l.google.com."],
    "corp-ms.test MX": ["0 corp-ms-test.mail.protection.outlook.com."],
    "other.test MX": ["10 mx.other.test."],
}


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        server.load(ZONE)
        yield server


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def send_day(h: Harness) -> None:
    """The day's submissions, on one authenticated connection."""
    client = await h.client()

    async def submit(rcpts: list[str], data: bytes) -> str:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        for rcpt in rcpts:
            assert (await client.cmd(f"RCPT TO:<{rcpt}>")).code == 250, rcpt
        reply = await client.data(dot_stuff(data))
        assert reply.code == 250, reply
        return reply.text

    follow_up = message(to="customer", subject="Your test drive",
                        body="Hello,\r\n\r\nYour test drive of the new Civic is booked for "
                             "Saturday at 10.\r\n")  # fmt: skip
    offer = message(to="customer", subject="Spring service offer",
                    body="Dear customer,\r\n\r\nThis spring, every oil change comes with a "
                         "free tyre check and a car wash. Book before 30 April.\r\n")  # fmt: skip
    try:
        await submit(FOLLOW_UP, follow_up)
        for rcpt in ("ann@gmail.com", "bob@corp-google.test"):  # the CRM sends it again
            assert "not sent" in await submit([rcpt], follow_up)
        assert "not sent" in await submit(["cy@outlook.com"], offer)  # over the cap
        await submit(["gus@gmail.com"], (SAMPLES / "unknown1-html.eml").read_bytes())
        await submit(["hal@yahoo.com"], (SAMPLES / "double-extension.eml").read_bytes())
        await submit(["ivy@outlook.com"], message(to="ivy", subject="Your service is booked",
                                                  body="See you Monday.\r\n"))  # fmt: skip
        await submit(["jo@corp-ms.test"], message(to="jo", subject="Your lease ends soon",
                                                  body="Call us.\r\n"))  # fmt: skip
    finally:
        await client.close()


def copy_to(h: Harness, rcpt: str) -> Received:
    return next(m for m in h.sink.messages if m.rcpt_tos == [rcpt])


def body_text(data: bytes) -> str:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    part = parsed.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


class _Table(html.parser.HTMLParser):
    """The rows of one ``<table id=...>`` as lists of cell texts."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id, self.inside = table_id, False
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("id", self.table_id) in attrs:
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def html_table(page: str, table_id: str) -> list[list[str]]:
    parser = _Table(table_id)
    parser.feed(page)
    return parser.rows


def html_part(data: bytes) -> str:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    part = parsed.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def table(text: str) -> dict[str, list[int]]:
    """The report's provider table (measures down, providers across): provider -> numbers."""
    _, _, rest = text.partition("By receiving provider (All: in total):\n")
    lines = rest.split("\n\n", 1)[0].splitlines()
    providers = lines[0].split()
    columns: dict[str, list[int]] = {p: [] for p in providers}
    for line in lines[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        for provider, cell in zip(providers, cells[1:], strict=True):
            columns[provider].append(int(cell.replace(",", "")))
    return columns


async def test_a_day_of_mail_and_the_report_it_gives(
    make_harness: MakeHarness, dns_server: DnsServer, tmp_path: Path
) -> None:
    h = await make_harness(inbound=INBOUND, http={"public_url": PUBLIC_URL},
                           dns={"nameservers": [f"127.0.0.1:{dns_server.port}"]})  # fmt: skip
    gw = h.gateway
    assert gw.reports is not None and gw.status_links is not None
    # The cap ships off; this dealer takes the strict one (policies/presets/frequency-cap.toml).
    dealer_file = tmp_path / "policies" / "dealers" / "example-motors.toml"
    dealer_file.write_text(
        dealer_file.read_text().replace(
            'dealer_id = "example-motors"', 'dealer_id = "example-motors"\npreset = "frequency-cap"'
        )
    )
    gw.reload_policies()
    assert gw.policies.current.dealers[DEALER].options(FrequencyCapOptions).per_day == 1
    h.sink.handler.rcpt_replies["ivy@outlook.com"] = ["451 4.7.1 Try again later"]
    h.sink.handler.rcpt_always["jo@corp-ms.test"] = "550 5.1.1 No such user here"

    await send_day(h)

    async def settled() -> bool:
        queued = await gw.storage.list_messages(MessageState.QUEUED, DEALER, 100)
        return not queued and all(
            any(m.rcpt_tos == [r] for m in h.sink.messages)
            for r in [*FOLLOW_UP, "gus@gmail.com", "ivy@outlook.com"]
        )

    await wait_for(settled)
    # Bounces and a complaint come back through the inbound listener.
    port = gw.inbound_port
    for rcpt, status in (("di@yahoo.com", "5.1.1"), ("ed@other.test", "4.2.2")):
        got = copy_to(h, rcpt)
        replies = await deliver(
            port, [got.mail_from], dsn(got.mail_from, [(rcpt, status, "failed")]), ""
        )
        assert replies[-1].startswith("250 2.0.0"), replies
    ann = copy_to(h, "ann@gmail.com")
    assert (await deliver(port, ["fbl@mailgate.test"], arf(ann.data, "ann@gmail.com")))[-1] \
        .startswith("250 2.0.0")  # fmt: skip
    events = await gw.storage.recent_events(DEALER, frozenset(EventKind), gw.clock.now() -
                                            timedelta(hours=1))  # fmt: skip
    assert sorted(e.kind.value for e in events) == ["complaint", "hard-bounce", "soft-bounce"]

    # The report of the day: claimed once, built from the store, queued as system mail.
    today = gw.clock.now().date()
    policy = gw.policies.current.dealer(DEALER)
    assert policy is not None
    period = Period("day", today, today)
    before = len(h.sink.messages)
    assert await gw.reports.send(policy, period, gw.clock.now()) == "sent"
    assert await gw.reports.send(policy, period, gw.clock.now()) == ""  # once per period

    async def report_arrived() -> bool:
        return any(b"X-Mailgate-Report:" in m.data for m in h.sink.messages[before:])

    await wait_for(report_arrived, timeout=15)
    reports = [m for m in h.sink.messages if b"X-Mailgate-Report:" in m.data]
    assert len(reports) == 1
    report = reports[0]
    assert report.rcpt_tos == [CONTACT] and report.mail_from in ("", "<>")
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in report.data
    assert b"text/html" in report.data
    text = body_text(report.data)
    (tmp_path / "report.html").write_text(html_part(report.data))

    assert text.startswith(f"Daily mail report for Example Motors: {period.describe()}")
    assert ("10 messages accepted, 8 delivered (88.9% of those with an outcome), 3 repeated "
            "messages stopped.") in text  # fmt: skip
    #                        acc del dly fail wait held hard soft compl
    assert table(text) == {
        "Google": [3, 3, 0, 0, 0, 0, 0, 0, 1],  # ann, bob (Google-hosted), gus
        "Microsoft": [4, 3, 1, 1, 0, 0, 0, 0, 0],  # cy, fay (Microsoft-hosted), ivy, jo
        "Yahoo": [2, 1, 0, 0, 0, 1, 1, 0, 0],  # di, hal
        "Other": [1, 1, 0, 0, 0, 0, 0, 1, 0],  # ed
        "All": [10, 8, 1, 1, 0, 1, 1, 1, 1],
    }
    assert ("3 repeated messages not sent: 2 exact repeats of a message the customer already "
            "had; 1 over your limit of commercial messages per customer.") in text  # fmt: skip
    assert "Repeated most: “Your test drive” (2 times)." in text
    assert "1 message repaired: the message carries an attachment nobody attached" in text
    assert "1 message held for your operator (not sent):" in text
    assert "h***@yahoo.com: “Your invoice”: invoice.pdf.exe is a program disguised" in text
    assert "Complaints: 12.500% (1 of 8 delivered" in text
    assert "Hard bounces: 11.111% (1 of 9 sent" in text
    assert text.count("not enough mail yet to judge") == 2
    status_url = gw.status_links.url(DEALER)
    assert status_url in text
    # The company domains were told apart by their MX, through the gateway's resolver.
    asked = {name.rstrip(".") for name, rdtype, _ in dns_server.queries if rdtype == "MX"}
    assert {"corp-google.test", "corp-ms.test", "other.test"} <= asked
    # The report is not the dealer's mail: its counters are unchanged by it.
    rows = await gw.storage.daily_counts(DEALER, today, today)
    assert (rows[0].counts.sent, rows[0].counts.delivered) == (9, 8)

    # The contact's link: a GET asks, a POST stops the reports, a second POST restarts them.
    link = re.search(r"To stop these reports: (\S+)", text)
    assert link is not None
    parts = urlsplit(link.group(1))
    path = f"{parts.path}?{parts.query}"
    page = await call_public(gw, "GET", path)
    assert page.status == 200 and b"Stop the reports" in page.raw
    assert await gw.storage.report_optouts(DEALER) == frozenset()
    forged = path[:-1] + ("0" if path[-1] != "0" else "1")
    assert (await call_public(gw, "POST", forged, raw=b"List-Unsubscribe=One-Click",
                       content_type="application/x-www-form-urlencoded")).status == 404  # fmt: skip
    stopped = await call_public(gw, "POST", path, raw=b"List-Unsubscribe=One-Click",
                         content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert stopped.status == 200 and b"Reports stopped" in stopped.raw
    assert await gw.storage.report_optouts(DEALER) == frozenset({CONTACT})
    monday = today - timedelta(days=today.weekday())
    week = Period("week", monday, monday + timedelta(days=6))
    assert await gw.reports.send(policy, week, gw.clock.now()) == "no-recipients"
    again = await call_public(gw, "POST", path, raw=b"resubscribe=1",
                       content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert again.status == 200 and await gw.storage.report_optouts(DEALER) == frozenset()
    # No traffic, no report.
    quiet = today - timedelta(days=40)
    assert await gw.reports.send(policy, Period("day", quiet, quiet), gw.clock.now()) == "skipped"
    claim = await gw.storage.get_report_claim(DEALER, period.key)
    assert claim is not None and claim.outcome == "sent" and claim.node == gw.node

    # The status page: the same day, from the same store.
    status_path = gw.status_links.path(DEALER)
    page = (await call_public(gw, "GET", status_path)).raw.decode()
    assert "<b>2</b> repeated messages not sent" in page
    assert "<b>1</b> message not sent: over your limit" in page
    assert "<b>1</b> message repaired before sending" in page
    assert "<b>1</b> message held for your operator" in page
    assert html_table(page, "repeated")[1:] == [["Your test drive", "2"],
                                                 ["Spring service offer", "1"]]  # fmt: skip
    assert html_table(page, "provider-table")[1:] == [
        ["Google", "3", "3 (100.0%)", "0", "0", "0", "1"],
        ["Microsoft", "4", "3 (75.0%)", "1", "1", "0", "0"],
        ["Yahoo", "2", "1 (100.0%)", "0", "0", "1", "0"],
        ["Other", "1", "1 (100.0%)", "0", "0", "1", "0"],
        ["All providers", "10", "8 (88.9%)", "1", "1", "2", "1"],
    ]
    assert page.count('class="provider-bar"') == 4  # one day, four providers
    assert page.count('class="day-point"') >= 2  # today's own complaint and bounce rates
    assert "<b>Your invoice</b>" in page  # the held message, by its subject
    assert f"href='{status_path}/check'" in page
    base = f"http://127.0.0.1:{gw.public_port}"
    shots = await asyncio.to_thread(look, base + status_path, tmp_path)
    assert not shots["status_overflows_390"]
    assert "What the gateway stopped and fixed" in shots["status_text"]
    assert shots["check_verdict"] == "The gateway would hold it for an operator."
    assert {"invoice.pdf.exe", "{FirstName}"} <= set(shots["check_marks"])
    for name in ("status-1280", "status-390", "check-1280", "check-390", "report-1280",
                 "report-390"):  # fmt: skip
        assert (tmp_path / f"day-{name}.png").stat().st_size > 10_000, name


TEMPLATE = (
    "From: Example Motors <sales@example-motors.test>\r\nTo: customer\r\n"
    "Subject: Your invoice, {FirstName}\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
    "Content-Type: text/html; charset=utf-8\r\n\r\n"
    "<html><body><p>Dear {FirstName}, your invoice is attached.</p></body></html>\r\n"
    '--m\r\nContent-Type: application/octet-stream; name="invoice.pdf.exe"\r\n'
    'Content-Disposition: attachment; filename="invoice.pdf.exe"\r\n'
    "Content-Transfer-Encoding: base64\r\n\r\nTVqQAGhhcm1sZXNz\r\n--m--\r\n"
)


def look(status_url: str, tmp: Path) -> dict[str, object]:
    """Shoot the status page, then check the day's invoice template on the check page."""
    seen: dict[str, object] = {}
    export = tmp / "invoice-template.eml"
    export.write_text(TEMPLATE)
    browser = FormBrowser(tmp / "profile")
    try:
        for width in (1280, 390):
            browser.shot(status_url, width, tmp / f"day-status-{width}.png")
        seen["status_overflows_390"] = browser.overflows(390)
        seen["status_text"] = browser.text()
        browser.open(status_url + "/check", 1280)
        browser.type("#file", str(export))
        browser.click("button[type=submit]")
        browser.wait_for("#verdict")
        seen["check_verdict"] = browser.texts("#verdict")[0]
        seen["check_marks"] = browser.texts("mark")
        for width in (1280, 390):
            browser.screenshot(tmp / f"day-check-{width}.png", width)
        for width in (1280, 390):  # the report e-mail's HTML, as a mail client shows it
            browser.shot((tmp / "report.html").as_uri(), width, tmp / f"day-report-{width}.png")
    finally:
        browser.close()
    return seen
