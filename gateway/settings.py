"""Process settings: ``mailgate.toml`` plus ``MAILGATE_*`` environment overrides.

Settings are about the process (listeners, TLS, storage, upstream, directories); rules
about mail live in the policy files. Unknown keys are errors, and an error names the file,
the key and the problem. Every setting has a default so that ``mailgate serve`` runs on a
fresh machine with no file at all: SQLite in the data directory, delivery into a local
Maildir, loopback listeners.

Environment overrides use ``MAILGATE_<SECTION>_<KEY>``, e.g. ``MAILGATE_STORAGE_URL`` or
``MAILGATE_SUBMISSION_LISTEN``; values are parsed as TOML scalars when they parse, else
taken as strings.

Which file: ``find_config`` searches ``--config``, then ``MAILGATE_CONFIG``, then
``./mailgate.toml`` and ``/etc/mailgate/mailgate.toml`` when present (``CONFIG_SEARCH``),
so a command typed on an installed host reads the file the service reads.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from gateway.clock import parse_duration
from gateway.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3,
}  # fmt: skip


LOCAL_CONFIG = Path("mailgate.toml")
SYSTEM_CONFIG = Path("/etc/mailgate/mailgate.toml")
CONFIG_SEARCH = f"--config FILE, else $MAILGATE_CONFIG, else ./{LOCAL_CONFIG}, else {SYSTEM_CONFIG}"


def find_config(
    explicit: Path | None = None,
    environ: Mapping[str, str] | None = None,
    system: Path = SYSTEM_CONFIG,
) -> Path | None:
    """The settings file to read (``CONFIG_SEARCH``), or ``None``: the built-in defaults.

    A file named by ``--config`` or ``MAILGATE_CONFIG`` is returned even when missing, so that
    loading it says "file not found" instead of silently using the defaults.
    """
    if explicit is not None:
        return explicit
    named = (os.environ if environ is None else environ).get("MAILGATE_CONFIG", "")
    if named:
        return Path(named)
    for candidate in (LOCAL_CONFIG, system):
        if candidate.is_file():
            return candidate
    return None


def parse_size(value: object) -> int:
    """Parse ``"25MB"``, ``"10MiB"``, ``"512kb"`` or a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])
    raise ValueError(f"not a size: {value!r} (use e.g. '25MB', '512KiB' or bytes)")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value)
    except ValueError as exc:
        raise ValueError(f"not an address or network (e.g. '10.0.4.0/24'): {exc}") from None
    return value


# Addresses and CIDR networks, e.g. ["10.0.4.7", "fd00:4::/64"]; host bits must be zero.
Networks = list[Annotated[str, AfterValidator(_network)]]


def parse_hostport(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Split ``"host:port"``, ``"[::1]:port"`` or ``":port"`` into its parts."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not host:port: {value!r}")
    host = host.strip("[]") or default_host
    return host, int(port)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    """Identity and directories."""

    hostname: str = Field(default_factory=socket.getfqdn)
    data_dir: Path = Path("var")
    policies_dir: Path = Path("policies")
    node_id: str = ""  # empty: generated once into data_dir/node-id (stable across restarts)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # text: "<time> <LEVEL> <logger>: <message>"; json: one object per line (gateway/logs.py)
    log_format: Literal["text", "json"] = "text"
    ref_key_file: Path | None = None  # HMAC key for X-Mailgate-Ref; default data_dir/ref.key
    # HMAC key of the dealers' status-page links; default data_dir/status.key. Nodes of one
    # gateway share it (and ref_key_file) while each keeps its own data_dir.
    status_key_file: Path | None = None
    # Worker processes of `mailgate serve` (gateway/cli/supervisor.py); 0: one per CPU core.
    processes: int = Field(default=0, ge=0, le=256)


class SubmissionSettings(_Section):
    """The listener the dealers' CRMs submit to."""

    listen: str = "127.0.0.1:2525"
    tls_cert: Path | None = None  # PEM; empty: a self-signed one in the data dir
    tls_key: Path | None = None
    require_tls: bool = True  # AUTH and MAIL only after STARTTLS (RFC 3207, RFC 4954 §4)
    max_message_size: Size = 25 * 1000**2
    max_recipients: int = Field(default=100, ge=1, le=10_000)
    max_header_bytes: Size = 100 * 1024
    max_mime_depth: int = Field(default=50, ge=1, le=500)
    max_line_length: int = Field(default=100_000, ge=1000)
    bare_line_endings: Literal["normalize", "reject"] = "normalize"
    max_connections: int = Field(default=200, ge=1)
    max_connections_per_ip: int = Field(default=50, ge=1)
    max_messages_per_connection: int = Field(default=1000, ge=1)
    # Message data held in memory at once by all sessions of both listeners (smtp/budget.py);
    # over it, a DATA (or a message read past its plan) waits briefly, then gets 452 4.3.1.
    data_memory: Size = 1024**3
    idle_timeout: Duration = timedelta(seconds=60)
    data_timeout: Duration = timedelta(minutes=5)
    auth_failures_per_ip: int = Field(default=10, ge=1)  # per auth_failure_window
    auth_failure_window: Duration = timedelta(minutes=5)
    max_hops: int = Field(default=50, ge=1)
    check_time_budget: Duration = timedelta(seconds=5)
    shutdown_grace: Duration = timedelta(seconds=30)
    # Load balancers whose connections open with a PROXY protocol v1/v2 header naming the
    # real client (haproxy send-proxy-v2): required from these sources and accepted from
    # no other; the per-IP limits, logs and Received: then use the client's address.
    proxy_protocol_from: Networks = []


