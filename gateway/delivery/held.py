"""Held messages: who is told about them, and what happens to those nobody released.

A held message waits for an operator (``mailgate held release``/``delete``). Nothing
held vanishes unannounced:

* **At intake** the CRM's ``250`` says ``held``, with the reason and the id
  (``replies.accepted``).
* **Notices** (``HeldNotices``): the dealer's contacts (and the operators) get one e-mail
  per dealer per ``delivery.held_notice_interval`` listing what was held in that
  interval, why, and the link to the dealer's status page. Intervals are fixed slots of
  the clock and a notice's id names its dealer and slot, so a restart or a second node
  never sends the same notice twice (``Alerts.queue_notice``).
* **Expiry** (``expire_held``): one nobody released within ``delivery.held_expiry`` is
  deleted, and its sender gets an RFC 3464 DSN saying it was held and why (never for the
  null sender or the gateway's own mail). The DSN is a queued system message with the id
  ``<message id>.dsn`` (so it is in ``mailgate queue ls`` and counted in
  ``mailgate_dsn_generated_total``); the expiry is logged with the message, the dealer and
  why it was held, and counted in ``mailgate_held_expired_total{dealer}``. The age is
  taken from when the message was last changed (``updated_at``: when it was held).
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import html
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.alerts import Alerts
from gateway.clock import Clock
from gateway.delivery.dsn import build_dsn
from gateway.errors import StorageError
from gateway.findings import CATALOGUE
from gateway.metrics import Metrics
from gateway.policy.model import DealerPolicy
from gateway.policy.store import PolicyStore
from gateway.storage.base import Storage
from gateway.tracking import parse_verp
from gateway.types import (
    MessageId,
    MessageState,
    NewMessage,
    OutcomeKind,
    QueuedMessage,
    RcptOutcome,
)

log = logging.getLogger("gateway.delivery")

BATCH = 10_000  # held messages read per pass; the rest go on the next pass
LISTED = 20  # messages named in one notice; the rest are counted
CATCH_UP = 4  # past intervals a pass still announces (after a restart or a slow pass)


# -- expiry ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DsnSender:
    """Who the expiry DSNs say they are from (``delivery.dsn_from``, ``server.hostname``)."""

    hostname: str
    from_addr: str = ""  # empty: MAILER-DAEMON@hostname


def _from_address(data: bytes) -> str:
    """The first From: address of a stored copy's header, or ``""``."""
    try:
        header = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(data)
        addresses = header["From"].addresses if header["From"] is not None else ()
    except Exception:  # a header the stdlib cannot read: no one to tell
        return ""
    return next((a.addr_spec for a in addresses if a.domain), "")


async def _queue_expiry_dsn(
    storage: Storage,
    message: QueuedMessage,
    older_than: timedelta,
    sender: DsnSender,
    now: datetime,
) -> MessageId | None:
    """Queue the DSN for an expired held message; its id, or ``None`` when none is due."""
    if not message.mail_from or message.system:
        return None  # RFC 3464 §2: never for the null sender; never for our own mail
    to = message.mail_from
    if parse_verp(to) is not None:
        # With a bounce domain the stored return path is this gateway's VERP address: the
        # person to tell is the sender named in the message (a domain of the dealer).
        to = _from_address(message.data)
        if not to:
            return None
    dsn_id = MessageId(f"{message.id}.dsn")
    if await storage.get(dsn_id) is not None:
        return dsn_id
    why = ", ".join(message.findings) or "held"
    detail = f": {message.note}" if message.note else ""
    outcome = RcptOutcome(
        OutcomeKind.FAILED,
        550,
        "5.7.1",
        f"Held for review by the gateway ({why}{detail}) and not released within "
        f"{older_than}; deleted without being sent",
    )
    data = build_dsn(
        original=message,
        outcome=outcome,
        reporting_mta=sender.hostname,
        from_addr=sender.from_addr or f"MAILER-DAEMON@{sender.hostname}",
        now=now,
        message_id=f"{dsn_id}@{sender.hostname}",
        to=to,
        held_since=message.updated_at.astimezone(UTC),
    )
    dsn = NewMessage(
        id=dsn_id,
        dealer_id=message.dealer_id,
        mail_from="",  # RFC 3464 §2, RFC 5321 §4.5.5: no DSN about a DSN
        rcpt=to,
        data=data,
        received_at=now,
        system=True,
        note=f"delivery status notification: held message {message.id} expired",
    )
    await storage.enqueue([dsn])
    return dsn_id


