"""Sending the deliverability reports: gather, claim the period once, queue the e-mails.

``Reports.run`` looks every ``REPORT_TICK`` for dealers whose report period is due
(``periods.due``, per the dealer's ``[report]``), and for each:

1. claims the period in the store (``Storage.claim_report``): one node wins, across every
   node sharing the store; a node that dies while building a report leaves an open claim
   that another takes over after ``CLAIM_LEASE``;
2. gathers the figures from what the store already keeps (the sent log, feedback events,
   duplicate drops, finding sets, held messages, daily counters, consent records) and the
   receiving provider of each recipient domain (``providers.ProviderLookup``);
3. skips the period when nothing happened in it, else queues one e-mail per contact who
   has not opted out (each with its own signed unsubscribe link, ``links.ReportLinks``)
   through the gateway's own queue as *system* messages with the null sender, like the
   alerts (``gateway/alerts.py``): the delivery worker sends them even to a suspended
   dealer, they never bounce to anyone (RFC 3834 §3.3), and they are not counted as the
   dealer's mail. Their ids derive from the period, so a report is queued at most once;
4. records the outcome (``sent``, ``skipped`` or ``no-recipients``) on the claim.

A store failure leaves the claim open; the lease makes the period due again later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import SMTP, default
from email.utils import format_datetime, make_msgid

from gateway.clock import Clock
from gateway.consent.rules import evaluate
from gateway.errors import StorageError
from gateway.findings import CATALOGUE
from gateway.policy.model import DealerPolicy
from gateway.policy.store import PolicyStore
from gateway.reports import periods
from gateway.reports.content import CONSENT_HORIZON, HeldLine, Report, figures, rate_lines, render
from gateway.reports.links import ReportLinks
from gateway.reports.periods import Period
from gateway.reports.providers import ProviderLookup
from gateway.reputation.records import DayCounts
from gateway.storage.base import Storage
from gateway.types import MessageId, MessageState, NewMessage

log = logging.getLogger("gateway.reports")

REPORT_TICK = 300.0  # seconds between looks for due reports
CLAIM_LEASE = timedelta(minutes=10)
HELD_SCAN = 500
CONSENT_PAGE = 2000
LOOKUPS = 10  # MX lookups at once


def subject_of(data: bytes) -> str:
    """The decoded ``Subject:`` of a stored message (``""`` without one)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    parsed = BytesHeaderParser(policy=default).parsebytes(head + b"\r\n\r\n")
    subject = parsed.get("Subject")
    return " ".join(str(subject).split()) if subject is not None else ""


