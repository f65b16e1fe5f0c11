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

Flap damping: a dealer suspended and resumed over and over must not get an e-mail per
change. E-mails of one kind (warning, suspended, resumed) go to a dealer at most once per
``alerts.email_interval``; a change within it is held back, and the changes held back are
coalesced into one e-mail about the latest of them, sent when the interval of its kind has
passed (``flush_due``, from ``run``) or at shutdown (``drain``). So the last state is always
told, and an e-mail that follows held-back changes lists them. The webhook, for machines,
still gets every change. The damping state is this process's own: each node damps what
it announces.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import logging
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
EMAIL_INTERVAL = timedelta(hours=1)  # settings.AlertSettings.email_interval
HELD_LISTED = 10  # held-back changes an e-mail lists (it counts them all)
FLUSH_TICK = 5.0  # seconds between looks for held-back e-mails that are due

_HEADLINES = {
    DealerState.WARNED: "warning",
    DealerState.SUSPENDED: "suspended",
    DealerState.RESUMED: "resumed",
}

_PAUSED = (
    "New mail from your CRM is refused until the suspension ends; mail already queued is "
    "held, not lost, and goes out when you are resumed."
)
_COMPLAINT_STEPS = (
    "Stop mailing people who did not ask for mail from you: check where the addresses of "
    "the complaining recipients came from (lead source, purchased lists, old customers who "
    "never opted in).",
    "Make the unsubscribe link easy to find and honour it at once.",
)
_BOUNCE_STEPS = (
    "Many of your messages go to addresses that do not exist: clean your CRM's contact "
    "list, and check how addresses are typed in (web forms, the showroom).",
    "Addresses that bounced for good are already suppressed and will not be mailed again.",
)


def _cause(alert: Alert) -> str:
    """What the change is about.

    ``operator`` (made by hand), ``expiry`` (a suspension ran out), ``complaints`` or
    ``bounces`` (the rate that crossed its threshold).
    """
    change = alert.change
    if change.actor.value != "auto" or change.state is DealerState.RESUMED:
        return "operator" if change.actor.value != "auto" else "expiry"
    ev = change.evidence
    level = "suspend" if change.state is DealerState.SUSPENDED else "warn"
    rate = ev.rates.get("complaint_rate", 0.0)
    threshold = ev.thresholds.get(f"complaint_{level}", 0.0)
    volume = ev.thresholds.get("min_volume_complaints", 0.0)
    if threshold and rate >= threshold and ev.counts.delivered >= volume:
        return "complaints"
    return "bounces"


def next_steps(alert: Alert, reply_to: str = "") -> tuple[str, ...]:
    """What the dealer should do now, in the order to do it (pure).

    Only facts the alert shows are referred to: the subjects are "above" (they come before
    the steps) and are named only when there are any; a reply is invited only when replies
    reach someone (``reply_to``).
    """
    change, cause = alert.change, _cause(alert)
    contact = (
        f"Reply to this message (it reaches {reply_to}) or call your gateway operator"
        if reply_to
        else "Contact your gateway operator"
    )
    subjects = (
        " The most-complained subjects above show which campaign drew the complaints."
        if alert.top_subjects
        else ""
    )
    if change.state is DealerState.WARNED:
        head = "Your mail still goes out, but the rate is close to the suspension threshold."
        if cause == "bounces":
            return (head, *_BOUNCE_STEPS)
        return (
            head + subjects,
            *_COMPLAINT_STEPS,
            "Send less to recipients who have not opened or replied in months.",
        )
    if change.state is DealerState.SUSPENDED:
        if cause == "operator":
            return (
                "Your gateway operator suspended your mail for the reason given above.",
                _PAUSED,
                f"{contact} to find out what they need from you before they resume you.",
            )
        find = (
            "Find the campaign or list behind the complaints and stop it." + subjects
            if cause == "complaints"
            else _BOUNCE_STEPS[0]
        )
        kept_out = (
            "Remove recipients who did not opt in; the complaining addresses are already "
            "suppressed and will not be mailed again."
            if cause == "complaints"
            else _BOUNCE_STEPS[1]
        )
        return (
            _PAUSED,
            find,
            kept_out,
            f"{contact} with what you changed; they can resume you before the suspension ends.",
        )
    if change.state is DealerState.RESUMED:
        steps = [
            "Your mail flows again, including the mail held during the suspension.",
            "Rates are counted afresh from now on; the same thresholds apply.",
        ]
        if change.evidence.counts.complaints or alert.top_subjects:
            steps.append(
                "Keep the changes you made after the complaints: more complaints from the "
                "same campaign would suspend you again."
            )
        return tuple(steps)
    return ()