class UpstreamSettings(_Section):
    """Where accepted mail is relayed; empty ``host`` means a local Maildir."""

    host: str = ""
    port: int = 25
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    tls_verify: bool = True
    tls_ca_file: Path | None = None
    username: str = ""
    password_file: Path | None = None
    helo_name: str = ""  # empty: server.hostname


class DeliverySettings(_Section):
    """The delivery worker pool and its retry schedule (defaults close to Postfix)."""

    workers: int = Field(default=10, ge=1, le=1000)
    maildir: Path | None = None  # default data_dir/outbox
    connect_timeout: Duration = timedelta(seconds=30)
    command_timeout: Duration = timedelta(minutes=5)  # RFC 5321 §4.5.3.2 minimums
    data_timeout: Duration = timedelta(minutes=10)
    connection_reuse: int = Field(default=100, ge=1)  # messages per upstream connection
    idle_connection_timeout: Duration = timedelta(seconds=30)
    poll_interval: Duration = timedelta(seconds=1)
    lease: Duration = timedelta(minutes=30)  # longer than one attempt's worst case
    first_retry: Duration = timedelta(minutes=5)
    max_retry_interval: Duration = timedelta(hours=1)
    backoff_factor: float = Field(default=2.0, ge=1.0)
    max_age: Duration = timedelta(days=5)
    keep_finished: Duration = timedelta(days=30)  # sent log kept for feedback matching
    held_expiry: Duration = timedelta(days=14)  # held and never released: deleted (and a DSN)
    held_notice_interval: Duration = timedelta(minutes=15)  # one held-mail notice per dealer
    dsn_from: str = ""  # empty: MAILER-DAEMON@server.hostname


class StorageSettings(_Section):
    """Where state lives."""

    url: str = ""  # empty: sqlite:///<data_dir>/mailgate.db
    queue_high_water: int = Field(default=100_000, ge=1)
    queue_low_water: int = Field(default=80_000, ge=0)
    min_free_disk: Size = 0  # 0: 1.5 x submission.max_message_size (Postfix's rule)


class HttpSettings(_Section):
    """The operators' HTTP listener: admin API, ``/metrics``, ``/healthz``, ``/readyz``.

    Nothing here is for the public: keep it on loopback or an operations network. What
    recipients and dealers reach (unsubscribe links, status pages) is served by the public
    listener (``[public]``), on its own address.
    """

    listen: str = "127.0.0.1:8025"
    admin_token_file: Path | None = None  # hashed API tokens; default data_dir/admin-tokens
    # The admin API answers loopback clients only unless this is true (the listener may be
    # on an operations network for Prometheus; /metrics, /healthz and /readyz stay open).
    admin_allow_remote: bool = False
    # The https address at which the public listener is reached from the internet (through
    # a TLS-terminating proxy, or public.tls_cert): the base of the dealers' status-page
    # links in alert e-mails. Empty: the e-mails carry no link (a warning at start-up).
    public_url: str = ""


class PublicSettings(_Section):
    """The public HTTP listener: one-click unsubscribe (``/u/``) and status pages (``/status/``).

    Recipients' mailbox providers and dealers reach it, so it serves those two paths only,
    with security headers. It speaks https itself with ``tls_cert``/``tls_key``; without
    them it speaks plain HTTP for a TLS-terminating proxy in front of it.
    """

    listen: str = "127.0.0.1:8080"
    tls_cert: Path | None = None  # PEM chain; with tls_key the listener serves https
    tls_key: Path | None = None
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or CIDR
    # networks); the unsubscribe log then names the real client.
    forwarded_from: list[str] = []

    @property
    def tls(self) -> bool:
        """True when the listener serves https itself."""
        return self.tls_cert is not None and self.tls_key is not None