async def expire_held(
    storage: Storage,
    now: datetime,
    older_than: timedelta,
    metrics: Metrics | None = None,
    *,
    dsn: DsnSender | None = None,
) -> int:
    """Delete held messages held longer than ``older_than``, each with its DSN; how many.

    ``dsn`` says who the DSNs are from; ``None`` sends none (a caller with no host name).
    """
    cutoff = now - older_than
    expired = 0
    for listed in await storage.list_messages(state=MessageState.HELD, limit=BATCH):
        if listed.updated_at > cutoff:
            continue
        message = await storage.get(listed.id)  # the listing has no body; the DSN needs it
        if message is None or message.state is not MessageState.HELD:
            continue  # released or deleted meanwhile
        dsn_id = None
        if dsn is not None:
            # The DSN is queued first: a crash before the delete leaves the message to
            # expire again, with the same DSN id, so it is neither lost nor sent twice.
            dsn_id = await _queue_expiry_dsn(storage, message, older_than, dsn, now)
        if not await storage.delete(message.id):
            if dsn_id is not None:
                await storage.delete(dsn_id)  # released at this very moment: no failure
            continue
        expired += 1
        if metrics is not None:
            metrics.held_expired.labels(message.dealer_id).inc()
            if dsn_id is not None:
                metrics.dsn_sent.inc()
        log.warning(
            "expired held message id=%s dealer=%s held since %s findings=%s note=%s dsn=%s",
            message.id, message.dealer_id, message.updated_at.isoformat(),
            ",".join(message.findings) or "-", message.note or "-", dsn_id or "-",
        )  # fmt: skip
    return expired


# -- notices --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeldItem:
    """One held message as a notice lists it."""

    id: str
    held_at: datetime
    rcpt: str
    subject: str
    findings: tuple[str, ...]
    note: str


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def render_held_notice(
    dealer: DealerPolicy,
    items: Sequence[HeldItem],
    total: int,
    *,
    status_url: str,
    held_expiry: timedelta,
) -> tuple[str, str, str]:
    """The subject, text and HTML of a held-mail notice (pure)."""
    who = f"{dealer.name or dealer.dealer_id} ({dealer.dealer_id})"
    noun = "message" if total == 1 else "messages"
    subject = f"[Mailgate] {dealer.name or dealer.dealer_id}: {total} {noun} held for review"
    intro = (
        f"The gateway held {total} {noun} from {who} instead of sending "
        f"{'it' if total == 1 else 'them'}. Held mail is not lost and not sent: an operator "
        f"can release it; after {held_expiry} unreleased it is deleted and the sender gets "
        "a delivery failure notice."
    )
    codes = list(dict.fromkeys(code for item in items for code in item.findings))
    text = [f"{total} {noun} from {who} held for review", "", intro, ""]
    for item in items:
        text.append(f"  {_when(item.held_at)}  {item.id}  to {item.rcpt}")
        text.append(f"      subject: {item.subject or '(no subject)'}")
        text.append(f"      why: {', '.join(item.findings) or '-'}: {item.note or '-'}")
    if total > len(items):
        text.append(f"  ... and {total - len(items)} more")
    text += ["", "What each reason means, and what to change:"]
    for code in codes:
        kind = CATALOGUE.get(code)
        if kind is not None:
            text.append(f"  - {code}: {kind.summary}. Fix: {kind.advice}.")
    if status_url:
        text += ["", f"Status page (everything held now): {status_url}"]
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(_when(i.held_at))}</td><td>{e(i.rcpt)}</td>"
        f"<td>{e(i.subject or '(no subject)')}</td>"
        f"<td><b>{e(', '.join(i.findings) or '-')}</b>: {e(i.note or '-')}</td></tr>"
        for i in items
    )
    more = f"<p>... and {total - len(items)} more.</p>" if total > len(items) else ""
    advice = "".join(
        f"<li><b>{e(code)}</b>: {e(CATALOGUE[code].summary)}. <i>Fix:</i> "
        f"{e(CATALOGUE[code].advice)}.</li>"
        for code in codes
        if code in CATALOGUE
    )
    link = f"<p><a href='{e(status_url)}'>Status page</a>: everything held now.</p>"
    doc = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(subject)}</title></head>"
        f"<body><h1>{total} {noun} from {e(who)} held for review</h1><p>{e(intro)}</p>"
        "<table border='1' cellpadding='4'><tr><th>held</th><th>to</th><th>subject</th>"
        f"<th>why</th></tr>{rows}</table>{more}<h2>What to change</h2><ul>{advice}</ul>"
        f"{link if status_url else ''}</body></html>"
    )
    return subject, "\n".join(text) + "\n", doc


