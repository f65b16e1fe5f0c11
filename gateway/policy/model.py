"""The policy schema at run time: frozen records built by the loader from TOML.

A ``PolicySet`` is the whole validated set: the shipped defaults and one ``DealerPolicy``
per dealer file, each already merged with the defaults. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path
from types import MappingProxyType
from typing import Literal, TypeVar

from gateway.consent.rules import NO_RULES, ConsentRules
from gateway.policy.options import NO_OPTIONS, CheckOptions
from gateway.types import Action, DealerId

_O = TypeVar("_O", bound=CheckOptions)

# A source network bound to a dealer (``relay_networks``): sessions from it need no AUTH.
RelayNetwork = IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True)
class CheckRule:
    """How one finding code is handled for a dealer: its action and its typed options."""

    action: Action
    options: CheckOptions = NO_OPTIONS


def options_of(checks: Mapping[str, CheckRule], kind: type[_O]) -> _O:
    """The ``kind`` options in ``checks`` (the rule of ``kind.code``).

    The loader gives every rule of a check that takes options its record; a rule built
    without options (tests, ``mailgate check`` without a policy) or a missing rule gives
    the record's defaults. A rule holding another check's options is a bug: ``TypeError``.
    """
    rule = checks.get(kind.code)
    found = NO_OPTIONS if rule is None else rule.options
    if isinstance(found, kind):
        return found
    if type(found) is CheckOptions:
        return kind()
    raise TypeError(f"the {kind.code} rule holds {type(found).__name__}, not {kind.__name__}")


@dataclass(frozen=True, slots=True)
class DkimSettings:
    """One DKIM signing identity: ``d=``, ``s=``, the private key and its algorithm.

    ``retire_at`` (timezone-aware) ends a key rotation: from then on the identity no
    longer signs, while a newer one of the same dealer does.
    """

    domain: str
    selector: str
    key_file: Path
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"
    retire_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RateThresholds:
    """When a dealer is warned or suspended for one rate (``[complaints]``, ``[bounces]``).

    The rate is events over volume in the rolling ``window`` (whole UTC days, today
    included); below ``min_volume`` no decision is made. A suspension made by the rate
    lasts ``suspend_for`` unless an operator resumes the dealer earlier.
    """

    window: timedelta
    min_volume: int
    warn_rate: float
    suspend_rate: float
    suspend_for: timedelta


# Gmail's sender guidelines ask for a spam rate below 0.1% and never 0.3%; 0.2% is
# "10 per 5,000". Amazon SES reviews an account at a 5% bounce rate and pauses at 10%.
DEFAULT_COMPLAINTS = RateThresholds(timedelta(days=7), 1000, 0.001, 0.002, timedelta(hours=72))
DEFAULT_BOUNCES = RateThresholds(timedelta(days=7), 1000, 0.05, 0.10, timedelta(hours=72))


@dataclass(frozen=True, slots=True)
class SuppressionPolicy:
    """How suppressed recipients are refused, and when soft bounces suppress (``[suppression]``).

    ``on_rcpt``: ``reject`` answers ``550 5.7.1`` at RCPT; ``drop`` accepts the recipient
    and leaves it out of the queued copies (the CRM never learns it was skipped).
    """

    on_rcpt: Literal["reject", "drop"] = "reject"
    soft_bounce_limit: int = 3  # soft bounces within soft_bounce_window suppress ...
    soft_bounce_window: timedelta = timedelta(days=7)
    soft_bounce_suppress_for: timedelta = timedelta(days=14)  # ... for this long


@dataclass(frozen=True, slots=True)
class UnsubscribePolicy:
    """``[unsubscribe]``: what happens to a CRM's own ``List-Unsubscribe`` (unsubscribe/).

    ``existing``: ``keep`` leaves a message that has one as it is; ``replace`` puts ours in
    its place; ``add`` lists ours first and the CRM's after. Messages without one always
    get ours (when ``unsubscribe.base_url`` is set in mailgate.toml).
    """

    existing: Literal["keep", "replace", "add"] = "keep"


@dataclass(frozen=True, slots=True)
class ReportPolicy:
    """``[report]``: the deliverability report e-mailed to the contacts (gateway/reports/).

    ``every``: ``day`` (about the previous UTC day), ``week`` (Monday to Sunday) or ``off``;
    it goes out from ``hour`` o'clock UTC after the period ends, and only when there was mail.
    """

    every: Literal["day", "week", "off"] = "day"
    hour: int = 6


@dataclass(frozen=True, slots=True)
class DealerPolicy:
    """Everything the gateway needs to know about one dealer (defaults merged in)."""

    dealer_id: DealerId
    name: str
    auth_users: frozenset[str]
    from_domains: frozenset[str]  # lower-case; subdomains are not implied
    contacts: tuple[str, ...]
    checks: Mapping[str, CheckRule]
    null_sender: Literal["reject", "allow"] = "reject"
    on_suspended: Literal["reject", "tempfail"] = "reject"
    max_recipients: int | None = None  # None: the listener's limit
    dkim: tuple[DkimSettings, ...] = ()
    source: str = ""  # the file it came from, for messages
    complaints: RateThresholds = DEFAULT_COMPLAINTS
    bounces: RateThresholds = DEFAULT_BOUNCES
    suppression: SuppressionPolicy = SuppressionPolicy()
    consent: ConsentRules = NO_RULES  # [consent]: eligibility windows (gateway/consent/rules.py)
    unsubscribe: UnsubscribePolicy = UnsubscribePolicy()
    report: ReportPolicy = ReportPolicy()
    # Source networks whose sessions are this dealer's without AUTH or STARTTLS (systems
    # that speak neither); empty: AUTH only. The loader bounds how wide each may be.
    relay_networks: tuple[RelayNetwork, ...] = ()

    def owns_domain(self, domain: str) -> bool:
        """Return True if ``domain`` (any case) is one of the dealer's sending domains."""
        return domain.lower().rstrip(".") in self.from_domains

    def rule(self, code: str) -> CheckRule:
        """Return the rule for ``code``; the loader guarantees every known code has one."""
        return self.checks[code]

    def options(self, kind: type[_O]) -> _O:
        """The typed options of the check ``kind`` belongs to (see ``options_of``)."""
        return options_of(self.checks, kind)