class InboundSettings(_Section):
    """The report listener: feedback-loop reports and bounces addressed to us.

    It starts only when ``report_addresses`` or ``bounce_domain`` is set. It takes mail
    for those addresses (and VERP addresses at the bounce domain) only, without AUTH, and
    answers everything else ``550 5.7.1``; it never relays and never replies by mail.
    """

    listen: str = "127.0.0.1:2526"
    report_addresses: list[str] = []  # e.g. ["fbl@mailgate.example"] (any case)
    bounce_domain: str = ""  # VERP return paths b-<id>-<mac>@<domain>; empty: no VERP
    max_message_size: Size = 10 * 1000**2  # reports are small; a returned original is cut
    max_connections: int = Field(default=100, ge=1)
    max_connections_per_ip: int = Field(default=20, ge=1)
    max_messages_per_connection: int = Field(default=1000, ge=1)
    reports_per_second: float = Field(default=50.0, gt=0)  # over this: 451 4.7.0, retry
    report_burst: int = Field(default=200, ge=1)
    idle_timeout: Duration = timedelta(seconds=60)
    data_timeout: Duration = timedelta(minutes=2)
    proxy_protocol_from: Networks = []  # as submission.proxy_protocol_from

    @property
    def enabled(self) -> bool:
        """True when there is anything to receive."""
        return bool(self.report_addresses or self.bounce_domain)


class AlertSettings(_Section):
    """Who hears about dealer warnings, suspensions and resumptions besides the dealer."""

    operators: list[str] = []  # always copied on every alert
    from_address: str = ""  # empty: mailgate-alerts@server.hostname
    # Where replies to an alert go (Reply-To): an address someone reads. Empty: the first
    # operator; with neither, alerts invite no reply and say to contact the operator.
    reply_to: str = ""
    webhook_url: str = ""  # optional; JSON POST signed with HMAC-SHA256
    webhook_secret_file: Path | None = None  # the HMAC key (required with webhook_url)
    # Flap damping: at most one e-mail per dealer and kind (warning, suspended, resumed) in
    # this interval; changes within it are gathered into one e-mail when it ends.
    email_interval: Duration = timedelta(hours=1)


class DnsSettings(_Section):
    """DNS: the resolver, recipient-domain validation and the self-checks (``mailgate dns check``).

    ``validate_recipients`` unset means "on when ``nameservers`` is set": a gateway with a
    resolver configured for it validates, one without (a developer's machine, the test
    harness) does not reach for the system resolver at every RCPT. Production configs set
    ``nameservers`` (a local caching resolver) or ``validate_recipients = true`` (the system
    resolver).
    """

    nameservers: list[str] = []  # "host" or "host:port"; empty: /etc/resolv.conf
    timeout: Duration = timedelta(seconds=2)  # per question, and per RCPT decision
    validate_recipients: bool | None = None
    negative_ttl: Duration = timedelta(minutes=5)  # NXDOMAIN/NODATA answers without a SOA
    egress_ips: list[str] = []  # the addresses mail leaves from (SPF, PTR, DNSBL checks)
    helo_name: str = ""  # empty: upstream.helo_name, else server.hostname
    dnsbl_zones: list[str] = []  # e.g. ["zen.spamhaus.org"] (needs a non-public resolver)
    check_interval: Duration = timedelta(hours=1)  # 0: the server does not repeat the checks

    @property
    def validating(self) -> bool:
        """Whether RCPT checks recipient domains."""
        if self.validate_recipients is None:
            return bool(self.nameservers)
        return self.validate_recipients


class UnsubscribeSettings(_Section):
    """One-click unsubscribe (RFC 8058) links added to commercial mail.

    Links are added only when ``base_url`` is set: it must be the https address at which
    the public listener's ``/u/`` path is reachable from the internet (through a proxy).
    """

    base_url: str = ""  # e.g. "https://mailgate.example.com"
    mailto: str = ""  # empty: the first inbound.report_addresses entry (none: no mailto)


