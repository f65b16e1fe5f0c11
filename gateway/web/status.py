"""The dealers' read-only status page: ``/status/<dealer>/<token>``, server-rendered HTML.

A dealer (who has no admin token) follows a link from an alert e-mail and sees its
current state and why, its complaint and hard-bounce rates against its thresholds over
the last weeks (inline SVG, no script), its recent complaints and bounces (recipients
masked), its held messages with what each finding means, and what to do next.

The link's token is an HMAC-SHA256 of the dealer id under a key created once in the data
directory (``status.key``, like the tracking key), so it is unguessable, stable across
restarts and nodes that share the directory's key, and cannot be turned into another
dealer's link. A wrong token and an unknown dealer both answer the same 404.
"""

from __future__ import annotations

import email.policy
import html
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.parser import BytesHeaderParser

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.admin.ops import AdminError, AdminOps, DealerReport, RateReport
from gateway.errors import StorageError
from gateway.findings import CATALOGUE
from gateway.reputation.rates import RateWindow
from gateway.reputation.records import Actor, DailyCounts, DayCounts, DealerState, EventKind
from gateway.tokens import Signer, hex_decode
from gateway.types import MessageState

log = logging.getLogger("gateway.admin")

CHART_DAYS = 30
_TOKEN_BYTES = 16
# The public listener adds the security headers (CSP, nosniff, Referrer-Policy:
# web/http.py); these are the status page's own.
_HEADERS = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex, nofollow"}


@dataclass(frozen=True, slots=True)
class StatusLinks:
    """Makes and checks the per-dealer links."""

    key: bytes
    base_url: str  # e.g. "https://mailgate.example.net" (no trailing slash)

    def token(self, dealer_id: str) -> str:
        """The dealer's token: hex HMAC-SHA256 of its id, 128 bits."""
        return self._signer().tag(dealer_id.encode()).hex()

    def _signer(self) -> Signer:
        return Signer(self.key, size=_TOKEN_BYTES, context=b"status-page\x00")

    def path(self, dealer_id: str) -> str:
        """The link's path."""
        return f"/status/{dealer_id}/{self.token(dealer_id)}"

    def url(self, dealer_id: str) -> str:
        """The full link."""
        return self.base_url.rstrip("/") + self.path(dealer_id)

    def valid(self, dealer_id: str, token: str) -> bool:
        """True when ``token`` is the dealer's (constant time)."""
        return self._signer().verify(dealer_id.encode(), hex_decode(token))


def status_routes(ops: AdminOps, links: StatusLinks) -> list[BaseRoute]:
    """The status page route."""

    async def page(request: Request) -> Response:
        dealer = request.path_params["dealer"]
        token = request.path_params["token"]
        if not links.valid(dealer, token) or ops.policies.current.dealer(dealer) is None:
            return HTMLResponse(_NOT_FOUND, status_code=404, headers=_HEADERS)
        try:
            body = await render_status(ops, dealer)
        except StorageError as exc:
            log.warning("status page for %s: store error: %s", dealer, exc)
            return HTMLResponse(_UNAVAILABLE, status_code=503, headers=_HEADERS)
        except AdminError:
            return HTMLResponse(_NOT_FOUND, status_code=404, headers=_HEADERS)
        return HTMLResponse(body, headers=_HEADERS)

    return [Route("/status/{dealer}/{token}", page, methods=["GET"])]


_HELD_FOR_OPERATOR = "Held by the gateway for your operator to look at; it is not lost."
_EVENT_WORDS = {
    EventKind.COMPLAINT: "spam complaint",
    EventKind.HARD_BOUNCE: "bounced (address does not exist)",
    EventKind.SOFT_BOUNCE: "bounced (temporary)",
    EventKind.UNSUBSCRIBE: "unsubscribed",
}
_NOT_FOUND = "<!doctype html><title>Not found</title><p>This status link is not valid.</p>\n"
_UNAVAILABLE = (
    "<!doctype html><title>Unavailable</title><p>The status is unavailable right now; "
    "try again in a minute.</p>\n"
)

_STATE_COLOURS = {
    DealerState.ACTIVE: "#2e7d32",
    DealerState.RESUMED: "#2e7d32",
    DealerState.WARNED: "#ef6c00",
    DealerState.SUSPENDED: "#c62828",
}
SERIES_COLOUR = "#1565c0"
WARN_COLOUR = "#ef6c00"
SUSPEND_COLOUR = "#c62828"


