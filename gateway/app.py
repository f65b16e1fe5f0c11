"""The composition root: builds every component from settings and runs them together.

Nothing else in the package constructs storage, listeners or workers; everything is
passed in explicitly, so tests can build a gateway with the same code and their own
settings. ``Gateway.run()`` runs until SIGTERM/SIGINT, reloads the policies and the
submission certificate on SIGHUP, and shuts down in order: stop taking mail (sessions in
DATA may finish), stop delivery (in-flight sends finish, unstarted leases are released),
then close the store.
``offline_admin()`` builds the operator layer alone (``AdminOps`` over the store, with the
same reputation and alerts) for the commands that run while no gateway does.

A gateway is one process, or one ``Worker`` of several under ``gateway/cli/supervisor.py``: a
worker serves on the listening sockets the supervisor bound (``bind_listeners``), leaves
the data-directory lock to it, runs the once-per-gateway housekeeping only in slot 0, and
tells the supervisor when the admin API has reloaded the policies, so that every worker
does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from gateway.admin.api import AdminApi
from gateway.admin.ops import AdminOps
from gateway.admin.tokens import TokenCheck
from gateway.alerts import Alerts
from gateway.clock import Clock, SystemClock
from gateway.consent.erasure import Erasures
from gateway.consent.ops import ConsentGauges
from gateway.consent.sync import CrmSync
from gateway.datadir import DataDirLock, load_or_create_key, load_or_create_node_id
from gateway.delivery.client import make_upstream
from gateway.delivery.held import DsnSender, HeldNotices, expire_held
from gateway.delivery.worker import DeliveryWorker
from gateway.dkim.signing import DkimSigner, Signer
from gateway.dns.domains import RecipientDomains
from gateway.dns.resolver import Resolver, from_settings
from gateway.dns.selfcheck import config_from, monitor
from gateway.errors import ConfigError, StorageError
from gateway.feedback.ingest import FeedbackIngest
from gateway.intake.backpressure import SpoolGuard
from gateway.intake.service import Intake, submission_limits
from gateway.metrics import Metrics
from gateway.policy.store import PolicyStore, ReloadResult
from gateway.preflight.service import Preflight
from gateway.reports.links import ReportLinks
from gateway.reports.providers import ProviderLookup
from gateway.reports.service import Reports
from gateway.reputation.suspensions import Suspensions
from gateway.settings import Settings, parse_hostport
from gateway.smtp.auth import Authenticator, FailureLimiter
from gateway.smtp.budget import DataBudget
from gateway.smtp.handler import SessionLimits, SubmissionHandler
from gateway.smtp.inbound import InboundHandler
from gateway.smtp.server import Sessions, SubmissionServer
from gateway.smtp.tls import ServerCertificate, ensure_self_signed
from gateway.storage.base import Storage, open_storage, sqlite_path
from gateway.tracking import RefCodec
from gateway.unsubscribe.links import UnsubscribeLinks
from gateway.unsubscribe.service import Unsubscribes
from gateway.web.check import check_routes
from gateway.web.http import build_app, build_public_app
from gateway.web.reports import report_routes
from gateway.web.status import StatusLinks, status_routes
from gateway.web.unsubscribe import unsubscribe_routes

log = logging.getLogger("gateway")

# Seconds between reloads of the suspended set (suspensions made by another node or by
# the CLI) and checks for suspensions that have run out.
REPUTATION_REFRESH = 2.0


def _read_secret(path: Path | None) -> bytes:
    if path is None:
        return b""
    try:
        return path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"alerts.webhook_secret_file: cannot read {path}: {exc}") from exc


def _status_key_file(settings: Settings) -> Path:
    return settings.status_key_file


def _status_links(settings: Settings, key: bytes, port: int | None = None) -> StatusLinks:
    """The dealers' status-page links, at ``http.public_url`` or the public listener.

    ``port``: the public listener's bound port (``public.listen`` may say 0).
    """
    link_host, link_port = parse_hostport(settings.public.listen)
    if link_host in ("0.0.0.0", "::"):
        link_host = settings.server.hostname
    if ":" in link_host:
        link_host = f"[{link_host}]"
    scheme = "https" if settings.public.tls else "http"
    local = f"{scheme}://{link_host}:{port if port is not None else link_port}"
    return StatusLinks(key, settings.http.public_url or local)


def _listen_socket(key: str, listen: str, backlog: int = 128) -> socket.socket:
    """A bound, listening, non-blocking TCP socket for ``listen`` (the setting ``key``).

    Raises ``OSError`` naming the setting and the address (a busy port, say).
    """
    host, port = parse_hostport(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"{key} {listen}: {exc.strerror}") from exc
    return sock


def _server(app: ASGIApp, **options: Any) -> _HttpServer:
    return _HttpServer(
        uvicorn.Config(
            app,
            log_level="warning",
            # uvicorn's own logging config would give its loggers handlers of their own;
            # without it they reach the root handler and its escaping formatter (logs.py).
            log_config=None,
            lifespan="off",
            access_log=False,
            **options,
        )
    )


def _alerts(
    settings: Settings,
    storage: Storage,
    clock: Clock,
    metrics: Metrics,
    *,
    on_enqueued: Callable[[int], None] = lambda _n: None,
    status_link: Callable[[str], str] | None = None,
) -> Alerts:
    return Alerts(
        storage,
        clock,
        metrics,
        from_addr=settings.alerts.from_address or f"mailgate-alerts@{settings.server.hostname}",
        hostname=settings.server.hostname,
        operators=settings.alerts.operators,
        reply_to=settings.alerts.reply_to,
        webhook_url=settings.alerts.webhook_url,
        webhook_secret=_read_secret(settings.alerts.webhook_secret_file),
        on_enqueued=on_enqueued,
        status_link=status_link,
        email_interval=settings.alerts.email_interval,
    )


@contextlib.asynccontextmanager
async def offline_admin(settings: Settings, clock: Clock | None = None) -> AsyncIterator[AdminOps]:
    """``AdminOps`` over the store for the offline commands, when no gateway need run.

    Built as ``Gateway.build`` builds it (the same policy directory, store, dealer state
    machine and alerts) without listeners, delivery or gauges, so an offline command runs
    the very operations the admin API runs. The alert e-mails a suspension raises are
    stored as system messages that the next running gateway delivers; webhooks are posted
    before the store is closed. Status links appear in the alerts only when a gateway has
    created the status key (an offline command creates no keys). Raises ``PolicyError``
    when the policy directory does not load, ``StorageError`` when the store cannot open.
    """
    clock = clock or SystemClock()
    metrics = Metrics()  # this process's own registry: nothing scrapes it
    policies = PolicyStore(settings.server.policies_dir)
    storage = await open_storage(settings.storage_url)
    try:
        key_file = _status_key_file(settings)
        links = _status_links(settings, load_or_create_key(key_file)) if key_file.exists() else None
        link = links.url if links is not None else None
        # Alert e-mails link the status page only at the public address (http.public_url).
        mailed = link if settings.http.public_url else None
        alerts = _alerts(settings, storage, clock, metrics, status_link=mailed)
        yield AdminOps(
            storage=storage,
            policies=policies,
            suspensions=Suspensions(storage, policies, clock, metrics, notifier=alerts),
            clock=clock,
            node=settings.server.node_id or "offline",
            status_link=link,
        )
        await alerts.drain()
    finally:
        await storage.close()


@dataclass(frozen=True)
class Listeners:
    """Listening sockets bound once by a supervisor and served by every worker process."""

    submission: socket.socket
    http: socket.socket
    public: socket.socket
    inbound: socket.socket | None = None

    def close(self) -> None:
        """Close this process's copies (the workers' own copies stay open)."""
        for sock in (self.submission, self.http, self.public, self.inbound):
            if sock is not None:
                sock.close()


def bind_listeners(settings: Settings) -> Listeners:
    """Bind the submission, both HTTP and (when enabled) report listeners, for ``Worker``s.

    One socket per listener, shared by all workers: the kernel gives each connection to
    whichever worker accepts first, so a busy or dead worker does not keep connections
    waiting while another one is idle.
    """
    backlog = 1024  # several processes accept from it; a burst of CRMs must not be dropped
    bound: list[socket.socket] = []
    try:
        for key, listen in (
            ("submission.listen", settings.submission.listen),
            ("http.listen", settings.http.listen),
            ("public.listen", settings.public.listen),
        ):
            bound.append(_listen_socket(key, listen, backlog))
        inbound = None
        if settings.inbound.enabled:
            inbound = _listen_socket("inbound.listen", settings.inbound.listen, backlog)
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return Listeners(bound[0], bound[1], bound[2], inbound)


def prepare_shared_files(settings: Settings) -> None:
    """Create the data directory's keys and self-signed certificate, if missing.

    A supervisor does this before its workers start, so that they read one set of files
    instead of racing to create them.
    """
    load_or_create_key(settings.ref_key_file)
    load_or_create_key(_status_key_file(settings))
    sub = settings.submission
    if sub.tls_cert is None or sub.tls_key is None:
        ensure_self_signed(settings.server.data_dir, settings.server.hostname)


@dataclass(frozen=True)
class Worker:
    """One worker process of several (gateway/cli/supervisor.py) and what it shares."""

    slot: int  # 0 .. processes-1; slot 0 runs the once-per-gateway housekeeping
    listeners: Listeners
    announce_reload: Callable[[], None]  # an admin-API reload was applied: tell the others


class _AnnouncedPolicies(PolicyStore):
    """A worker's policy store: a reload applied through the admin API reaches every worker.

    ``Gateway.reload_policies`` (SIGHUP, which the supervisor sends to every worker) uses
    ``PolicyStore.reload`` itself, so an announced reload is not announced again.
    """

    def __init__(
        self, directory: Path, announce: Callable[[], None], on_reload: Callable[[str], None]
    ) -> None:
        super().__init__(directory, on_reload=on_reload)
        self._announce = announce

    def reload(self) -> ReloadResult:
        """Reload here, and when it applied, have the supervisor reload every worker."""
        result = super().reload()
        if result.ok:
            self._announce()
        return result


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Gateway:
    """A running gateway: its components and the ports it is bound to."""

    settings: Settings
    storage: Storage
    policies: PolicyStore
    metrics: Metrics
    clock: Clock
    submission: SubmissionServer
    worker: DeliveryWorker
    guard: SpoolGuard
    http: _HttpServer  # the operators' listener: admin API, metrics, health
    http_socket: socket.socket
    public: _HttpServer  # the public listener: unsubscribe links, status pages
    public_socket: socket.socket
    node: str
    lock: DataDirLock | None  # this process owns the data directory until stop(); None: a worker
    suspensions: Suspensions | None = None
    ingest: FeedbackIngest | None = None
    alerts: Alerts | None = None
    inbound: SubmissionServer | None = None  # the report listener, when configured
    admin: AdminOps | None = None  # the operations behind the admin API
    status_links: StatusLinks | None = None  # the dealers' status-page links
    resolver: Resolver | None = None  # recipient domains and DNS self-checks
    reports: Reports | None = None  # the dealers' deliverability reports
    held_notices: HeldNotices | None = None  # the dealers' held-mail notices
    leader: bool = True  # runs housekeeping, consent tallies, DNS self-checks (one per gateway)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def submission_port(self) -> int:
        """The bound submission port (useful when configured as 0)."""
        return self.submission.port

    @property
    def inbound_port(self) -> int:
        """The bound report-listener port (0 when it is not configured)."""
        return self.inbound.port if self.inbound is not None else 0

    @property
    def http_port(self) -> int:
        """The bound port of the operators' HTTP listener."""
        return int(self.http_socket.getsockname()[1])

    @property
    def public_port(self) -> int:
        """The bound port of the public HTTP listener."""
        return int(self.public_socket.getsockname()[1])

    @classmethod
    async def build(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        signer: Signer | None = None,
        role: Worker | None = None,
    ) -> Gateway:
        """Build every component; binds nothing yet (a worker ``role`` serves bound sockets).

        Raises ``DataDirInUse`` when another live process owns ``server.data_dir``. A
        worker takes no lock: its supervisor holds it for all of them.
        """
        data_dir = settings.server.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        if role is not None:
            shared = role.listeners
            return await cls._build(
                settings, None, clock or SystemClock(), metrics or Metrics(), signer,
                shared.http, shared.public, role,
            )  # fmt: skip
        # Before anything reads the node id: two live processes must never share it.
        lock = DataDirLock(data_dir)
        lock.acquire()
        sockets: list[socket.socket] = []
        try:
            # Bound first: the status links need the public listener's real port (the
            # setting may say 0), and a busy port fails here, before anything starts.
            sockets.append(_listen_socket("http.listen", settings.http.listen))
            sockets.append(_listen_socket("public.listen", settings.public.listen))
            return await cls._build(
                settings, lock, clock or SystemClock(), metrics or Metrics(), signer,
                sockets[0], sockets[1],
            )  # fmt: skip
        except BaseException:
            for sock in sockets:
                sock.close()
            lock.release()
            raise

    @classmethod
    async def _build(
        cls,
        settings: Settings,
        lock: DataDirLock | None,
        clock: Clock,
        metrics: Metrics,
        signer: Signer | None,
        http_socket: socket.socket,
        public_socket: socket.socket,
        role: Worker | None = None,
    ) -> Gateway:
        data_dir = settings.server.data_dir

        def reloaded(result: str) -> None:
            metrics.policy_reloads.labels(result).inc()
            if result == "ok":
                metrics.set_dealers(policies.current.dealers)

        policies = (
            PolicyStore(settings.server.policies_dir, on_reload=reloaded)
            if role is None
            else _AnnouncedPolicies(settings.server.policies_dir, role.announce_reload, reloaded)
        )
        metrics.set_dealers(policies.current.dealers)
        storage = await open_storage(settings.storage_url)
        node = settings.server.node_id or load_or_create_node_id(
            settings.node_id_file, socket.gethostname()
        )
        ref_key = load_or_create_key(settings.ref_key_file)
        refs = RefCodec(ref_key)
        links: UnsubscribeLinks | None = None
        if settings.unsubscribe.base_url:
            reports = settings.inbound.report_addresses
            mailto = settings.unsubscribe.mailto or (reports[0] if reports else "")
            links = UnsubscribeLinks(ref_key, settings.unsubscribe.base_url, mailto)
        unsubscribes = Unsubscribes(links, storage, clock) if links else None
        # The free-space floor is about the disk the spool is written to: the SQLite file's,
        # which storage.url may put outside the data directory.
        db_file = sqlite_path(settings.storage_url)
        spool_dir = Path(db_file).parent if db_file is not None else data_dir
        guard = SpoolGuard(
            storage,
            spool_dir,
            settings.storage.queue_high_water,
            settings.storage.queue_low_water,
            settings.min_free_disk,
            metrics,
            clock,
        )
        status_links = _status_links(
            settings,
            load_or_create_key(_status_key_file(settings)),
            int(public_socket.getsockname()[1]),
        )
        sub = settings.submission
        alerts = _alerts(
            settings,
            storage,
            clock,
            metrics,
            on_enqueued=lambda _n: worker.notify(),
            # A dealer can follow only a link at the public address: without
            # http.public_url, alert e-mails carry none (and start-up says so).
            status_link=status_links.url if settings.http.public_url else None,
        )
        suspensions = Suspensions(
            storage,
            policies,
            clock,
            metrics,
            notifier=alerts,
            erased_as=Erasures(ref_key).suppressed_as,
        )
        worker = DeliveryWorker(
            storage=storage,
            upstream_factory=lambda: make_upstream(settings),
            clock=clock,
            settings=settings.delivery,
            node=node,
            metrics=metrics,
            hostname=settings.server.hostname,
            suspended=suspensions.suspended,
        )

        def enqueued(count: int) -> None:
            guard.note_enqueued(count)
            worker.notify()

        intake = Intake(
            storage=storage,
            policies=policies,
            refs=refs,
            # Reads the dealer's keys through the store, so a policy reload rotates keys.
            signer=signer or DkimSigner(policies, clock),
            clock=clock,
            metrics=metrics,
            settings=sub,
            hostname=settings.server.hostname,
            on_enqueued=enqueued,
            bounce_domain=settings.inbound.bounce_domain,
            unsubscribe=links,
        )
        authenticator = Authenticator(
            storage,
            policies,
            FailureLimiter(sub.auth_failures_per_ip, sub.auth_failure_window.total_seconds()),
        )
        # DNS: built only when something uses it, so a gateway without [dns] settings never
        # touches the system resolver (settings.DnsSettings says when validation is on).
        resolver: Resolver | None = None
        if settings.dns.validating or settings.dns.egress_ips:
            resolver = from_settings(settings.dns)
        domains: RecipientDomains | None = None
        if resolver is not None and settings.dns.validating:
            domains = RecipientDomains(
                resolver, metrics, timeout=settings.dns.timeout.total_seconds()
            )
        # Deliverability reports (gateway/reports/): providers from the MX through the same
        # resolver (none configured: from the domain's name alone).
        report_links = ReportLinks(status_links.key, status_links.base_url)
        report_providers = ProviderLookup(resolver)  # also the status page's (cached)
        dealer_reports = Reports(
            storage,
            policies,
            clock,
            node=node,
            from_addr=settings.alerts.from_address
            or f"mailgate-reports@{settings.server.hostname}",
            hostname=settings.server.hostname,
            providers=report_providers,
            status_link=status_links.url,
            links=report_links,
            on_enqueued=lambda _n: worker.notify(),
        )
        handler = SubmissionHandler(
            intake=intake,
            authenticator=authenticator,
            policies=policies,
            guard=guard,
            limits=SessionLimits(
                max_recipients=sub.max_recipients,
                max_messages_per_connection=sub.max_messages_per_connection,
                require_tls=sub.require_tls,
            ),
            metrics=metrics,
            clock=clock,
            reputation=suspensions,
            domains=domains,
        )
        if sub.tls_cert is not None and sub.tls_key is not None:
            cert, key = sub.tls_cert, sub.tls_key
        else:
            cert, key = ensure_self_signed(data_dir, settings.server.hostname)
        host, port = parse_hostport(sub.listen)
        data_budget = DataBudget(sub.data_memory, metrics)
        submission = SubmissionServer(
            handler=handler,
            host=host,
            port=port,
            hostname=settings.server.hostname,
            tls=ServerCertificate(cert, key, metrics),
            require_tls=sub.require_tls,
            max_message_size=sub.max_message_size,
            line_length_limit=sub.max_line_length,
            idle_timeout=sub.idle_timeout.total_seconds(),
            data_timeout=sub.data_timeout.total_seconds(),
            sessions=Sessions(sub.max_connections, sub.max_connections_per_ip),
            metrics=metrics,
            data_budget=data_budget,
            proxy_from=sub.proxy_protocol_from,
            bind_network=handler.bind_network,
            sock=role.listeners.submission if role else None,
        )
        ingest = FeedbackIngest(storage, refs, policies, clock, metrics, suspensions)
        inbound: SubmissionServer | None = None
        ins = settings.inbound
        if ins.enabled:
            in_host, in_port = parse_hostport(ins.listen)
            inbound = SubmissionServer(
                handler=InboundHandler(
                    ingest=ingest, settings=ins, metrics=metrics, unsubscribes=unsubscribes
                ),
                host=in_host,
                port=in_port,
                hostname=settings.server.hostname,
                tls=None,
                require_tls=False,
                max_message_size=ins.max_message_size,
                line_length_limit=sub.max_line_length,
                idle_timeout=ins.idle_timeout.total_seconds(),
                data_timeout=ins.data_timeout.total_seconds(),
                sessions=Sessions(ins.max_connections, ins.max_connections_per_ip),
                metrics=metrics,
                data_budget=data_budget,
                listener="inbound",
                auth=False,
                proxy_from=ins.proxy_protocol_from,
                sock=role.listeners.inbound if role else None,
            )

        async def readiness() -> dict[str, str]:
            problems: dict[str, str] = {}
            try:
                await storage.ping()
            except StorageError as exc:
                problems["storage"] = str(exc)
            if guard.full():
                problems["spool"] = "queue above high-water mark or disk below floor"
            return problems

        admin = AdminOps(
            storage=storage,
            policies=policies,
            suspensions=suspensions,
            clock=clock,
            node=node,
            guard=guard,
            wake_delivery=worker.notify,
            metrics=metrics,
            status_link=status_links.url,
            preflight=Preflight(
                policies,
                clock,
                submission_limits(sub),
                hostname=settings.server.hostname,
                max_bytes=sub.max_message_size,
                budget=sub.check_time_budget.total_seconds(),
            ),
        )
        metrics.queue_high_water.set(settings.storage.queue_high_water)
        api = AdminApi(
            admin,
            TokenCheck(settings.admin_token_file),
            allow_remote=settings.http.admin_allow_remote,
            metrics=metrics,
            dealer_links=status_links.valid,
            # A message of the submission maximum in base64 inside JSON, and some slack.
            max_body=sub.max_message_size * 4 // 3 + 1024 * 1024,
        )

        async def before_scrape() -> None:
            await admin.refresh_gauges()
            # A refresh that began before a reload may have set a removed dealer's gauges
            # again; the scrape shows the dealers in force now.
            metrics.set_dealers(policies.current.dealers)

        http = _server(build_app(metrics, readiness, api.routes(), before_scrape=before_scrape))

        def dealer_name(dealer_id: str) -> str:
            dealer = policies.current.dealer(dealer_id)
            return dealer.name if dealer is not None and dealer.name else dealer_id

        pub = settings.public
        public = _server(
            build_public_app(
                [
                    *status_routes(admin, status_links, report_providers),
                    *check_routes(admin, status_links),
                    *report_routes(storage, policies, report_links, clock),
                    *(unsubscribe_routes(unsubscribes, dealer_name) if unsubscribes else []),
                ],
                https=pub.tls or settings.http.public_url.startswith("https://"),
            ),
            ssl_certfile=str(pub.tls_cert) if pub.tls_cert else None,
            ssl_keyfile=str(pub.tls_key) if pub.tls_key else None,
            proxy_headers=bool(pub.forwarded_from),
            forwarded_allow_ips=list(pub.forwarded_from) or None,
        )
        return cls(
            settings=settings,
            storage=storage,
            policies=policies,
            metrics=metrics,
            clock=clock,
            submission=submission,
            worker=worker,
            guard=guard,
            http=http,
            http_socket=http_socket,
            public=public,
            public_socket=public_socket,
            node=node,
            lock=lock,
            suspensions=suspensions,
            ingest=ingest,
            alerts=alerts,
            inbound=inbound,
            admin=admin,
            status_links=status_links,
            resolver=resolver,
            reports=dealer_reports,
            held_notices=HeldNotices(
                storage,
                policies,
                alerts,
                clock,
                interval=settings.delivery.held_notice_interval,
                held_expiry=settings.delivery.held_expiry,
                status_link=status_links.url,
            ),
            leader=role is None or role.slot == 0,
        )

    async def start(self) -> None:
        """Bind the listeners and start delivery and housekeeping in the background."""
        # A node that restarts after a crash held leases that no process is working on
        # now: give them back at once instead of waiting for them to expire.
        released = await self.storage.release_owned(self.node)
        if released:
            log.warning("released %d leases this node held before it restarted", released)
        await self.guard.refresh()
        if self.suspensions is not None:
            try:
                await self.suspensions.refresh()
            except StorageError as exc:
                log.warning("reputation: initial refresh failed: %s", exc)
        await self.submission.start()
        if self.inbound is not None:
            await self.inbound.start()
        self._tasks = [
            asyncio.create_task(self.worker.run(), name="delivery"),
            asyncio.create_task(self.guard.run(), name="spool-guard"),
            asyncio.create_task(self.http.serve(sockets=[self.http_socket]), name="http"),
            asyncio.create_task(self.public.serve(sockets=[self.public_socket]), name="public"),
        ]
        if self.leader:
            self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
        if self.suspensions is not None:
            self._tasks.append(
                asyncio.create_task(self.suspensions.run(REPUTATION_REFRESH), name="reputation")
            )
        if self.alerts is not None:
            self._tasks.append(asyncio.create_task(self.alerts.run(), name="alerts"))
        # A report links the status page and the contact's unsubscribe page, which a
        # dealer reaches only at the public address (listener_warnings says so).
        if self.reports is not None and self.settings.http.public_url:
            self._tasks.append(asyncio.create_task(self.reports.run(), name="reports"))
        if self.held_notices is not None:
            self._tasks.append(asyncio.create_task(self.held_notices.run(), name="held-notices"))
        # Consent: eligible and locked recipients per dealer (gateway/consent/ops.py).
        if self.leader:
            gauges = ConsentGauges(self.storage, self.policies, self.clock, self.metrics)
            self._tasks.append(asyncio.create_task(gauges.run(), name="consent-gauges"))
            # Unsubscribes, complaints, withdrawals: into the record and to the CRMs (sync.py).
            sync = CrmSync(self.storage, self.policies, self.clock)
            self._tasks.append(asyncio.create_task(sync.run(), name="consent-statements"))
        interval = self.settings.dns.check_interval.total_seconds()
        dns_checks = self.resolver is not None and self.settings.dns.egress_ips
        if self.leader and dns_checks and interval > 0:
            assert self.resolver is not None
            checks = monitor(
                self.resolver,
                self.policies,
                config_from(self.settings),
                self.metrics,
                interval,
                hostname=self.settings.server.hostname,
            )
            self._tasks.append(asyncio.create_task(checks, name="dns-checks"))
        for warning in self.settings.listener_warnings():
            log.warning("%s", warning)
        log.info(
            "mailgate ready: submission %s:%d, operators' http %s, public %s %s, storage %s, "
            "delivery %s",
            self.submission.host,
            self.submission_port,
            self.settings.http.listen,
            "https" if self.settings.public.tls else "http",
            self.settings.public.listen,
            self.settings.storage_url.split("@")[-1],
            self.settings.upstream.host or f"maildir {self.settings.maildir}",
        )

    async def _housekeeping(self) -> None:
        keep = self.settings.delivery.keep_finished
        while True:
            await asyncio.sleep(3600)
            try:
                removed = await self.storage.expire_finished(self.clock.now() - keep)
                if removed:
                    log.info("expired %d finished messages older than %s", removed, keep)
                await expire_held(
                    self.storage, self.clock.now(), self.settings.delivery.held_expiry,
                    self.metrics, dsn=DsnSender(self.settings.server.hostname,
                                                self.settings.delivery.dsn_from),
                )  # fmt: skip
            except StorageError as exc:
                log.warning("housekeeping failed: %s", exc)

    def reload_policies(self) -> None:
        """Apply a new policy set if it validates; otherwise keep the current one (SIGHUP)."""
        PolicyStore.reload(self.policies)  # not announced: every worker gets the signal

    def reload(self) -> None:
        """SIGHUP: the policies, then the submission certificate; each kept if its new one fails."""
        self.reload_policies()
        if self.submission.tls is not None:
            self.submission.tls.reload()

    def request_stop(self) -> None:
        """Ask ``run()`` to shut down (signal-safe)."""
        self._stopping.set()

    async def stop(self) -> None:
        """Shut down in order; nothing acknowledged is lost."""
        grace = self.settings.submission.shutdown_grace.total_seconds()
        await self.submission.stop(grace)
        if self.inbound is not None:
            await self.inbound.stop(grace)
        await self.worker.stop()
        if self.alerts is not None:
            await self.alerts.drain()
        self.http.should_exit = True
        self.public.should_exit = True
        for task in self._tasks:
            if task.get_name() not in ("http", "public"):
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.http_socket.close()
        self.public_socket.close()
        await self.storage.close()
        if self.lock is not None:
            self.lock.release()
        log.info("mailgate stopped")

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Start, serve until SIGTERM/SIGINT, then stop. SIGHUP reloads (``reload``).

        ``on_ready`` is called once the listeners serve (a worker tells its supervisor).
        """
        loop = asyncio.get_running_loop()
        await self.start()
        if on_ready is not None:
            on_ready()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await self._stopping.wait()
        finally:
            log.info("shutting down")
            # Handlers stay installed while stopping: a second SIGTERM must not kill the
            # process halfway through its orderly shutdown.
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