class Settings(_Section):
    """All process settings."""

    server: ServerSettings = ServerSettings()
    submission: SubmissionSettings = SubmissionSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    delivery: DeliverySettings = DeliverySettings()
    storage: StorageSettings = StorageSettings()
    http: HttpSettings = HttpSettings()
    public: PublicSettings = PublicSettings()
    inbound: InboundSettings = InboundSettings()
    alerts: AlertSettings = AlertSettings()
    dns: DnsSettings = DnsSettings()
    unsubscribe: UnsubscribeSettings = UnsubscribeSettings()

    @property
    def storage_url(self) -> str:
        """The storage URL, defaulting to SQLite in the data directory."""
        return self.storage.url or f"sqlite:///{self.server.data_dir / 'mailgate.db'}"

    @property
    def maildir(self) -> Path:
        """Where mail goes when no upstream is configured."""
        return self.delivery.maildir or self.server.data_dir / "outbox"

    @property
    def min_free_disk(self) -> int:
        """Free bytes below which MAIL is refused with 452 4.3.1."""
        return self.storage.min_free_disk or int(1.5 * self.submission.max_message_size)

    @property
    def ref_key_file(self) -> Path:
        """The HMAC key file for tracking references."""
        return self.server.ref_key_file or self.server.data_dir / "ref.key"

    @property
    def status_key_file(self) -> Path:
        """The HMAC key file for the dealers' status-page links."""
        return self.server.status_key_file or self.server.data_dir / "status.key"

    @property
    def admin_token_file(self) -> Path:
        """The file of hashed admin API tokens (``mailgate admin token create`` appends)."""
        return self.http.admin_token_file or self.server.data_dir / "admin-tokens"

    @property
    def node_id_file(self) -> Path:
        """Where the node id is kept when ``server.node_id`` is not set."""
        return self.server.data_dir / "node-id"

    def listener_warnings(self) -> list[str]:
        """What an operator must hear at start-up about the HTTP listeners (may be empty).

        Links in mail must be https and reach the public listener: an unsubscribe link
        is https by validation, and a status-page link is made only from ``http.public_url``.
        """
        out: list[str] = []
        url = self.http.public_url
        unsubscribe = bool(self.unsubscribe.base_url)
        if not url:
            out.append(
                "http.public_url is not set: alert e-mails carry no link to the dealer's "
                "status page and no deliverability reports are sent; set it to the https "
                f"address of the public listener ({self.public.listen})"
                + (", where the unsubscribe links also point" if unsubscribe else "")
            )
        elif not url.startswith("https://"):
            out.append(
                f"http.public_url {url} is not https: dealers' status-page links would travel "
                "in clear; use the https address of the TLS-terminating proxy"
            )
        host = parse_hostport(self.public.listen)[0]
        if not self.public.tls and host not in ("127.0.0.1", "::1", "localhost"):
            out.append(
                f"public listener {self.public.listen} serves plain HTTP on a non-loopback "
                "address: only a TLS-terminating proxy may reach it (or set public.tls_cert "
                "and public.tls_key)"
            )
        return out


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    sections = set(Settings.model_fields)
    out: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith("MAILGATE_"):
            continue
        rest = name.removeprefix("MAILGATE_").lower()
        section, _, key = rest.partition("_")
        if section not in sections or not key:
            continue
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out.setdefault(section, {})[key] = value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load settings from ``path`` (may be ``None`` or missing) plus the environment.

    Raises ``ConfigError`` naming the file, key and problem for anything invalid.
    """
    data: dict[str, Any] = {}
    source = "(defaults)"
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    data = _merge(data, _env_overrides(os.environ if environ is None else environ))
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{source}: {key}: {msg}")
        raise ConfigError("\n".join(problems)) from exc
    for listen_key, value in (
        ("submission.listen", settings.submission.listen),
        ("http.listen", settings.http.listen),
        ("public.listen", settings.public.listen),
        ("inbound.listen", settings.inbound.listen),
    ):
        try:
            parse_hostport(value)
        except ValueError as exc:
            raise ConfigError(f"{source}: {listen_key}: {exc}") from exc
    if (settings.submission.tls_cert is None) != (settings.submission.tls_key is None):
        raise ConfigError(f"{source}: submission.tls_cert and tls_key go together")
    if (settings.public.tls_cert is None) != (settings.public.tls_key is None):
        raise ConfigError(f"{source}: public.tls_cert and tls_key go together")
    if parse_hostport(settings.http.listen) == parse_hostport(settings.public.listen):
        port = parse_hostport(settings.http.listen)[1]
        if port != 0:
            raise ConfigError(
                f"{source}: http.listen and public.listen must differ: the public listener "
                "must not serve the admin API and /metrics"
            )
    url = settings.http.public_url
    if url and not url.startswith(("https://", "http://")):
        raise ConfigError(f"{source}: http.public_url must be an https:// URL (or http://)")
    if settings.alerts.webhook_url:
        if not settings.alerts.webhook_url.startswith(("https://", "http://")):
            raise ConfigError(f"{source}: alerts.webhook_url must be an http(s) URL")
        if settings.alerts.webhook_secret_file is None:
            raise ConfigError(f"{source}: alerts.webhook_url needs alerts.webhook_secret_file")
    if settings.unsubscribe.base_url and not settings.unsubscribe.base_url.startswith("https://"):
        # RFC 8058 §3.1: the one-click URI must be https.
        raise ConfigError(f"{source}: unsubscribe.base_url must be an https:// URL")
    if settings.storage.queue_low_water > settings.storage.queue_high_water:
        raise ConfigError(f"{source}: storage.queue_low_water exceeds queue_high_water")
    return settings