@dataclass(frozen=True, slots=True)
class PolicySet:
    """A validated set of policies, swapped as a whole on reload."""

    defaults: Mapping[str, CheckRule]
    dealers: Mapping[DealerId, DealerPolicy]
    source_dir: Path
    loaded_from: tuple[str, ...] = ()  # files read, for `policy show`
    _by_user: Mapping[str, DealerId] = field(default_factory=lambda: MappingProxyType({}))
    _by_network: tuple[tuple[RelayNetwork, DealerId], ...] = ()

    def __post_init__(self) -> None:
        by_user = {user: d.dealer_id for d in self.dealers.values() for user in d.auth_users}
        object.__setattr__(self, "_by_user", MappingProxyType(by_user))
        networks = [(n, d.dealer_id) for d in self.dealers.values() for n in d.relay_networks]
        object.__setattr__(self, "_by_network", tuple(networks))

    def dealer(self, dealer_id: str) -> DealerPolicy | None:
        """Return the policy of ``dealer_id``, or ``None`` if there is no such dealer."""
        return self.dealers.get(DealerId(dealer_id))

    def dealer_for_user(self, username: str) -> DealerPolicy | None:
        """Return the dealer an SMTP AUTH username belongs to, or ``None``."""
        dealer_id = self._by_user.get(username)
        return None if dealer_id is None else self.dealers[dealer_id]

    def dealer_for_ip(self, ip: str) -> tuple[DealerPolicy, RelayNetwork] | None:
        """Return the dealer whose ``relay_networks`` hold ``ip``, and that network.

        An IPv4-mapped IPv6 peer (``::ffff:10.0.0.1``, a dual-stack listener) counts as its
        IPv4 address. The loader refuses overlapping networks, so at most one matches.
        """
        if not self._by_network:
            return None
        try:
            address = ip_address(ip)
        except ValueError:
            return None
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for network, dealer_id in self._by_network:
            if address.version == network.version and address in network:
                return self.dealers[dealer_id], network
        return None
