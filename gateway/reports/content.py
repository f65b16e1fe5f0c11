"""The deliverability report's figures and its words, plain text and HTML (pure).

``figures(...)`` turns what the store answered (``records``: the sent log by domain and
state, feedback events, duplicate drops, finding sets, held messages, daily counters)
into a ``Report``; ``render(report)`` writes its subject, text and HTML. The words are for
a dealership manager, not a mail administrator: "delivered", "waiting for a retry",
"refused by the receiving server", "not enough mail yet to judge".

What the report says, for the period:

* messages accepted from the CRM, and what became of them, in total and per receiving
  provider (Google, Microsoft, Yahoo, other): delivered, delayed (deferred at least once
  before the outcome), failed, still waiting, held;
* hard and soft bounces and complaints that came back, per provider;
* the complaint and hard-bounce rates over the policy's rolling window ending on the
  period's last day, against the warning and suspension thresholds;
* what the gateway prevented: duplicates and frequency-cap drops (with the subject that
  was repeated most), repairs made (by finding), messages held and why;
* consent records that run out soon, when the dealer's rules enforce consent;
* a link to the status page, and the contact's own unsubscribe link.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from types import MappingProxyType

from gateway.findings import CATALOGUE
from gateway.policy.model import DealerPolicy, RateThresholds
from gateway.reports.periods import Period
from gateway.reports.providers import PROVIDERS
from gateway.reports.records import DeliveryTally, DropTally, EventTally, FindingTally
from gateway.reputation.rates import Metric, RateWindow, Suspend, evaluate, has_volume
from gateway.reputation.records import DayCounts
from gateway.types import Action, DealerId, MessageState

TOTAL = "All providers"
HELD_LISTED = 10
CONSENT_HORIZON = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class ProviderRow:
    """One receiving provider's share of the period (messages are per recipient)."""

    provider: str
    accepted: int = 0
    delivered: int = 0
    delayed: int = 0  # deferred at least once, whatever came of them
    failed: int = 0
    waiting: int = 0
    held: int = 0
    hard_bounces: int = 0
    soft_bounces: int = 0
    complaints: int = 0

    def __add__(self, other: ProviderRow) -> ProviderRow:
        return ProviderRow(
            self.provider,
            *(getattr(self, n) + getattr(other, n) for n in _COUNTS),
        )

    @property
    def delivered_share(self) -> float:
        """Delivered of those with an outcome (delivered or failed); 0.0 without any."""
        done = self.delivered + self.failed
        return self.delivered / done if done else 0.0


_COUNTS = ("accepted", "delivered", "delayed", "failed", "waiting", "held", "hard_bounces",
           "soft_bounces", "complaints")  # fmt: skip


@dataclass(frozen=True, slots=True)
class RateLine:
    """One rate over the policy's window ending on the period's last day."""

    name: str
    metric: Metric
    window: RateWindow
    thresholds: RateThresholds

    @property
    def rate(self) -> float:
        """Events over volume (0.0 without volume)."""
        return self.window.rate(self.metric)

    @property
    def level(self) -> str:
        """``suspend``, ``warn``, ``ok`` or ``low-volume`` (as ``rates.evaluate`` decides)."""
        decision = evaluate(self.window, self.thresholds, self.metric)
        if decision is not None:
            return "suspend" if isinstance(decision, Suspend) else "warn"
        return "ok" if has_volume(self.window, self.thresholds, self.metric) else "low-volume"

    @property
    def words(self) -> str:
        """The level in plain words."""
        return {
            "suspend": "at the suspension threshold",
            "warn": "above the warning threshold",
            "ok": "below your thresholds",
            "low-volume": f"not enough mail yet to judge (a rate counts from "
            f"{max(self.thresholds.min_volume, 1):,} {self.volume_word})",
        }[self.level]

    @property
    def volume_word(self) -> str:
        """What the rate is counted against."""
        return "delivered" if self.metric is Metric.COMPLAINTS else "sent"


@dataclass(frozen=True, slots=True)
class HeldLine:
    """One message held in the period."""

    subject: str
    why: str
    held_at: datetime
    recipient: str  # masked