def mask(address: str) -> str:
    """``j***@example.com``: enough to recognise, not to harvest."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def report_message(
    report: Report,
    *,
    from_addr: str,
    to: str,
    hostname: str,
    now: datetime,
    unsubscribe_url: str = "",
) -> bytes:
    """The report as a MIME message to one contact (text and HTML, CRLF line endings)."""
    subject, text, doc = render(report, unsubscribe_url)
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"Mailgate <{from_addr}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(idstring=f"report.{report.period.first}", domain=hostname)
    # RFC 3834 §5: machine-generated; receivers and auto-responders must not answer it.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Mailgate-Report"] = f"{report.dealer_id}:{report.period.key}"
    if unsubscribe_url:
        # RFC 2369 and RFC 8058: the mail client offers a one-click "unsubscribe".
        msg["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(text)
    msg.add_alternative(doc, subtype="html")
    return msg.as_bytes()


class Reports:
    """Builds and queues the dealers' deliverability reports; see the module docstring."""

    def __init__(
        self,
        storage: Storage,
        policies: PolicyStore,
        clock: Clock,
        *,
        node: str,
        from_addr: str,
        hostname: str,
        providers: ProviderLookup,
        status_link: Callable[[str], str] | None = None,
        links: ReportLinks | None = None,
        on_enqueued: Callable[[int], None] = lambda _n: None,
        lease: timedelta = CLAIM_LEASE,
    ) -> None:
        self._storage = storage
        self._policies = policies
        self._clock = clock
        self._node = node
        self._from = from_addr
        self._hostname = hostname
        self._providers = providers
        self._status_link = status_link
        self._links = links
        self._on_enqueued = on_enqueued
        self._lease = lease

    async def run(self, tick: float = REPORT_TICK) -> None:
        """Send due reports now and every ``tick`` seconds, until cancelled."""
        while True:
            try:
                await self.send_due()
            except Exception:  # the loop must outlive a bug in one report
                log.exception("reports: sending due reports failed")
            await asyncio.sleep(tick)

    async def send_due(self) -> dict[str, str]:
        """Handle every dealer's due period; returns dealer -> outcome for those handled."""
        now = self._clock.now()
        done: dict[str, str] = {}
        for dealer in list(self._policies.current.dealers.values()):
            period = periods.due(dealer.report.every, now, dealer.report.hour)
            if period is None or not dealer.contacts:
                continue
            try:
                outcome = await self.send(dealer, period, now)
            except StorageError as exc:
                log.warning("report %s %s: store error, retried later: %s",
                            dealer.dealer_id, period.key, exc)  # fmt: skip
                continue
            if outcome:
                done[dealer.dealer_id] = outcome
        return done

    async def send(self, dealer: DealerPolicy, period: Period, now: datetime) -> str:
        """Claim, build and queue one report; the outcome, or ``""`` when another node has it."""
        dealer_id = dealer.dealer_id
        if not await self._storage.claim_report(dealer_id, period.key, self._node, now,
                                                self._lease):  # fmt: skip
            return ""
        report = await self.build(dealer, period)
        if not report.has_traffic:
            outcome = "skipped"
        else:
            optouts = await self._storage.report_optouts(dealer_id)
            recipients = [c for c in dealer.contacts if c.lower() not in optouts]
            outcome = "no-recipients"
            if recipients:
                await self._queue(report, recipients, now)
                outcome = "sent"
        await self._storage.finish_report(dealer_id, period.key, self._node, outcome, now)
        log.info("report %s %s: %s", dealer_id, period.key, outcome,
                 extra={"dealer_id": dealer_id})  # fmt: skip
        return outcome

    async def _queue(self, report: Report, recipients: Sequence[str], now: datetime) -> None:
        base = f"report-{report.dealer_id}-{report.period.key.replace(':', '-')}"
        messages = [
            NewMessage(
                id=MessageId(f"{base}.{n}"),
                dealer_id=report.dealer_id,
                mail_from="",
                rcpt=rcpt,
                data=report_message(
                    report,
                    from_addr=self._from,
                    to=rcpt,
                    hostname=self._hostname,
                    now=now,
                    unsubscribe_url=self._links.url(report.dealer_id, rcpt) if self._links else "",
                ),
                received_at=now,
                system=True,
                note=f"deliverability report {report.period.key}",
            )
            for n, rcpt in enumerate(recipients)
        ]
        if await self._storage.get(messages[0].id) is not None:
            return  # queued by a node that died before it could record the outcome
        await self._storage.enqueue(messages)
        self._on_enqueued(len(messages))

    async def build(self, dealer: DealerPolicy, period: Period) -> Report:
        """The report's figures for ``period``, from the store."""
        dealer_id, since, until = dealer.dealer_id, period.since, period.until
        deliveries = await self._storage.delivery_tallies(dealer_id, since, until)
        events = await self._storage.event_tallies(dealer_id, since, until)
        drops = await self._storage.drop_tallies(dealer_id, since, until)
        found = await self._storage.finding_tallies(dealer_id, since, until)
        domains = sorted({t.domain for t in deliveries} | {t.domain for t in events})
        providers = await self.providers(domains)
        longest = max(dealer.complaints.window, dealer.bounces.window) // timedelta(days=1)
        rows = await self._storage.daily_counts(
            dealer_id, period.last - timedelta(days=max(longest, 1) - 1), period.last
        )
        counts = DayCounts()
        for row in rows:
            if period.first <= row.day <= period.last:
                counts = counts + row.counts
        return figures(
            dealer,
            period,
            deliveries=deliveries,
            events=events,
            drops=drops,
            findings=found,
            providers=providers,
            counts=counts,
            rates=rate_lines(dealer, [(r.day, r.counts) for r in rows], period.last),
            held=await self.held(dealer, since, until),
            consent_expiring=await self.consent_expiring(dealer, until),
            status_url=self._status_link(dealer_id) if self._status_link else "",
        )

    async def providers(self, domains: Sequence[str]) -> dict[str, str]:
        """Each domain's receiving provider (at most ``LOOKUPS`` lookups at once)."""
        slots = asyncio.Semaphore(LOOKUPS)

        async def one(domain: str) -> tuple[str, str]:
            async with slots:
                return domain, await self._providers.provider(domain)

        return dict(await asyncio.gather(*(one(d) for d in domains)))

    async def held(self, dealer: DealerPolicy, since: datetime, until: datetime) -> list[HeldLine]:
        """Messages received in the period and held now, newest first, with subject and why."""
        listed = await self._storage.list_messages(MessageState.HELD, dealer.dealer_id, HELD_SCAN)
        lines: list[HeldLine] = []
        for m in listed:
            if not since <= m.received_at < until:
                continue
            full = await self._storage.get(m.id)
            why = m.note or "; ".join(
                CATALOGUE[c].summary if c in CATALOGUE else c for c in m.findings
            )
            subject = subject_of(full.data) if full is not None else ""
            lines.append(HeldLine(subject, why, m.updated_at, mask(m.rcpt)))
            if len(lines) >= 10:
                break
        return lines

    async def consent_expiring(self, dealer: DealerPolicy, at: datetime) -> int | None:
        """Recipients whose consent window closes within ``CONSENT_HORIZON`` of ``at``."""
        if not dealer.consent.enforce:
            return None
        horizon = (at + CONSENT_HORIZON).date()
        expiring, after = 0, ""
        while True:
            page = await self._storage.consent_page(dealer.dealer_id, after, CONSENT_PAGE)
            for _address, record in page:
                standing = evaluate(record, dealer.consent, at)
                if standing.eligible and standing.until is not None and standing.until <= horizon:
                    expiring += 1
            if len(page) < CONSENT_PAGE:
                return expiring
            after = page[-1][0]
            await asyncio.sleep(0)  # a long scan must not starve the SMTP sessions