@dataclass(frozen=True, slots=True)
class Alert:
    """Everything one alert says; ``dedup_key`` names the transition it is about."""

    change: StateChange
    dealer_name: str
    top_subjects: tuple[tuple[str, int], ...]
    recent: tuple[FeedbackEvent, ...]
    status_url: str = ""  # the dealer's read-only status page (admin/status.py)
    # Changes since the last e-mail that were not mailed on their own (flap damping): how
    # many, and the latest of them, oldest first.
    unsent_count: int = 0
    unsent: tuple[StateChange, ...] = ()

    @property
    def dedup_key(self) -> str:
        """Unique per transition: the same state is announced once."""
        return f"{self.change.dealer_id}:{self.change.id}:{self.change.state.value}"

    @property
    def kind(self) -> str:
        """``warning``, ``suspended`` or ``resumed``."""
        return _HEADLINES.get(self.change.state, self.change.state.value)

    def as_json(self) -> dict[str, object]:
        """The webhook payload (for the operators' systems: it carries ``by`` and ``note``)."""
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
            "note": change.note,
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


_STATE_WORDS = {
    DealerState.WARNED: "Warned",
    DealerState.SUSPENDED: "Suspended",
    DealerState.RESUMED: "Resumed",
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


def _unsent_lines(alert: Alert) -> list[str]:
    """A heading sentence and one line per listed change, or nothing."""
    if not alert.unsent_count:
        return []
    count = alert.unsent_count
    head = (
        f"Since the last e-mail the state changed {count} more "
        f"{'time' if count == 1 else 'times'} without an e-mail each (repeated changes are "
        "gathered into one e-mail); this e-mail gives the state now."
    )
    listed = [
        f"{_when(c.at)}  {c.previous.value} -> {c.state.value}, "
        f"{'automatically' if c.actor.value == 'auto' else 'by the operator'}"
        for c in alert.unsent
    ]
    if count > len(alert.unsent):
        listed.insert(0, f"(the last {len(alert.unsent)} of {count})")
    return [head, *listed]


def render(alert: Alert, *, reply_to: str = "", internal: bool = False) -> tuple[str, str, str]:
    """The subject, plain-text body and HTML body of ``alert`` (pure).

    The dealer's copy shows the reason the operator gave for the dealer, never the
    operator's name or internal note; ``internal`` (the operators' copy) adds both.
    ``reply_to``: where replies go; without it the text invites no reply.
    """
    change, ev = alert.change, alert.change.evidence
    who = f"{alert.dealer_name} ({change.dealer_id})"
    title = {
        DealerState.WARNED: f"Warning for {who}: complaint or bounce rate too high",
        DealerState.SUSPENDED: f"{who} is suspended",
        DealerState.RESUMED: f"{who} is resumed",
    }.get(change.state, f"{who}: {change.state.value}")
    subject = f"[Mailgate] {title}"
    actor = "automatically" if change.actor.value == "auto" else "by your gateway operator"
    window = f"{ev.since} to {ev.until}" if ev.since and ev.until else "(no window)"
    facts = [
        (
            "What",
            f"{_STATE_WORDS.get(change.state, change.state.value)} {actor} "
            f"(was {change.previous.value})",
        ),
        ("Why", change.reason),
        ("When", _when(change.at)),
    ]
    if change.expires_at is not None:
        facts.append(("Until", f"{_when(change.expires_at)}, unless resumed earlier"))
    if internal and change.by:
        facts.append(("By", change.by))
    if internal and change.note:
        facts.append(("Note", f"{change.note} (internal, not shown to the dealer)"))
    facts.append(("Window", window))
    counts = ev.counts
    facts.append(
        (
            "Counts",
            f"{counts.sent} sent, {counts.delivered} delivered, {counts.complaints} "
            f"complaints, {counts.hard_bounces} hard and {counts.soft_bounces} soft bounces",
        )
    )
    steps = next_steps(alert, reply_to)
    complained = bool(counts.complaints or alert.top_subjects)
    suppressed = (
        "Complaining recipients are suppressed: the gateway will not mail them again."
        if complained
        else ""
    )

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
    unsent = _unsent_lines(alert)
    if unsent:
        text += ["", unsent[0]]
        text += [f"  {line}" for line in unsent[1:]]
    text += ["", "What to do next:"]
    text += [f"  - {step}" for step in steps]
    if alert.status_url:
        text += ["", f"Status page (rates over time, held mail): {alert.status_url}"]
    if suppressed:
        text += ["", suppressed]

    e = html.escape
    # Mail clients keep inline styles only; one narrow column reads on a phone and a desktop.
    cell = "style='text-align:left;vertical-align:top;padding:2px 12px 2px 0'"
    rows = "".join(f"<tr><th {cell}>{e(n)}</th><td {cell}>{e(v)}</td></tr>" for n, v in facts)
    rates = "".join(
        f"<li><b>{e(n)}: {e(r)}</b><br>{e(t)}<br>{e(c)}</li>" for n, r, t, c in _rate_lines(alert)
    )
    subjects = "".join(
        f"<tr><td {cell}>{n}</td><td {cell}>{e(s or '(no subject)')}</td></tr>"
        for s, n in alert.top_subjects
    )
    recent = "".join(
        f"<tr><td {cell}>{e(_when(ev_.at))}</td><td {cell}>{e(ev_.recipient)}<br>"
        f"{e(ev_.subject or '(no subject)')}</td></tr>"
        for ev_ in alert.recent
    )
    doc = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'><title>"
        f"{e(subject)}</title></head><body style='font:15px/1.45 system-ui,sans-serif;"
        "color:#222;max-width:640px;margin:0 auto;padding:12px'>"
        f"<h1 style='font-size:22px;line-height:1.25'>{e(title)}</h1>"
        f"<table>{rows}</table><h2>Rates over the window</h2><ul>{rates}</ul>"
        "<h2>Most-complained subjects</h2>"
        f"<table>{subjects or '<tr><td>none</td></tr>'}</table>"
        f"<h2>Most recent complaints</h2><table>{recent or '<tr><td>none</td></tr>'}</table>"
        + (
            f"<h2>Since the last e-mail</h2><p>{e(unsent[0])}</p><ul>"
            + "".join(f"<li>{e(line)}</li>" for line in unsent[1:])
            + "</ul>"
            if unsent
            else ""
        )
        + "<h2>What to do next</h2><ul>"
        + "".join(f"<li>{e(step)}</li>" for step in steps)
        + "</ul>"
        + (
            f"<p><a href='{e(alert.status_url)}'>Status page</a>: rates over time, held mail.</p>"
            if alert.status_url
            else ""
        )
        + (f"<p>{e(suppressed)}</p>" if suppressed else "")
        + "</body></html>"
    )
    return subject, "\n".join(text) + "\n", doc