@dataclass(frozen=True, slots=True)
class Report:
    """Everything one report says (see the module docstring)."""

    dealer_id: DealerId
    dealer_name: str
    period: Period
    providers: tuple[ProviderRow, ...]
    total: ProviderRow
    counts: DayCounts  # the dealer's daily counters summed over the period
    rates: tuple[RateLine, ...]
    drops: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    worst_subject: str = ""
    worst_drops: int = 0
    repairs: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    held: tuple[HeldLine, ...] = ()
    consent_expiring: int | None = None  # None: the dealer's rules do not enforce consent
    status_url: str = ""

    @property
    def has_traffic(self) -> bool:
        """Whether anything happened in the period (no traffic: no report)."""
        return bool(
            self.total.accepted
            or self.total.hard_bounces
            or self.total.soft_bounces
            or self.total.complaints
            or sum(self.drops.values())
        )

    @property
    def prevented(self) -> int:
        """Duplicate and cap drops in the period."""
        return sum(self.drops.values())


def figures(
    dealer: DealerPolicy,
    period: Period,
    *,
    deliveries: Iterable[DeliveryTally],
    events: Iterable[EventTally],
    drops: Iterable[DropTally],
    findings: Iterable[FindingTally],
    providers: Mapping[str, str],
    counts: DayCounts,
    rates: Sequence[RateLine],
    held: Sequence[HeldLine] = (),
    consent_expiring: int | None = None,
    status_url: str = "",
) -> Report:
    """Sum the store's tallies into a ``Report``; ``providers`` maps domain -> provider."""
    built, total = provider_rows(deliveries, events, providers)
    by_kind: Counter[str] = Counter()
    by_subject: Counter[str] = Counter()
    for drop in drops:
        by_kind[drop.kind] += drop.drops
        by_subject[drop.subject] += drop.drops
    worst_subject, worst = by_subject.most_common(1)[0] if by_subject else ("", 0)
    return Report(
        dealer_id=dealer.dealer_id,
        dealer_name=dealer.name or dealer.dealer_id,
        period=period,
        providers=built,
        total=total,
        counts=counts,
        rates=tuple(rates),
        drops=MappingProxyType({k: by_kind[k] for k in ("exact", "near", "cap") if by_kind[k]}),
        worst_subject=worst_subject,
        worst_drops=worst,
        repairs=repairs_of(dealer, findings),
        held=tuple(held)[:HELD_LISTED],
        consent_expiring=consent_expiring,
        status_url=status_url,
    )


def provider_rows(
    deliveries: Iterable[DeliveryTally], events: Iterable[EventTally], providers: Mapping[str, str]
) -> tuple[tuple[ProviderRow, ...], ProviderRow]:
    """The providers with any traffic (in ``PROVIDERS`` order) and their total.

    ``providers`` maps a recipient domain to its provider; a domain missing from it counts
    for the last, "other".
    """
    rows: dict[str, dict[str, int]] = {p: dict.fromkeys(_COUNTS, 0) for p in PROVIDERS}
    for tally in deliveries:
        row = rows[providers.get(tally.domain, PROVIDERS[-1])]
        row["accepted"] += tally.messages
        row["delayed"] += tally.messages if tally.retried else 0
        key = _STATE_COLUMN.get(tally.state)
        if key is not None:
            row[key] += tally.messages
    for event in events:
        row = rows[providers.get(event.domain, PROVIDERS[-1])]
        key = _EVENT_COLUMN.get(event.kind)
        if key is not None:
            row[key] += event.events
    built = [ProviderRow(p, **rows[p]) for p in PROVIDERS]
    total = ProviderRow(TOTAL)
    for row_ in built:
        total = total + row_
    return tuple(r for r in built if _any(r)), total


_STATE_COLUMN = {
    MessageState.DELIVERED: "delivered",
    MessageState.FAILED: "failed",
    MessageState.QUEUED: "waiting",
    MessageState.HELD: "held",
}
_EVENT_COLUMN = {"hard-bounce": "hard_bounces", "soft-bounce": "soft_bounces",
                 "complaint": "complaints"}  # fmt: skip


def repairs_of(dealer: DealerPolicy, findings: Iterable[FindingTally]) -> Mapping[str, int]:
    """Messages repaired, by finding code (policy's repair action; held ones were not sent)."""
    repairs: Counter[str] = Counter()
    for found in findings:
        if found.state is MessageState.HELD:  # held, not sent repaired (or not repairable)
            continue
        for code in found.findings:
            rule = dealer.checks.get(code)
            if rule is not None and rule.action is Action.REPAIR:
                repairs[code] += found.messages
    return MappingProxyType(dict(repairs.most_common()))


