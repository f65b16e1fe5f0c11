"""Every Prometheus metric the gateway exports, defined once, prefixed ``mailgate_``.

The only per-entity label is ``dealer`` (bounded by the policy files): never a
recipient, an address, a domain or a message id, so the number of series stays bounded.
``Metrics`` owns its own registry so tests and several gateways in one process do not
collide; ``app.py`` builds one and passes it to whoever records.

Series that alert rules take ``increase()`` of start at 0 (a counter that first appears
at 1 hides its first increase from Prometheus): the reload results here (policies, the
TLS certificate), the per-dealer counters in ``set_dealers``. ``set_dealers`` also drops
every series of a dealer that has left the policy set, so no rule keeps firing about a
dealer that no longer exists. The
process's own figures (CPU, memory, file descriptors, start time) are exported as
``mailgate_process_*`` and the version as ``mailgate_build_info``.

Several processes (``mailgate serve`` with ``server.processes`` > 1, gateway/cli/supervisor.py)
keep one endpoint with prometheus-client's multiprocess mode: ``enable_multiprocess(dir)``
in each worker, before its ``Metrics`` is built, makes every value live in a file of that
process under ``dir``, and ``render`` then adds up the files of every process, dead ones
included, so a counter keeps what a worker counted before it was restarted. Each gauge says
how its processes' values combine (``multiprocess_mode``): the ones about this process's own
sessions and memory add up over the live processes (``livesum``); the ones read from the
shared store or the policy files take the most recent value any process set
(``mostrecent``). The supervisor drops a dead worker's live gauges (``process_died``).
``mailgate_process_*`` are then the whole gateway's: the supervisor and its live workers
added up, CPU including the workers that have exited (``GatewayProcesses``). A series
``set_dealers`` drops stays in the files of the processes that recorded it until the
next start.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final, Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client import values as prometheus_values
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

from gateway import __version__

# Label values that are not a dealer: the global suppression list, the gateway's own DNS.
NOT_A_DEALER = "*"
POLICY_RELOAD_RESULTS = ("ok", "failed")
TLS_RELOAD_RESULTS = ("ok", "failed")

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
    prometheus_values.ValueClass = prometheus_values.MultiProcessValue()  # type: ignore[no-untyped-call]


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
            "DATA transactions answered 452 4.3.1 because submission.data_memory was in use.",
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
        for result in POLICY_RELOAD_RESULTS:
            self.policy_reloads.labels(result)
        self.tls_certificate_reloads = Counter(
            "mailgate_tls_certificate_reloads_total",
            "Re-reads of the submission certificate (SIGHUP) by result (ok, failed: the "
            "certificate in force stays).",
            ["result"],
            registry=r,
        )
        for result in TLS_RELOAD_RESULTS:
            self.tls_certificate_reloads.labels(result)
        self.tls_certificate_expiry = Gauge(
            "mailgate_tls_certificate_expiry_timestamp_seconds",
            "When the submission certificate in force expires (Unix time).",
            registry=r,
        )
        self.dkim_signing_failures = Counter(
            "mailgate_dkim_signing_failures_total",
            "Messages refused (451 4.3.0) because the dealer's DKIM signature could not be "
            "made (unreadable key, every identity retired, a message the signer cannot "
            "parse), by dealer.",
            ["dealer"],
            registry=r,
        )
        self.build_info = Gauge(
            "mailgate_build_info",
            "Always 1; the labels say which Mailgate version and Python run this process.",
            ["version", "python"],
            registry=r,
            multiprocess_mode=_STORE,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        ProcessCollector(namespace="mailgate", registry=r)
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
            "Dealer alerts raised, by kind (warning, suspended, resumed), channel "
            "(email, webhook) and result (ok, failed; held: an e-mail held back by flap "
            "damping, to be gathered into a later one).",
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

    def set_dealers(self, dealers: Iterable[str]) -> None:
        """Make ``dealers`` the ones metrics are about (at start-up and after a reload).

        Their per-dealer counters that rules alert on start at 0; every series of any other
        dealer (one removed from the policy files) is dropped from every metric.
        """
        keep = set(dealers) | {NOT_A_DEALER}
        for dealer in keep - {NOT_A_DEALER}:
            self.dkim_signing_failures.labels(dealer)
        for metric in vars(self).values():
            if not isinstance(metric, MetricWrapperBase):
                continue
            names = tuple(metric._labelnames)
            if "dealer" not in names:
                continue
            stale = {
                tuple(sample.labels[name] for name in names)
                for family in metric.collect()
                for sample in family.samples
                if sample.labels.get("dealer", NOT_A_DEALER) not in keep
            }
            for values in stale:
                metric.remove(*values)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type, for ``/metrics``.

        In multiprocess mode: every process's values, combined (see the module docstring).
        """
        directory = os.environ.get(_ENV)
        if directory and getattr(prometheus_values.ValueClass, "_multiprocess", False):
            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined, directory)  # type: ignore[no-untyped-call]
            combined.register(GatewayProcesses(os.getppid()))
            return generate_latest(combined), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class GatewayProcesses:
    """``mailgate_process_*`` for a supervisor and its workers, added up (multiprocess mode).

    CPU is the supervisor's own, its live workers' and, through the supervisor's reaped
    children, the workers that have exited: a counter that survives restarts. Memory and
    descriptors are the live processes' sum; the start time is the supervisor's.
    """

    def __init__(self, supervisor: int) -> None:
        self._supervisor = supervisor
        self._tick = os.sysconf("SC_CLK_TCK")
        self._page = os.sysconf("SC_PAGESIZE")
        with open("/proc/stat", encoding="ascii") as stat:
            boot = next(line for line in stat if line.startswith("btime"))
        self._boot = float(boot.split()[1])

    def _stat(self, pid: int) -> list[str] | None:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                return f.read().rpartition(")")[2].split()
        except OSError:
            return None

    def _pids(self) -> list[int]:
        try:
            with open(f"/proc/{self._supervisor}/task/{self._supervisor}/children") as f:
                children = [int(pid) for pid in f.read().split()]
        except OSError:
            children = []
        return [self._supervisor, *children]

    def collect(self) -> Iterator[Metric]:
        """The summed figures (an empty set where /proc cannot be read)."""
        cpu = rss = fds = 0.0
        start = 0.0
        for pid in self._pids():
            fields = self._stat(pid)
            if fields is None:
                continue
            # After "(comm)": state is index 0, utime index 11, stime 12, cutime 13,
            # cstime 14, starttime 19, rss 21 (proc(5)).
            ticks = int(fields[11]) + int(fields[12])
            if pid == self._supervisor:
                ticks += int(fields[13]) + int(fields[14])
                start = self._boot + int(fields[19]) / self._tick
            cpu += ticks / self._tick
            rss += int(fields[21]) * self._page
            with contextlib.suppress(OSError):
                fds += len(os.listdir(f"/proc/{pid}/fd"))
        if not start:
            return
        for name, kind, text, value in (
            ("cpu_seconds_total", "counter", "User and system CPU time of every process.", cpu),
            ("resident_memory_bytes", "gauge", "Resident memory of the live processes.", rss),
            ("open_fds", "gauge", "Open file descriptors of the live processes.", fds),
            ("start_time_seconds", "gauge", "When the supervisor started (Unix time).", start),
        ):
            family = Metric(f"mailgate_process_{name.removesuffix('_total')}", text, kind)
            family.add_sample(f"mailgate_process_{name}", {}, value)
            yield family
