"""Alerts to a dealer's contacts and the operator when the dealer's state changes.

This module owns what a warning, a suspension or a resumption tells people, and how it
reaches them:

* ``render(alert)`` (pure) writes the subject and the text and HTML bodies: the rates
  against the thresholds, the counts and the window, the most-complained subjects, the
  most recent complaints with their dates, and what to do next;
* ``Alerts.on_change`` (the ``Notifier`` of ``reputation/suspensions.py``) queues one
  copy per recipient through the gateway's own queue as *system* messages, which the
  delivery worker sends even while the dealer is suspended, with the null sender (an
  alert never causes a bounce to anyone, RFC 3834 §3.3);
* an optional webhook gets the same facts as JSON, signed with HMAC-SHA256 over the body
  (``X-Mailgate-Signature: sha256=<hex>``), posted from a thread with a timeout.

An alert's message ids derive from the transition's id, and a transition is made once
(compare-and-set in the store), so the same state is never announced twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import logging
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from gateway.clock import Clock
from gateway.errors import StorageError
from gateway.metrics import Metrics
from gateway.policy.model import DealerPolicy
from gateway.reputation.records import DealerState, EventKind, FeedbackEvent, StateChange
from gateway.storage.base import Storage
from gateway.types import MessageId, NewMessage

log = logging.getLogger("gateway.reputation")

TOP_SUBJECTS = 5
RECENT_COMPLAINTS = 10
WEBHOOK_TIMEOUT = 5.0

_HEADLINES = {
    DealerState.WARNED: "warning",
    DealerState.SUSPENDED: "suspended",
    DealerState.RESUMED: "resumed",
}

_NEXT_STEPS = {
    DealerState.WARNED: (
        "Your mail still goes out, but the rate is close to the suspension threshold.",
        "Stop mailing people who did not ask for mail from you: check where the addresses "
        "of the complaining recipients came from (lead source, purchased lists, old "
        "customers who never opted in).",
        "Make the unsubscribe link easy to find and honour it at once.",
        "Send less to recipients who have not opened or replied in months.",
    ),
    DealerState.SUSPENDED: (
        "New mail from your CRM is refused until the suspension ends; mail already queued "
        "is held, not lost, and goes out when you are resumed.",
        "Find the campaign or list behind the complaints (the subjects below), and stop it.",
        "Remove recipients who did not opt in; the complaining addresses are already "
        "suppressed and will not be mailed again.",
        "Reply to this message or call your gateway operator with what you changed; they "
        "can resume you before the suspension ends.",
    ),
    DealerState.RESUMED: (
        "Your mail flows again, including the mail held during the suspension.",
        "Rates are counted afresh from now on; the same thresholds apply.",
        "Keep the changes that brought the rate down.",
    ),
}


@dataclass(frozen=True, slots=True)
class Alert:
    """Everything one alert says; ``dedup_key`` names the transition it is about."""

    change: StateChange
    dealer_name: str
    top_subjects: tuple[tuple[str, int], ...]
    recent: tuple[FeedbackEvent, ...]
    status_url: str = ""  # the dealer's read-only status page (admin/status.py)

    @property
    def dedup_key(self) -> str:
        """Unique per transition: the same state is announced once."""
        return f"{self.change.dealer_id}:{self.change.id}:{self.change.state.value}"

    @property
    def kind(self) -> str:
        """``warning``, ``suspended`` or ``resumed``."""
        return _HEADLINES.get(self.change.state, self.change.state.value)

    def as_json(self) -> dict[str, object]:
        """The webhook payload."""
        change = self.change
        return {
            "event": f"dealer.{self.kind}",
            "dedup_key": self.dedup_key,
            "dealer": change.dealer_id,
            "dealer_name": self.dealer_name,
            "state": change.state.value,
            "previous": change.previous.value,
            "reason": change.reason,
            "actor": change.actor.value,
            "by": change.by,
            "at": change.at.isoformat(),
            "expires_at": change.expires_at.isoformat() if change.expires_at else None,
            "evidence": change.evidence.as_dict(),
            "status_url": self.status_url or None,
            "top_subjects": [{"subject": s, "complaints": n} for s, n in self.top_subjects],
            "recent_complaints": [
                {"at": e.at.isoformat(), "recipient": e.recipient, "subject": e.subject}
                for e in self.recent
            ],
        }


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _rate_lines(alert: Alert) -> list[tuple[str, str, str, str]]:
    """(name, rate, thresholds, counts) rows for the rates table."""
    ev = alert.change.evidence
    c, t, r = ev.counts, ev.thresholds, ev.rates
    return [
        (
            "Complaint rate",
            f"{r.get('complaint_rate', 0.0):.3%}",
            f"warning at {t.get('complaint_warn', 0.0):.3%}, "
            f"suspension at {t.get('complaint_suspend', 0.0):.3%}",
            f"{c.complaints} complaints / {c.delivered} delivered",
        ),
        (
            "Hard-bounce rate",
            f"{r.get('bounce_rate', 0.0):.3%}",
            f"warning at {t.get('bounce_warn', 0.0):.3%}, "
            f"suspension at {t.get('bounce_suspend', 0.0):.3%}",
            f"{c.hard_bounces} hard bounces / {c.sent} sent",
        ),
    ]


def render(alert: Alert) -> tuple[str, str, str]:
    """The subject, plain-text body and HTML body of ``alert`` (pure)."""
    change, ev = alert.change, alert.change.evidence
    who = f"{alert.dealer_name} ({change.dealer_id})"
    title = {
        DealerState.WARNED: f"Warning for {who}: complaint or bounce rate too high",
        DealerState.SUSPENDED: f"{who} is suspended",
        DealerState.RESUMED: f"{who} is resumed",
    }.get(change.state, f"{who}: {change.state.value}")
    subject = f"[Mailgate] {title}"
    actor = "automatically" if change.actor.value == "auto" else "by the operator"
    window = f"{ev.since} to {ev.until}" if ev.since and ev.until else "(no window)"
    facts = [
        ("What", f"{change.previous.value} -> {change.state.value}, {actor}"),
        ("Why", change.reason),
        ("When", _when(change.at)),
    ]
    if change.expires_at is not None:
        facts.append(("Until", f"{_when(change.expires_at)}, unless resumed earlier"))
    if change.by:
        facts.append(("By", change.by))
    facts.append(("Window", window))
    counts = ev.counts
    facts.append(
        (
            "Counts",
            f"{counts.sent} sent, {counts.delivered} delivered, {counts.complaints} "
            f"complaints, {counts.hard_bounces} hard and {counts.soft_bounces} soft bounces",
        )
    )
    steps = _NEXT_STEPS.get(change.state, ())

    text: list[str] = [title, ""]
    text += [f"{name + ':':<8} {value}" for name, value in facts]
    text += ["", "Rates over the window:"]
    text += [f"  {n:<17} {rate:>8}   {th}   ({cn})" for n, rate, th, cn in _rate_lines(alert)]
    text += ["", "Most-complained subjects:"]
    text += [f"  {n:>5}  {s or '(no subject)'}" for s, n in alert.top_subjects] or ["  none"]
    text += ["", "Most recent complaints:"]
    text += [
        f"  {_when(e.at)}  {e.recipient}  {e.subject or '(no subject)'}" for e in alert.recent
    ] or ["  none"]
    text += ["", "What to do next:"]
    text += [f"  - {step}" for step in steps]
    if alert.status_url:
        text += ["", f"Status page (rates over time, held mail): {alert.status_url}"]
    text += ["", "Complaining recipients are suppressed: the gateway will not mail them again."]

    e = html.escape
    rows = "".join(f"<tr><th align='left'>{e(n)}</th><td>{e(v)}</td></tr>" for n, v in facts)
    rates = "".join(
        f"<tr><td>{e(n)}</td><td><b>{e(r)}</b></td><td>{e(t)}</td><td>{e(c)}</td></tr>"
        for n, r, t, c in _rate_lines(alert)
    )
    subjects = "".join(
        f"<tr><td align='right'>{n}</td><td>{e(s or '(no subject)')}</td></tr>"
        for s, n in alert.top_subjects
    )
    recent = "".join(
        f"<tr><td>{e(_when(ev_.at))}</td><td>{e(ev_.recipient)}</td>"
        f"<td>{e(ev_.subject or '(no subject)')}</td></tr>"
        for ev_ in alert.recent
    )
    doc = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>"
        f"{e(subject)}</title></head><body><h1>{e(title)}</h1>"
        f"<table>{rows}</table><h2>Rates over the window</h2><table border='1' cellpadding='4'>"
        "<tr><th>Rate</th><th>Now</th><th>Thresholds</th><th>Counts</th></tr>"
        f"{rates}</table><h2>Most-complained subjects</h2>"
        f"<table>{subjects or '<tr><td>none</td></tr>'}</table>"
        f"<h2>Most recent complaints</h2><table>{recent or '<tr><td>none</td></tr>'}</table>"
        "<h2>What to do next</h2><ul>"
        + "".join(f"<li>{e(step)}</li>" for step in steps)
        + "</ul>"
        + (
            f"<p><a href='{e(alert.status_url)}'>Status page</a>: rates over time, held mail.</p>"
            if alert.status_url
            else ""
        )
        + "<p>Complaining recipients are suppressed: the gateway will not mail them "
        "again.</p></body></html>"
    )
    return subject, "\n".join(text) + "\n", doc


def alert_message(
    alert: Alert, from_addr: str, to: Sequence[str], hostname: str, now: datetime
) -> bytes:
    """The alert as a MIME message (text and HTML alternatives, CRLF line endings)."""
    subject, text, doc = render(alert)
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"Mailgate <{from_addr}>"
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(idstring=f"alert.{alert.change.id}", domain=hostname)
    # RFC 3834 §5: machine-generated; receivers and auto-responders must not answer it.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Mailgate-Alert"] = alert.dedup_key
    msg.set_content(text)
    msg.add_alternative(doc, subtype="html")
    return msg.as_bytes()


def signature(secret: bytes, body: bytes) -> str:
    """The webhook signature header value: ``sha256=<hex HMAC-SHA256 of the body>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return int(response.status)