def _any(row: ProviderRow) -> bool:
    return bool(row.accepted or row.hard_bounces or row.soft_bounces or row.complaints)


def rate_lines(
    dealer: DealerPolicy, rows: Iterable[tuple[date, DayCounts]], last: date
) -> tuple[RateLine, RateLine]:
    """The complaint and hard-bounce rates over the policy's windows ending on ``last``."""
    rows = list(rows)

    def window(thresholds: RateThresholds) -> RateWindow:
        days = max(thresholds.window // timedelta(days=1), 1)
        first = last - timedelta(days=days - 1)
        counts = DayCounts()
        for day, day_counts in rows:
            if first <= day <= last:
                counts = counts + day_counts
        return RateWindow(dealer.dealer_id, first, last, counts)

    return (
        RateLine("Complaints", Metric.COMPLAINTS, window(dealer.complaints), dealer.complaints),
        RateLine("Hard bounces", Metric.BOUNCES, window(dealer.bounces), dealer.bounces),
    )


# -- words ---------------------------------------------------------------------------------

_DROP_WORDS = {
    "exact": "exact repeats of a message the customer already had",
    "near": "near-copies (the same follow-up with small changes)",
    "cap": "over your limit of commercial messages per customer",
}


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _finding_words(code: str) -> str:
    kind = CATALOGUE.get(code)
    return kind.summary if kind is not None else code


def headline(report: Report) -> str:
    """One sentence: how the period went."""
    t = report.total
    out = f"{_plural(t.accepted, 'message')} accepted"
    if t.delivered + t.failed:
        out += (
            f", {t.delivered:,} delivered ({_pct(t.delivered, t.delivered + t.failed)} of "
            "those with an outcome)"
        )
    elif t.accepted:
        out += ", none delivered yet"
    if report.prevented:
        out += f", {_plural(report.prevented, 'repeated message')} stopped"
    return out + "."


_MEASURES = ("Accepted", "Delivered", "Delayed", "Failed", "Waiting", "Held", "Hard bounces",
             "Soft bounces", "Complaints")  # fmt: skip


def _provider_table(report: Report) -> list[tuple[str, ...]]:
    """One row per measure, one column per provider and the total ("All").

    Measures down and providers across, so that it stays narrow enough for a phone.
    """
    columns = (*report.providers, report.total)
    rows: list[tuple[str, ...]] = [("", *(c.provider if c is not report.total else "All"
                                         for c in columns))]  # fmt: skip
    for measure, name in zip(_MEASURES, _COUNTS, strict=True):
        rows.append((measure, *(f"{getattr(c, name):,}" for c in columns)))
    return rows


def _rate_text(line: RateLine) -> str:
    w = line.window
    return (
        f"{line.name}: {line.rate:.3%} ({w.events(line.metric):,} of {w.volume(line.metric):,} "
        f"{line.volume_word}, {w.since:%d %b} to {w.until:%d %b}); warning at "
        f"{line.thresholds.warn_rate:.2%}, suspension at {line.thresholds.suspend_rate:.2%}: "
        f"{line.words}."
    )


def _prevented_lines(report: Report) -> list[str]:
    lines: list[str] = []
    if report.prevented:
        parts = [f"{n:,} {_DROP_WORDS[k]}" for k, n in report.drops.items()]
        lines.append(
            f"{_plural(report.prevented, 'repeated message')} not sent: " + "; ".join(parts) + "."
        )
        if report.worst_subject or report.worst_drops:
            subject = report.worst_subject or "(no subject)"
            lines.append(f"Repeated most: “{subject}” ({_plural(report.worst_drops, 'time')}).")
    for code, n in report.repairs.items():
        lines.append(f"{_plural(n, 'message')} repaired: {_finding_words(code)}.")
    held = report.total.held
    if held:
        lines.append(f"{_plural(held, 'message')} held for your operator (not sent):")
    return lines


def _held_line(h: HeldLine) -> str:
    subject = h.subject or "(no subject)"
    return f"{h.held_at:%Y-%m-%d %H:%M} UTC to {h.recipient}: “{subject}”: {h.why}"


def _consent_line(report: Report) -> str:
    if report.consent_expiring is None:
        return ""
    n = report.consent_expiring
    days = CONSENT_HORIZON.days
    if not n:
        return f"No customer's consent runs out in the next {days} days."
    return (
        f"{_plural(n, 'customer')} can receive your commercial e-mail for less than {days} "
        "more days: their consent window closes. A new recorded interaction (a visit, a "
        "reply, a service) or their express consent keeps them."
    )


def render(report: Report, unsubscribe_url: str = "") -> tuple[str, str, str]:
    """The subject, plain-text body and HTML body of ``report``."""
    period = report.period.describe()
    kind = "Daily" if report.period.every == "day" else "Weekly"
    title = f"{kind} mail report for {report.dealer_name}: {period}"
    subject = f"[Mailgate] {title}"
    table = _provider_table(report)
    prevented = _prevented_lines(report)
    consent = _consent_line(report)

    text: list[str] = [title, "", headline(report), "", "By receiving provider (All: in total):"]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        text.append("  " + "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                                     for i, c in enumerate(row)))  # fmt: skip
    text += [
        "",
        "Delayed: the receiving server asked to try again later at least once. Failed: it "
        "refused the message. Bounces and complaints are the reports that came back.",
        "",
        "Rates against your thresholds:",
        *(f"  {_rate_text(line)}" for line in report.rates),
        "",
        "What the gateway prevented:",
    ]
    text += [f"  {line}" for line in prevented] or ["  Nothing needed stopping or fixing."]
    text += [f"    {_held_line(h)}" for h in report.held]
    if consent:
        text += ["", "Consent:", f"  {consent}"]
    if report.status_url:
        text += ["", f"Status page (rates over time, held mail, check a template): "
                     f"{report.status_url}"]  # fmt: skip
    if unsubscribe_url:
        text += ["", f"To stop these reports: {unsubscribe_url}"]

    e = html.escape
    cells = "".join(
        "<tr>"
        + "".join(
            (f"<th scope='col'>{e(c)}</th>" if n == 0 else
             f"<th scope='row' align='left'>{e(c)}</th>" if i == 0 else
             f"<td align='right'>{e(c)}</td>")
            for i, c in enumerate(row)
        )
        + "</tr>"
        for n, row in enumerate(table)
    )  # fmt: skip
    rates = "".join(f"<li>{e(_rate_text(line))}</li>" for line in report.rates)
    prevented_html = "".join(f"<li>{e(line)}</li>" for line in prevented)
    if report.held:
        prevented_html += "<li><ul>" + "".join(f"<li>{e(_held_line(h))}</li>" for h in report.held)
        prevented_html += "</ul></li>"
    doc = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{e(subject)}</title></head><body style='font-family:sans-serif;color:#1a1a1a'>"
        f"<h1 style='font-size:20px'>{e(title)}</h1><p>{e(headline(report))}</p>"
        "<h2 style='font-size:16px'>By receiving provider</h2>"
        "<table border='1' cellpadding='4' cellspacing='0' style='border-collapse:collapse;"
        f"font-size:14px'>{cells}</table>"
        "<p style='color:#444'>All: every provider together. Delayed: the receiving server "
        "asked to try again later at least once. Failed: it refused the message. Bounces and "
        "complaints are the reports that came back.</p>"
        f"<h2 style='font-size:16px'>Rates against your thresholds</h2><ul>{rates}</ul>"
        "<h2 style='font-size:16px'>What the gateway prevented</h2>"
        f"<ul>{prevented_html or '<li>Nothing needed stopping or fixing.</li>'}</ul>"
        + (f"<h2 style='font-size:16px'>Consent</h2><p>{e(consent)}</p>" if consent else "")
        + (
            f"<p><a href='{e(report.status_url)}'>Status page</a>: rates over time, held "
            "mail, and a check for templates before you send them.</p>"
            if report.status_url
            else ""
        )
        + (
            f"<p style='color:#444;font-size:13px'>You get this report as a contact of "
            f"{e(report.dealer_name)}. <a href='{e(unsubscribe_url)}'>Stop these reports</a>."
            "</p>"
            if unsubscribe_url
            else ""
        )
        + "</body></html>"
    )
    return subject, "\n".join(text) + "\n", doc
