"""Every Prometheus metric the gateway exports, defined once, prefixed ``mailgate_``.

The only per-entity label is ``dealer`` (bounded by the policy files): never a
recipient, an address, a domain or a message id, so the number of series stays bounded.
``Metrics`` owns its own registry so tests and several gateways in one process do not
collide; ``app.py`` builds one and passes it to whoever records.

Several processes (``mailgate serve`` with ``server.processes`` > 1, gateway/supervisor.py)
keep one endpoint with prometheus-client's multiprocess mode: ``enable_multiprocess(dir)``
in each worker, before its ``Metrics`` is built, makes every value live in a file of that
process under ``dir``, and ``render`` then adds up the files of every process, dead ones
included, so a counter keeps what a worker counted before it was restarted. Each gauge says
how its processes' values combine (``multiprocess_mode``): the ones about this process's own
sessions and memory add up over the live processes (``livesum``); the ones read from the
shared store or the policy files take the most recent value any process set
(``mostrecent``). The supervisor drops a dead worker's live gauges (``process_died``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final, Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Gauges in multiprocess mode (see the module docstring); ignored in a single process.
# This process's own state (sessions, memory): summed over the live processes.
_LIVE: Final[Literal["livesum"]] = "livesum"
# The same store-wide value in every process: the most recent one any process set.
_STORE: Final[Literal["mostrecent"]] = "mostrecent"
_ENV = "PROMETHEUS_MULTIPROC_DIR"


def enable_multiprocess(directory: Path) -> None:
    """Record every metric built from now on in ``directory`` (one worker process of several).

    prometheus-client picks its value class when it is imported; a worker forked from the
    supervisor has imported it already, so the class is set here as well as the variable.
    """
    os.environ[_ENV] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def process_died(directory: Path, pid: int) -> None:
    """Forget a dead worker's ``livesum`` gauges (its counters and histograms stay)."""
    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def reset_directory(directory: Path) -> None:
    """Empty (or create) the multiprocess directory before any worker starts."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The gateway's metrics, on a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connections = Gauge(
            "mailgate_smtp_connections",
            "Open SMTP connections.",
            ["listener"],
            registry=r,
            multiprocess_mode=_LIVE,
        )
        self.connections_refused = Counter(
            "mailgate_smtp_connections_refused_total",
            "Connections refused at the banner, by reason.",
            ["listener", "reason"],
            registry=r,
        )
        self.data_budget_bytes = Gauge(
            "mailgate_smtp_data_budget_bytes",
            "Bytes of message data in flight reserved against submission.data_memory.",
            registry=r,
            multiprocess_mode=_LIVE,
        )
        self.data_budget_refusals = Counter(
            "mailgate_smtp_data_budget_refusals_total",
            "DATA commands answered 452 4.3.1 because submission.data_memory was in use.",
            registry=r,
        )
        self.auth = Counter(
            "mailgate_smtp_auth_total",
            "SMTP AUTH attempts by result (ok, failed, throttled, unavailable).",
            ["result"],
            registry=r,
        )
        self.received = Counter(
            "mailgate_messages_received_total",
            "Submissions by dealer and the action taken (accept, tag, repair, hold, "
            "tempfail, reject).",
            ["dealer", "action"],
            registry=r,
        )
        self.refused = Counter(
            "mailgate_messages_refused_total",
            "Submissions or recipients refused before the checks ran, by reason.",
            ["reason"],
            registry=r,
        )
        self.findings = Counter(
            "mailgate_findings_total",
            "Findings by dealer, code and the action policy chose.",
            ["dealer", "code", "action"],
            registry=r,
        )
        self.held_expired = Counter(
            "mailgate_held_expired_total",
            "Held messages deleted because nobody released them within delivery.held_expiry.",
            ["dealer"],
            registry=r,
        )
        self.accept_seconds = Histogram(
            "mailgate_accept_seconds",
            "Time from the end of DATA to the reply (parse, checks, sign, spool).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.delivery_attempts = Counter(
            "mailgate_delivery_attempts_total",
            "Delivery attempts by outcome (delivered, deferred, failed).",
            ["outcome"],
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "mailgate_delivery_seconds",
            "Time one delivery attempt took, by outcome.",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.relayed = Counter(
            "mailgate_messages_relayed_total",
            "Messages delivered upstream, by dealer.",
            ["dealer"],
            registry=r,
        )
        self.queue_messages = Gauge(
            "mailgate_queue_messages",
            "Messages in the store by state.",
            ["state"],
            registry=r,
            multiprocess_mode=_STORE,
        )
        self.queue_oldest_seconds = Gauge(
            "mailgate_queue_oldest_seconds",
            "Age of the oldest message waiting for delivery.",
            registry=r,
            multiprocess_mode=_STORE,
        )
        self.spool_bytes = Gauge(
            "mailgate_spool_bytes",
            "Bytes of queued and held messages.",
            registry=r,
            multiprocess_mode=_STORE,
        )
        self.dsn_sent = Counter(
            "mailgate_dsn_generated_total",
            "Delivery status notifications generated for permanent failures.",
            registry=r,
        )
        self.policy_reloads = Counter(
            "mailgate_policy_reloads_total",
            "Policy reloads by result (ok, failed).",
            ["result"],
            registry=r,
        )
        self.duplicates_dropped = Counter(
            "mailgate_duplicates_dropped_total",
            "Recipients left out or messages refused as duplicates, by dealer and kind "
            "(exact, near, cap).",
            ["dealer", "kind"],
            registry=r,
        )
        self.errors = Counter(
            "mailgate_internal_errors_total",
            "Unexpected internal errors by component; each one is logged.",
            ["component"],
            registry=r,
        )

        self._feedback(r)
        self._consent(r)
        self._dns(r)
        self._operations(r)

    def _feedback(self, r: CollectorRegistry) -> None:
        """Feedback, suppression and dealer-state metrics (feedback/ingest.py, reputation/)."""
        self.reports = Counter(
            "mailgate_reports_received_total",
            "Messages received on the inbound listener or imported, by what they are "
            "(complaint, bounce, delay, other).",
            ["kind"],
            registry=r,
        )
        self.reports_untrusted = Counter(
            "mailgate_reports_untrusted_total",
            "Reports that changed nothing because they could not be trusted or were replays "
            "(no-reference, unknown-message, bad-mac, recipient-mismatch, replay).",
            ["reason"],
            registry=r,
        )
        self.complaints = Counter(
            "mailgate_complaints_total",
            "Trusted spam complaints recorded, by dealer.",
            ["dealer"],
            registry=r,
        )
        self.bounces = Counter(
            "mailgate_bounces_total",
            "Trusted bounces recorded, by dealer and kind (hard, soft).",
            ["dealer", "kind"],
            registry=r,
        )
        self.complaint_rate = Gauge(
            "mailgate_complaint_rate",
            "Complaints per delivered message over the dealer's window, at the last evaluation.",
            ["dealer"],
            registry=r,
            multiprocess_mode=_STORE,
        )
        self.bounce_rate = Gauge(
            "mailgate_bounce_rate",
            "Hard bounces per sent message over the dealer's window, at the last evaluation.",
            ["dealer"],
            registry=r,
            multiprocess_mode=_STORE,
        )
        self.dealer_state = Gauge(
            "mailgate_dealer_state",
            "1 for the dealer's current state (active, warned, suspended, resumed), else 0.",
            ["dealer", "state"],
            registry=r,
            multiprocess_mode=_STORE,
        )
        self.dealer_suspended = Gauge(
            "mailgate_dealer_suspended",
            "1 while the dealer is suspended.",
            ["dealer"],
            registry=r,
            multiprocess_mode=_STORE,
        )
        self.suppressions = Gauge(
            "mailgate_suppressed_addresses",
            "Active suppression entries per list (a dealer id, or * for the global list).",
            ["dealer"],
            registry=r,
            multiprocess_mode=_STORE,
        )
        self.alerts = Counter(
            "mailgate_alerts_total",
            "Dealer alerts raised, by kind (warned, suspended, resumed) and channel "
            "(email, webhook) and result (ok, failed).",
            ["kind", "channel", "result"],
            registry=r,
        )

    def _dns(self, r: CollectorRegistry) -> None:
        """DNS self-checks and recipient-domain validation (gateway/dns/)."""
        self.dns_check_ok = Gauge(
            "mailgate_dns_check_ok",
            "1 when the dealer's DNS check passed at the last run, 0 when it failed "
            "(dealer * for the gateway's own: bounce-mx, ptr-helo, dnsbl).",
            ["dealer", "check"],
            registry=r,
            multiprocess_mode=_STORE,
        )
        self.dnsbl_listed = Gauge(
            "mailgate_dnsbl_listed",
            "Egress addresses listed on the blocklist at the last check.",
            ["list"],
            registry=r,
            multiprocess_mode=_STORE,
        )
        self.recipient_domains = Counter(
            "mailgate_recipient_domain_checks_total",
            "Recipient domains checked at RCPT, by result (ok, nxdomain, no-mail-host, "
            "null-mx; timeout and error let the recipient through).",
            ["result"],
            registry=r,
        )

    def _operations(self, r: CollectorRegistry) -> None:
        """What dashboards and alert rules compare against (admin/ops.py refreshes them)."""
        self.delivery_latency = Histogram(
            "mailgate_delivery_latency_seconds",
            "Time from the message's receipt to its delivery upstream (queueing and retries "
            "included).",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
            registry=r,
        )
        self.complaint_rate_threshold = Gauge(
            "mailgate_complaint_rate_threshold",
            "The dealer's complaint-rate thresholds from its policy, by level (warn, suspend).",
            ["dealer", "level"],
            registry=r,
            multiprocess_mode=_STORE,
        )
        self.bounce_rate_threshold = Gauge(
            "mailgate_bounce_rate_threshold",
            "The dealer's hard-bounce-rate thresholds from its policy, by level (warn, suspend).",
            ["dealer", "level"],
            registry=r,
            multiprocess_mode=_STORE,
        )
        self.rate_volume = Gauge(
            "mailgate_rate_volume",
            "Messages in the dealer's rate window (rate: complaints counts delivered, bounces "
            "counts sent); below the policy's min_volume no decision is made.",
            ["dealer", "rate"],
            registry=r,
            multiprocess_mode=_STORE,
        )
        self.rate_min_volume = Gauge(
            "mailgate_rate_min_volume",
            "The policy's minimum volume before a rate decides anything, by rate.",
            ["dealer", "rate"],
            registry=r,
            multiprocess_mode=_STORE,
        )
        self.queue_high_water = Gauge(
            "mailgate_queue_high_water_messages",
            "storage.queue_high_water: above this many queued messages MAIL is refused.",
            registry=r,
            multiprocess_mode=_STORE,
        )
        self.held_messages = Gauge(
            "mailgate_held_messages",
            "Messages waiting in the hold queue for an operator, by dealer.",
            ["dealer"],
            registry=r,
            multiprocess_mode=_STORE,
        )
        self.admin_requests = Counter(
            "mailgate_admin_requests_total",
            "Admin API requests by result (ok, client-error, unauthorized, unavailable).",
            ["result"],
            registry=r,
        )

    def _consent(self, r: CollectorRegistry) -> None:
        """Consent and eligibility windows (gateway/consent/rules.py, gateway/consent/ops.py)."""
        self.consent_recipients = Gauge(
            "mailgate_consent_recipients",
            "Recipients on record per dealer whose rules enforce consent, by standing for the "
            "dealer's own marketing (eligible, locked), at the last tally.",
            ["dealer", "state"],
            registry=r,
            multiprocess_mode=_STORE,
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type, for ``/metrics``.

        In multiprocess mode: every process's values, combined (see the module docstring).
        """
        directory = os.environ.get(_ENV)
        if directory and getattr(values.ValueClass, "_multiprocess", False):
            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined, directory)  # type: ignore[no-untyped-call]
            return generate_latest(combined), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