def mask(address: str) -> str:
    """``j***@example.com``: enough for the dealer to recognise, not to harvest."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def rolling_rates(
    rows: list[DailyCounts], report: RateReport, first: date, last: date
) -> list[tuple[date, float | None]]:
    """The rate over the policy's window ending on each day (``None`` without volume)."""
    by_day = {r.day: r.counts for r in rows}
    span = max(report.thresholds.window // timedelta(days=1), 1)
    out: list[tuple[date, float | None]] = []
    day = first
    while day <= last:
        counts = DayCounts()
        for back in range(span):
            counts = counts + by_day.get(day - timedelta(days=back), DayCounts())
        window = RateWindow(report.window.dealer_id, day - timedelta(days=span - 1), day, counts)
        has_volume = window.volume(report.metric) > 0
        out.append((day, window.rate(report.metric) if has_volume else None))
        day += timedelta(days=1)
    return out


def chart_svg(chart_id: str, title: str, points: list[tuple[date, float | None]],
              report: RateReport) -> str:  # fmt: skip
    """An inline SVG line chart of ``points`` with the warn and suspend thresholds."""
    width, height, left, right, top, bottom = 720, 220, 86, 12, 24, 30
    warn, suspend = report.thresholds.warn_rate, report.thresholds.suspend_rate
    values = [v for _, v in points if v is not None]
    top_value = max([suspend * 1.25, *(v * 1.1 for v in values)]) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(i: int) -> float:
        return left + (plot_w * i / max(len(points) - 1, 1))

    def y(value: float) -> float:
        return top + plot_h * (1 - min(value / top_value, 1.0))

    parts = [
        f'<svg id="{chart_id}" class="chart" role="img" aria-label="{html.escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f"<title>{html.escape(title)}</title>",
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
        'stroke="#bbb"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        value = top_value * fraction
        parts.append(
            f'<text x="{left - 6}" y="{y(value) + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="#555">{value:.2%}</text>'
        )
    for label, value, colour in (("warn", warn, WARN_COLOUR), ("suspend", suspend, SUSPEND_COLOUR)):
        parts.append(
            f'<line class="threshold-{label}" x1="{left}" x2="{left + plot_w}" '
            f'y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="{colour}" stroke-width="2" '
            'stroke-dasharray="6 4"/>'
        )
        parts.append(
            f'<text x="{left + plot_w - 4}" y="{y(value) - 4:.1f}" font-size="11" '
            f'text-anchor="end" fill="{colour}">{label} {value:.2%}</text>'
        )
    segment: list[str] = []
    segments: list[list[str]] = []
    for i, (_, point) in enumerate(points):
        if point is None:
            if segment:
                segments.append(segment)
            segment = []
            continue
        segment.append(f"{x(i):.1f},{y(point):.1f}")
    if segment:
        segments.append(segment)
    for seg in segments:
        if len(seg) == 1:
            cx, cy = seg[0].split(",")
            parts.append(
                f'<circle class="series" cx="{cx}" cy="{cy}" r="3" fill="{SERIES_COLOUR}"/>'
            )
        else:
            parts.append(
                f'<polyline class="series" fill="none" stroke="{SERIES_COLOUR}" stroke-width="3" '
                f'points="{" ".join(seg)}"/>'
            )
    if not segments:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" '
            'font-size="13" fill="#777">no mail in this period</text>'
        )
    if points:
        for i in (0, len(points) - 1):
            parts.append(
                f'<text x="{x(i):.1f}" y="{height - 8}" font-size="11" fill="#555" '
                f'text-anchor="{"start" if i == 0 else "end"}">{points[i][0]:%d %b}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def state_sentence(report: DealerReport) -> str:
    """The state, who made it and when, and the reason given to the dealer, as one text.

    ``status.reason`` is the dealer-facing reason (the operator's internal note is kept
    apart, ``StateChange.note``, and never reaches this page).
    """
    status = report.status
    if status is None:
        return "No problems recorded: your mail flows normally."
    by_hand = status.actor is Actor.ADMIN
    who = "by your Mailgate operator" if by_hand else "automatically"
    verb = {
        DealerState.SUSPENDED: "Suspended",
        DealerState.WARNED: "Warned",
        DealerState.RESUMED: "Resumed",
        DealerState.ACTIVE: "Active",
    }[status.state]
    text = f"{verb} {who} on {_when(status.since)}."
    if status.reason:
        label = "Reason given" if by_hand else "Reason"
        text += f" {label}: {status.reason.rstrip('.')}."
    return text


def _advice(report: DealerReport, complaints_listed: bool) -> list[str]:
    state = report.state
    status = report.status
    by_hand = status is not None and status.actor is Actor.ADMIN
    steps: list[str] = []
    bounces = report.bounces.level in ("warn", "suspend")
    complaints = report.complaints.level in ("warn", "suspend")
    see = " (see the recent complaints below)" if complaints_listed else ""
    if state is DealerState.SUSPENDED:
        steps.append(
            "Your mail is paused: new messages are refused and queued messages wait. "
            "Nothing queued is lost; it goes out when the suspension ends."
        )
        if status and status.expires_at:
            steps.append(f"The suspension ends by itself at {_when(status.expires_at)}.")
        if by_hand:
            steps.append(
                "Your Mailgate operator suspended your mail for the reason above. Contact "
                "them to find out what they need from you before they resume you."
            )
        elif complaints or not bounces:
            steps.append(
                f"Find the campaign that drew the complaints{see}, stop it, and remove "
                "recipients who did not ask for your mail. Then contact your Mailgate "
                "operator to resume earlier."
            )
    elif state is DealerState.WARNED:
        if complaints or not bounces:
            steps.append(
                f"You are close to suspension. Check the recent complaints{see}, pause the "
                "campaign they point to, and make the unsubscribe link easy to find."
            )
        else:
            steps.append("You are close to suspension because too many addresses bounce.")
    else:
        steps.append("Nothing to do: your rates are below your thresholds.")
    if bounces:
        steps.append(
            "Many addresses bounce: clean your CRM's contact list and stop sending to "
            "addresses that bounced."
        )
    return steps


_LEVELS = {
    "ok": "Below the thresholds",
    "warn": "At the warning level",
    "suspend": "At the suspension level",
}


def standing(r: RateReport) -> str:
    """Where the rate stands, in words a dealer understands."""
    if r.level == "low-volume":
        return "Not enough mail yet to judge"
    return _LEVELS.get(r.level, r.level)


def _days(window: timedelta) -> str:
    days = max(window // timedelta(days=1), 1)
    return "day" if days == 1 else f"{days} days"


def _cells(*cells: tuple[str, str]) -> str:
    """``<td>`` cells of (label, HTML); the label heads the cell on a phone (the CSS)."""
    return "".join(f"<td data-label='{html.escape(label)}'>{value}</td>" for label, value in cells)


def _subject(raw: bytes) -> str:
    """The decoded ``Subject`` of a stored message (empty when it has none)."""
    head = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    try:
        parsed = BytesHeaderParser(policy=email.policy.default).parsebytes(head)
        return " ".join(str(parsed.get("Subject", "")).split())
    except (ValueError, LookupError):  # an undecodable encoded-word
        return ""


async def render_status(ops: AdminOps, dealer_id: str) -> str:
    """The whole page for one dealer."""
    report = await ops.dealer(dealer_id, history=10)
    today = ops.clock.now().date()
    first = today - timedelta(days=CHART_DAYS - 1)
    longest = max(report.complaints.thresholds.window, report.bounces.thresholds.window)
    rows = await ops.storage.daily_counts(report.policy.dealer_id, first - longest, today)
    events, _ = await ops.events(dealer_id, frozenset(EventKind), None, 20)
    held = await ops.messages(MessageState.HELD, dealer_id, 20)
    esc = html.escape
    state = report.state
    colour = _STATE_COLOURS[state]
    complaints_listed = any(e.kind is EventKind.COMPLAINT for e in events)

    def rate_row(name: str, what: str, of: str, r: RateReport) -> str:
        events_n, volume = r.window.events(r.metric), r.window.volume(r.metric)
        counted = f"{events_n:,} {what} of {volume:,} {of}, last {_days(r.thresholds.window)}"
        level = esc(standing(r))
        if r.level == "low-volume":
            level += (
                f"<br><span class='muted'>judged from {r.thresholds.min_volume:,} {of} on</span>"
            )
        return (
            f"<tr class='level-{esc(r.level)}'><th>{name}</th>"
            + _cells(
                ("Now", f"<span class='rate'>{r.rate:.2%}</span>"),
                ("Counted", esc(counted)),
                ("Warning at", f"{r.thresholds.warn_rate:.2%}"),
                ("Suspension at", f"{r.thresholds.suspend_rate:.2%}"),
                ("Where you stand", level),
            )
            + "</tr>"
        )

    judged = (
        f"{report.complaints.thresholds.min_volume:,} delivered for complaints, "
        f"{report.bounces.thresholds.min_volume:,} sent for bounces"
    )
    span = {_days(report.complaints.thresholds.window), _days(report.bounces.thresholds.window)}
    counted_days = f"those {span.pop()}" if len(span) == 1 else "the days counted"

    parts: list[str] = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{esc(report.policy.name or dealer_id)}: mail status</title>",
        "<style>body{font:15px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:900px}"
        "h1{margin:0 0 8px}.state{display:inline-block;padding:6px 14px;border-radius:6px;"
        "color:#fff;font-weight:700;font-size:20px}table{border-collapse:collapse;margin:8px 0}"
        "td,th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left;vertical-align:top}"
        "section{margin:22px 0}.muted{color:#666}.when{white-space:nowrap}"
        "svg.chart{max-width:100%;height:auto}"
        # On a phone each table row becomes a card of labelled lines (no sideways scroll).
        "@media (max-width:600px){body{margin:12px;font-size:14px}"
        "table.cards,table.cards tbody,table.cards tr,table.cards th,table.cards td"
        "{display:block}table.cards tr.head{display:none}"
        "table.cards tr{border-bottom:1px solid #ccc;padding:8px 0}"
        "table.cards td,table.cards th{border:0;padding:1px 0}"
        "table.cards td[data-label]::before{content:attr(data-label) ': ';font-weight:600;"
        "color:#555}svg.chart text{font-size:22px}}"  # the chart is drawn at half size there
        "</style></head><body>",
        f"<h1>{esc(report.policy.name or dealer_id)}</h1>",
        f"<p class='muted'>Dealer <code>{esc(dealer_id)}</code> · status at "
        f"{ops.clock.now():%Y-%m-%d %H:%M} UTC</p>",
        f"<section><div id='state' class='state state-{state.value}' "
        f"style='background:{colour}'>{esc(state.value.upper())}</div>",
        f"<p id='reason'>{esc(state_sentence(report))}</p></section>",
        "<section id='advice'><h2>What to do</h2><ul>",
        *(f"<li>{esc(step)}</li>" for step in _advice(report, complaints_listed)),
        "</ul></section>",
        "<section id='rates'><h2>Your rates and your limits</h2><table class='cards'>"
        "<tr class='head'><th></th><th>Now</th><th>Counted</th><th>Warning at</th>"
        "<th>Suspension at</th><th>Where you stand</th></tr>",
        rate_row("Spam complaints", "complaints", "delivered", report.complaints),
        rate_row("Hard bounces", "hard bounces", "sent", report.bounces),
        "</table>",
        f"<p class='muted'>A rate is judged only once enough mail has gone out in "
        f"{counted_days} ({esc(judged)}): a few complaints about a handful of messages never "
        "warn or suspend you.</p>",
        "<h3>Complaint rate, last 30 days</h3>",
        chart_svg(
            "complaint-chart",
            "Complaint rate against thresholds",
            rolling_rates(rows, report.complaints, first, today),
            report.complaints,
        ),
        "<h3>Hard-bounce rate, last 30 days</h3>",
        chart_svg(
            "bounce-chart",
            "Hard-bounce rate against thresholds",
            rolling_rates(rows, report.bounces, first, today),
            report.bounces,
        ),
        "</section>",
        "<section id='events'><h2>Recent complaints and bounces</h2>",
    ]
    if events:
        parts.append(
            "<table class='cards'><tr class='head'><th>When</th><th>What</th>"
            "<th>Recipient</th><th>Subject</th></tr>"
        )
        for e in events:
            parts.append(
                "<tr>"
                + _cells(
                    ("When", f"<span class='when'>{e.at:%Y-%m-%d %H:%M}</span>"),
                    ("What", esc(_EVENT_WORDS.get(e.kind, e.kind))),
                    ("Recipient", esc(mask(e.recipient))),
                    ("Subject", esc(e.subject) or "<i>(no subject)</i>"),
                )
                + "</tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>None in the last 30 days.</p>")
    parts.append("</section>")
    tally = ops.consent_tally(dealer_id)
    if tally is not None:
        # Counted periodically by the gateway (the same figures as the metrics).
        eligible, locked = tally
        parts.append(
            "<section id='consent'><h2>Consent</h2>"
            f"<p>{eligible} recipients may receive commercial mail; {locked} are locked "
            "(outside every consent window or without the opt-in your rules require). "
            "Locked customers become eligible again with their next recorded interaction."
            "</p></section>"
        )
    parts.append("<section id='held'><h2>Held messages</h2>")
    if held:
        parts.append(
            "<p>These messages were not sent; they wait for your Mailgate operator, who can "
            "release or delete them.</p><table class='cards'><tr class='head'>"
            "<th>Received</th><th>Subject</th><th>To</th><th>Why it is held</th></tr>"
        )
        for m in held:
            why = []
            for code in m.findings:
                kind = CATALOGUE.get(code)
                text = f"<b>{esc(code)}</b>"
                if kind is not None:
                    text += f": {esc(kind.summary)}. <i>Fix:</i> {esc(kind.advice)}"
                why.append(text)
            # The note on a message without findings is the operators' (a delivery error,
            # say): the dealer is told only that the message waits for them.
            reason = "<br>".join(why) or esc(_HELD_FOR_OPERATOR)
            full = await ops.storage.get(m.id)
            subject = _subject(full.data) if full is not None else ""
            parts.append(
                "<tr>"
                + _cells(
                    ("Received", f"<span class='when'>{m.received_at:%Y-%m-%d %H:%M}</span>"),
                    ("Subject", f"<b>{esc(subject)}</b>" if subject else "<i>(no subject)</i>"),
                    ("To", esc(mask(m.rcpt))),
                    ("Why it is held", reason),
                )
                + "</tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>No messages are held.</p>")
    parts.append("</section></body></html>\n")
    return "".join(parts)
