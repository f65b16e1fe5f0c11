"""The status page's account of what the gateway did for the dealer over the last 30 days.

Two sections of the dealer's status page (``web/status.py`` places them), from what the
store keeps, with the same tallies and sums as the deliverability report
(``gateway/reports``):

* **What the gateway stopped and fixed**: repeated messages not sent (exact and near
  copies of what the customer already had), messages over the dealer's limit per
  customer, repairs made before sending (by finding, in plain words), messages held, and
  the subjects repeated most, so the dealer sees which template or CRM rule to fix;
* **Delivery by mailbox provider**: per receiving provider (Google, Microsoft, Yahoo,
  other; from the recipient domain and its MX), what was accepted, delivered, delayed,
  failed, bounced and complained about, and an inline SVG bar chart (no script) of the
  messages delivered each day, stacked by provider in a fixed order, with a legend.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta

from gateway.findings import CATALOGUE
from gateway.policy.model import DealerPolicy
from gateway.reports.content import ProviderRow, provider_rows, repairs_of
from gateway.reports.providers import GOOGLE, MICROSOFT, OTHER, YAHOO, ProviderLookup, by_domain
from gateway.reports.records import DeliveryTally
from gateway.storage.base import Storage
from gateway.types import MessageState

DAYS = 30
TOP_SUBJECTS = 5
# The bars are stacked in this order, so the order tells the providers apart as well as
# the colour does.
PROVIDER_COLOURS = {GOOGLE: "#1565c0", MICROSOFT: "#b45309", YAHOO: "#6a1b9a", OTHER: "#546e7a"}
esc = html.escape


async def providers_of(domains: Sequence[str], lookup: ProviderLookup | None) -> dict[str, str]:
    """Each domain's provider (from its name alone when there is no lookup)."""
    if lookup is None:
        return {d: by_domain(d) or OTHER for d in domains}
    return {d: await lookup.provider(d) for d in domains}


async def prevented_sections(
    storage: Storage,
    dealer: DealerPolicy,
    today: date,
    lookup: ProviderLookup | None = None,
    check_path: str = "",
) -> str:
    """The two sections' HTML for the ``DAYS`` days up to ``today``.

    ``check_path``: the dealer's check page (``web/check.py``), linked from the first.
    """
    first = today - timedelta(days=DAYS - 1)
    since = datetime.combine(first, time.min, tzinfo=UTC)
    until = datetime.combine(today + timedelta(days=1), time.min, tzinfo=UTC)
    dealer_id = dealer.dealer_id
    deliveries = await storage.delivery_tallies(dealer_id, since, until)
    events = await storage.event_tallies(dealer_id, since, until)
    drops = await storage.drop_tallies(dealer_id, since, until)
    found = await storage.finding_tallies(dealer_id, since, until)
    domains = sorted({t.domain for t in deliveries} | {t.domain for t in events})
    providers = await providers_of(domains, lookup)
    rows, total = provider_rows(deliveries, events, providers)
    kinds: Counter[str] = Counter()
    subjects: Counter[str] = Counter()
    for drop in drops:
        kinds[drop.kind] += drop.drops
        subjects[drop.subject] += drop.drops
    prevented = prevented_html(kinds, subjects, repairs_of(dealer, found), total.held, check_path)
    return prevented + providers_html(rows, total, deliveries, providers, first, today)


def prevented_html(
    kinds: Mapping[str, int],
    subjects: Counter[str],
    repairs: Mapping[str, int],
    held: int,
    check_path: str = "",
) -> str:
    """The section "What the gateway stopped and fixed": drops, repairs, held count."""
    repeated = kinds.get("exact", 0) + kinds.get("near", 0)
    capped = kinds.get("cap", 0)
    repaired = sum(repairs.values())
    parts = [
        "<section id='prevented'><h2>What the gateway stopped and fixed, last 30 days</h2>",
        "<ul class='tally'>",
        f"<li id='prevented-repeats'><b>{repeated:,}</b> repeated "
        f"{'message' if repeated == 1 else 'messages'} not sent: the customer already had "
        "the same message (or one nearly the same)</li>",
        f"<li id='prevented-cap'><b>{capped:,}</b> "
        f"{'message' if capped == 1 else 'messages'} not sent: over your limit of "
        "commercial messages per customer</li>",
        f"<li id='prevented-repairs'><b>{repaired:,}</b> "
        f"{'message' if repaired == 1 else 'messages'} repaired before sending</li>",
        f"<li id='prevented-held'><b>{held:,}</b> {'message' if held == 1 else 'messages'} "
        "held for your operator (see <a href='#held'>Held messages</a>)</li>",
        "</ul>",
    ]
    if subjects:
        parts.append(
            "<h3>Repeated most</h3><p>The CRM sent these again to customers who already had "
            "them; look at the rule or campaign that sends them.</p>"
            "<table class='cards' id='repeated'><tr class='head'><th>Subject</th>"
            "<th>Not sent</th></tr>"
        )
        for subject, count in subjects.most_common(TOP_SUBJECTS):
            shown = f"<b>{esc(subject)}</b>" if subject else "<i>(no subject)</i>"
            parts.append(
                f"<tr><td data-label='Subject'>{shown}</td>"
                f"<td data-label='Not sent'>{count:,}</td></tr>"
            )
        parts.append("</table>")
    if repairs:
        parts.append("<h3>Repairs</h3><ul id='repairs'>")
        for code, count in repairs.items():
            kind = CATALOGUE.get(code)
            words = kind.summary if kind is not None else code
            fix = f" To stop it at the source: {kind.advice}." if kind is not None else ""
            parts.append(
                f"<li><b>{count:,}</b> {'message' if count == 1 else 'messages'}: "
                f"{esc(words)}.{esc(fix)}</li>"
            )
        parts.append("</ul>")
    if not (repeated or capped or repaired or held):
        parts.append("<p>Nothing needed stopping or fixing in the last 30 days.</p>")
    if check_path:
        parts.append(
            f"<p id='check-link'><a href='{esc(check_path)}'>Check a template or message "
            "before you send it</a>: the same checks with your own rules; nothing is sent.</p>"
        )
    parts.append("</section>")
    return "".join(parts)