def alert_message(
    alert: Alert,
    from_addr: str,
    to: Sequence[str],
    hostname: str,
    now: datetime,
    *,
    reply_to: str = "",
    internal: bool = False,
) -> bytes:
    """The alert as a MIME message (text and HTML alternatives, CRLF line endings).

    ``reply_to`` (an address someone reads) becomes the ``Reply-To`` field; ``internal``
    renders the operators' copy (``render``).
    """
    subject, text, doc = render(alert, reply_to=reply_to, internal=internal)
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"Mailgate <{from_addr}>"
    msg["To"] = ", ".join(to)
    if reply_to:
        msg["Reply-To"] = reply_to
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


@dataclass(slots=True)
class _HeldBack:
    """A dealer's changes not mailed yet: the latest is told when ``due``."""

    latest: StateChange
    dealer: DealerPolicy | None
    due: datetime
    count: int = 0
    changes: deque[StateChange] = field(default_factory=lambda: deque(maxlen=HELD_LISTED + 1))


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
        reply_to: str = "",
        webhook_url: str = "",
        webhook_secret: bytes = b"",
        on_enqueued: Callable[[int], None] = lambda _n: None,
        status_link: Callable[[str], str] | None = None,
        email_interval: timedelta = EMAIL_INTERVAL,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._metrics = metrics
        self._from = from_addr
        self._hostname = hostname
        self._operators = tuple(operators)
        # Replies to an alert go to someone who reads them, or the alert invites none.
        self._reply_to = reply_to or (self._operators[0] if self._operators else "")
        self._webhook_url = webhook_url
        self._webhook_secret = webhook_secret
        self._on_enqueued = on_enqueued
        self._status_link = status_link
        self._interval = email_interval
        self._posts: set[asyncio.Task[None]] = set()
        self._mailed: dict[tuple[str, str], datetime] = {}  # (dealer, kind) -> last e-mail
        self._held: dict[str, _HeldBack] = {}  # dealer -> changes not mailed yet

    async def on_change(self, change: StateChange, dealer: DealerPolicy | None) -> None:
        """Announce ``change``; failures are logged and counted, never raised."""
        if change.state not in _HEADLINES:
            return
        unsent = self._admit(change, dealer)
        if unsent is not None:
            await self._announce(change, dealer, unsent)
        elif self._webhook_url:
            await self._announce(change, dealer, None)

    def _admit(
        self, change: StateChange, dealer: DealerPolicy | None
    ) -> tuple[int, tuple[StateChange, ...]] | None:
        """Whether ``change`` is mailed now: the changes it supersedes, or ``None`` (held)."""
        now = self._clock.now()
        kind = _HEADLINES[change.state]
        last = self._mailed.get((change.dealer_id, kind))
        # A clock stepped back (now < last) does not hold mail back for the size of the step.
        if last is None or not last <= now < last + self._interval:
            self._mailed[(change.dealer_id, kind)] = now
            held = self._held.pop(change.dealer_id, None)
            return (held.count, tuple(held.changes)[-HELD_LISTED:]) if held else (0, ())
        held = self._held.get(change.dealer_id)
        if held is None:
            held = self._held[change.dealer_id] = _HeldBack(change, dealer, now)
        held.latest, held.dealer, held.due = change, dealer, last + self._interval
        held.count += 1
        held.changes.append(change)
        self._metrics.alerts.labels(kind, "email", "held").inc()
        log.info(
            "dealer %s: %s alert e-mail held back until %s (one per %s and kind)",
            change.dealer_id,
            kind,
            _when(held.due),
            self._interval,
            extra={"dealer_id": change.dealer_id},
        )
        return None

    async def flush_due(self, *, everything: bool = False) -> int:
        """Mail the held-back changes whose interval has passed (all with ``everything``).

        Each dealer gets one e-mail about its latest change, listing the ones before it.
        Returns how many dealers were told.
        """
        now = self._clock.now()
        due = [d for d, held in self._held.items() if everything or held.due <= now]
        for dealer_id in due:
            held = self._held.pop(dealer_id)
            self._mailed[(dealer_id, _HEADLINES[held.latest.state])] = now
            earlier = tuple(held.changes)[:-1][-HELD_LISTED:]
            await self._announce(held.latest, held.dealer, (held.count - 1, earlier), hook=False)
        return len(due)

    async def run(self, tick: float = FLUSH_TICK) -> None:
        """Mail held-back changes as they fall due, until cancelled."""
        while True:
            await asyncio.sleep(tick)
            try:
                await self.flush_due()
            except Exception:  # the loop must outlive a bug in one announcement
                log.exception("alerts: mailing held-back changes failed")

    async def _announce(
        self,
        change: StateChange,
        dealer: DealerPolicy | None,
        unsent: tuple[int, tuple[StateChange, ...]] | None,
        *,
        hook: bool = True,
    ) -> None:
        """E-mail ``change`` (unless ``unsent`` is ``None``) and post it to the webhook."""
        count, earlier = unsent if unsent is not None else (0, ())
        try:
            alert = await self.build(change, dealer, unsent_count=count, unsent=earlier)
        except StorageError as exc:
            log.error("dealer %s: alert not built: %s", change.dealer_id, exc)
            self._metrics.alerts.labels(_HEADLINES[change.state], "email", "failed").inc()
            return
        recipients = list(dict.fromkeys([*(dealer.contacts if dealer else ()), *self._operators]))
        if unsent is not None and recipients:
            await self._email(alert, recipients)
        if hook and self._webhook_url:
            task = asyncio.create_task(self._webhook(alert))
            self._posts.add(task)
            task.add_done_callback(self._posts.discard)

    async def build(
        self,
        change: StateChange,
        dealer: DealerPolicy | None,
        *,
        unsent_count: int = 0,
        unsent: tuple[StateChange, ...] = (),
    ) -> Alert:
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
            unsent_count=unsent_count,
            unsent=unsent,
        )

    async def _email(self, alert: Alert, recipients: list[str]) -> None:
        now = self._clock.now()
        # Two copies: the dealer's contacts get the dealer's (the reason only); the
        # operators get theirs, with who made the change and the internal note.
        dealer_to = [r for r in recipients if r not in self._operators]
        operator_to = [r for r in recipients if r in self._operators]
        copies = {
            internal: alert_message(
                alert,
                self._from,
                to,
                self._hostname,
                now,
                reply_to=self._reply_to,
                internal=internal,
            )
            for internal, to in ((False, dealer_to), (True, operator_to))
            if to
        }
        base = f"alert-{alert.change.dealer_id}-{alert.change.id}"
        messages = [
            NewMessage(
                id=MessageId(f"{base}.{n}"),
                dealer_id=alert.change.dealer_id,
                mail_from="",
                rcpt=rcpt,
                data=copies[rcpt in self._operators],
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
        """Mail every held-back change now, then wait for webhook posts in flight.

        Called at shutdown (before the store closes): the e-mails are queued, and the last
        state is told even though the process will not be there when the interval ends.
        """
        await self.flush_due(everything=True)
        if self._posts:
            await asyncio.gather(*self._posts, return_exceptions=True)