class Alerts:
    """Queues alert e-mails (system messages) and posts webhooks on dealer transitions."""

    def __init__(
        self,
        storage: Storage,
        clock: Clock,
        metrics: Metrics,
        *,
        from_addr: str,
        hostname: str,
        operators: Sequence[str] = (),
        webhook_url: str = "",
        webhook_secret: bytes = b"",
        on_enqueued: Callable[[int], None] = lambda _n: None,
        status_link: Callable[[str], str] | None = None,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._metrics = metrics
        self._from = from_addr
        self._hostname = hostname
        self._operators = tuple(operators)
        self._webhook_url = webhook_url
        self._webhook_secret = webhook_secret
        self._on_enqueued = on_enqueued
        self._status_link = status_link
        self._posts: set[asyncio.Task[None]] = set()

    async def on_change(self, change: StateChange, dealer: DealerPolicy | None) -> None:
        """Announce ``change``; failures are logged and counted, never raised."""
        if change.state not in _HEADLINES:
            return
        try:
            alert = await self.build(change, dealer)
        except StorageError as exc:
            log.error("dealer %s: alert not built: %s", change.dealer_id, exc)
            self._metrics.alerts.labels(change.state.value, "email", "failed").inc()
            return
        recipients = list(dict.fromkeys([*(dealer.contacts if dealer else ()), *self._operators]))
        if recipients:
            await self._email(alert, recipients)
        if self._webhook_url:
            task = asyncio.create_task(self._webhook(alert))
            self._posts.add(task)
            task.add_done_callback(self._posts.discard)

    async def build(self, change: StateChange, dealer: DealerPolicy | None) -> Alert:
        """Gather the complaints behind ``change`` into an ``Alert``."""
        since = change.evidence.since
        start = (
            datetime.combine(since, datetime.min.time(), tzinfo=change.at.tzinfo)
            if since is not None
            else change.at - timedelta(days=7)
        )
        events = await self._storage.recent_events(
            change.dealer_id, frozenset({EventKind.COMPLAINT}), start, limit=1000
        )
        subjects = Counter(e.subject for e in events)
        return Alert(
            change=change,
            dealer_name=dealer.name if dealer else change.dealer_id,
            top_subjects=tuple(subjects.most_common(TOP_SUBJECTS)),
            recent=tuple(events[:RECENT_COMPLAINTS]),
            status_url=self._status_link(change.dealer_id) if self._status_link else "",
        )

    async def _email(self, alert: Alert, recipients: list[str]) -> None:
        now = self._clock.now()
        data = alert_message(alert, self._from, recipients, self._hostname, now)
        base = f"alert-{alert.change.dealer_id}-{alert.change.id}"
        messages = [
            NewMessage(
                id=MessageId(f"{base}.{n}"),
                dealer_id=alert.change.dealer_id,
                mail_from="",
                rcpt=rcpt,
                data=data,
                received_at=now,
                system=True,
                note=f"dealer alert: {alert.kind}",
            )
            for n, rcpt in enumerate(recipients)
        ]
        try:
            if await self._storage.get(messages[0].id) is not None:
                return  # already queued for this transition
            await self._storage.enqueue(messages)
        except StorageError as exc:
            log.error("dealer %s: alert e-mail not queued: %s", alert.change.dealer_id, exc)
            self._metrics.alerts.labels(alert.kind, "email", "failed").inc()
            return
        self._metrics.alerts.labels(alert.kind, "email", "ok").inc()
        self._on_enqueued(len(messages))
        log.info(
            "dealer %s: %s alert queued as %s to %s",
            alert.change.dealer_id,
            alert.kind,
            base,
            ", ".join(recipients),
            extra={"dealer_id": alert.change.dealer_id},
        )

    async def _webhook(self, alert: Alert) -> None:
        body = json.dumps(alert.as_json(), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "mailgate-alerts",
            "X-Mailgate-Event": f"dealer.{alert.kind}",
            "X-Mailgate-Signature": signature(self._webhook_secret, body),
        }
        try:
            status = await asyncio.to_thread(
                _post, self._webhook_url, body, headers, WEBHOOK_TIMEOUT
            )
        except Exception as exc:  # any network or HTTP failure: log it, keep going
            log.warning("dealer %s: alert webhook failed: %s", alert.change.dealer_id, exc)
            self._metrics.alerts.labels(alert.kind, "webhook", "failed").inc()
            return
        result = "ok" if 200 <= status < 300 else "failed"
        self._metrics.alerts.labels(alert.kind, "webhook", result).inc()

    async def drain(self) -> None:
        """Wait for webhook posts in flight (shutdown and tests)."""
        if self._posts:
            await asyncio.gather(*self._posts, return_exceptions=True)

    async def queue_notice(
        self, dealer: DealerPolicy, *, kind: str, key: str, subject: str, text: str, doc: str
    ) -> bool:
        """Queue a notice that is no state change (held mail) to the dealer's contacts.

        The same path as an alert: one system message per recipient (the dealer's contacts
        and the operators), null sender, ``Auto-Submitted``. ``key`` names the notice:
        it is queued at most once per key, so callers batch by choosing it. Returns
        whether it was queued now; failures are logged and counted, never raised.
        """
        recipients = list(dict.fromkeys([*dealer.contacts, *self._operators]))
        if not recipients:
            return False
        now = self._clock.now()
        msg = EmailMessage(policy=SMTP)
        msg["From"] = f"Mailgate <{self._from}>"
        msg["To"] = ", ".join(recipients)
        msg["Subject"] = subject
        msg["Date"] = format_datetime(now)
        msg["Message-ID"] = make_msgid(idstring=f"notice.{key}", domain=self._hostname)
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834 §5
        msg["X-Mailgate-Alert"] = key
        msg.set_content(text)
        msg.add_alternative(doc, subtype="html")
        data = msg.as_bytes()
        messages = [
            NewMessage(
                id=MessageId(f"{key}.{n}"),
                dealer_id=dealer.dealer_id,
                mail_from="",
                rcpt=rcpt,
                data=data,
                received_at=now,
                system=True,
                note=f"dealer notice: {kind}",
            )
            for n, rcpt in enumerate(recipients)
        ]
        try:
            if await self._storage.get(messages[0].id) is not None:
                return False  # this batch was announced already (another node, a restart)
            await self._storage.enqueue(messages)
        except StorageError as exc:
            log.error("dealer %s: %s notice not queued: %s", dealer.dealer_id, kind, exc)
            self._metrics.alerts.labels(kind, "email", "failed").inc()
            return False
        self._metrics.alerts.labels(kind, "email", "ok").inc()
        self._on_enqueued(len(messages))
        log.info("dealer %s: %s notice queued as %s to %s", dealer.dealer_id, kind, key,
                 ", ".join(recipients), extra={"dealer_id": dealer.dealer_id})  # fmt: skip
        return True