def _share(row: ProviderRow) -> str:
    done = row.delivered + row.failed
    return f" ({row.delivered_share:.1%})" if done else ""


def providers_html(
    rows: Sequence[ProviderRow],
    total: ProviderRow,
    deliveries: Sequence[DeliveryTally],
    providers: Mapping[str, str],
    first: date,
    last: date,
) -> str:
    """The section "Delivery by mailbox provider": the table and the daily chart."""
    parts = ["<section id='providers'><h2>Delivery by mailbox provider, last 30 days</h2>"]
    if not rows:
        parts.append("<p>No mail in the last 30 days.</p></section>")
        return "".join(parts)
    parts.append(
        "<table class='cards' id='provider-table'><tr class='head'><th>Provider</th>"
        "<th>Accepted</th><th>Delivered</th><th>Delayed</th><th>Failed</th><th>Bounced</th>"
        "<th>Complaints</th></tr>"
    )
    for row in (*rows, total):
        cells = (
            ("Accepted", f"{row.accepted:,}"),
            ("Delivered", f"{row.delivered:,}{_share(row)}"),
            ("Delayed", f"{row.delayed:,}"),
            ("Failed", f"{row.failed:,}"),
            ("Bounced", f"{row.hard_bounces + row.soft_bounces:,}"),
            ("Complaints", f"{row.complaints:,}"),
        )
        parts.append(
            f"<tr><th>{esc(row.provider)}</th>"
            + "".join(f"<td data-label='{esc(k)}'>{esc(v)}</td>" for k, v in cells)
            + "</tr>"
        )
    parts.append(
        "</table><p class='muted'>Delayed: the receiving server asked to try again later at "
        "least once. Failed: it refused the message. Bounced: a report came back later.</p>"
        "<h3>Delivered per day</h3>"
    )
    parts.append(daily_chart(deliveries, providers, [r.provider for r in rows], first, last))
    parts.append("</section>")
    return "".join(parts)


def daily_chart(
    deliveries: Sequence[DeliveryTally],
    providers: Mapping[str, str],
    shown: Sequence[str],
    first: date,
    last: date,
) -> str:
    """An inline SVG bar chart of the messages delivered each day, stacked by provider.

    The providers are stacked in ``shown`` order from the bottom, each bar part has a
    ``<title>`` with its count, and the legend is HTML below the chart (it reads the same
    at any width; the table above has the numbers).
    """
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    series: dict[str, list[int]] = {p: [0] * len(days) for p in shown}
    for tally in deliveries:
        provider = providers.get(tally.domain, OTHER)
        if tally.state is MessageState.DELIVERED and provider in series:
            index = (tally.day - first).days
            if 0 <= index < len(days):
                series[provider][index] += tally.messages
    width, height, left, right, top, bottom = 720, 220, 56, 12, 12, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(series[p][i] for p in shown) for i in range(len(days))]
    peak = max(totals, default=0) or 1
    slot = plot_w / max(len(days), 1)
    bar = max(slot * 0.7, 1.0)
    title = "Messages delivered per day, by mailbox provider"
    parts = [
        f'<svg id="provider-chart" class="chart" role="img" aria-label="{esc(title)}" '
        f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{esc(title)}</title>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
        'stroke="#bbb"/>',
    ]
    for value in sorted({0, peak // 2, peak}):
        level = top + plot_h * (1 - value / peak)
        parts.append(
            f'<text x="{left - 6}" y="{level + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="#555">{value:,}</text>'
        )
    for i, day in enumerate(days):
        base = float(top + plot_h)
        for provider in shown:
            count = series[provider][i]
            if not count:
                continue
            tall = plot_h * count / peak
            base -= tall
            parts.append(
                f'<rect class="provider-bar" data-provider="{esc(provider)}" '
                f'x="{left + i * slot + (slot - bar) / 2:.1f}" y="{base:.1f}" width="{bar:.1f}" '
                f'height="{tall:.1f}" fill="{PROVIDER_COLOURS.get(provider, "#546e7a")}">'
                f"<title>{day:%d %b}, {esc(provider)}: {count:,} delivered</title></rect>"
            )
    for i in (0, len(days) - 1):
        parts.append(
            f'<text x="{left + i * slot + slot / 2:.1f}" y="{height - 8}" font-size="11" '
            f'fill="#555" text-anchor="{"start" if i == 0 else "end"}">{days[i]:%d %b}</text>'
        )
    parts.append("</svg><p class='legend' id='provider-legend'>From the bottom: ")
    keys = []
    for provider in shown:
        colour = PROVIDER_COLOURS.get(provider, PROVIDER_COLOURS[OTHER])
        keys.append(
            '<svg width="14" height="14" viewBox="0 0 14 14" aria-hidden="true">'
            f'<rect width="14" height="14" fill="{colour}"/></svg> {esc(provider)}'
        )
    parts.append(" · ".join(keys) + "</p>")
    return "".join(parts)