def _subject(data: bytes) -> str:
    try:
        header = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(data)
        return " ".join(str(header["Subject"] or "").split())[:200]
    except Exception:
        return ""


class HeldNotices:
    """One notice per dealer and interval about the mail held in that interval."""

    def __init__(
        self,
        storage: Storage,
        policies: PolicyStore,
        alerts: Alerts,
        clock: Clock,
        *,
        interval: timedelta,
        held_expiry: timedelta,
        status_link: Callable[[str], str] | None = None,
    ) -> None:
        self._storage = storage
        self._policies = policies
        self._alerts = alerts
        self._clock = clock
        self._interval = max(interval.total_seconds(), 1.0)
        self._held_expiry = held_expiry
        self._status_link = status_link

    def slot(self, moment: datetime) -> int:
        """The interval ``moment`` falls in (fixed slots of the clock)."""
        return int(moment.timestamp() // self._interval)

    def _start(self, slot: int) -> datetime:
        return datetime.fromtimestamp(slot * self._interval, UTC)

    async def run(self) -> None:
        """Announce each interval's held mail once it is over, until cancelled."""
        while True:
            try:
                await self.send_due()
            except StorageError as exc:
                log.warning("held-mail notices: store error: %s", exc)
            now = self._clock.now()
            wait = (self._start(self.slot(now) + 1) - now).total_seconds()
            await asyncio.sleep(max(wait, 0.0) + 1.0)

    async def send_due(self) -> int:
        """Queue the notices of the last complete intervals not yet announced; how many."""
        current = self.slot(self._clock.now())
        by_slot: dict[tuple[str, int], list[QueuedMessage]] = defaultdict(list)
        for message in await self._storage.list_messages(state=MessageState.HELD, limit=BATCH):
            slot = self.slot(message.updated_at)
            if not message.system and current - CATCH_UP <= slot < current:
                by_slot[(message.dealer_id, slot)].append(message)
        sent = 0
        for (dealer_id, slot), messages in sorted(by_slot.items()):
            dealer = self._policies.current.dealer(dealer_id)
            if dealer is None:
                continue
            key = f"held-{dealer_id}-{slot}"
            if await self._storage.get(MessageId(f"{key}.0")) is not None:
                continue  # announced already; no need to read the messages again
            messages.sort(key=lambda m: m.updated_at)
            items = []
            for listed in messages[:LISTED]:
                full = await self._storage.get(listed.id)
                items.append(
                    HeldItem(listed.id, listed.updated_at, listed.rcpt,
                             _subject(full.data) if full else "", listed.findings, listed.note)
                )  # fmt: skip
            subject, text, doc = render_held_notice(
                dealer,
                items,
                len(messages),
                status_url=self._status_link(dealer_id) if self._status_link else "",
                held_expiry=self._held_expiry,
            )
            if await self._alerts.queue_notice(
                dealer, kind="held", key=key, subject=subject, text=text, doc=doc
            ):
                sent += 1
        return sent
