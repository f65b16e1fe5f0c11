"""Loading the ``policies/`` directory into a validated ``PolicySet``.

This module owns the policy file formats and every rule about them. Layers, in order:

1. ``defaults.toml``: one entry per finding code in ``[checks]`` plus the dealer-level keys;
   the single source of default actions.
2. ``presets/<name>.toml``, when a dealer file says ``preset = "<name>"``: a shared set of
   overrides (the same keys as the defaults, every one optional).
3. ``dealers/<dealer-id>.toml``: the dealer's identity and its own overrides.

Tables are deep-merged (a dealer can change one option of one check); arrays and scalars
are replaced. Each file is validated on its own with closed pydantic models, so a problem
is always reported against the file that contains it, and so are check options, against
the check's option record (``gateway/policy/options.py``: unknown names, wrong types,
values out of range, regular expressions that do not compile); then the whole set is
cross-checked (overlapping domains, shared AUTH users). Durations and numbers are
converted once, here: each dealer's rules carry typed option records. Pydantic stays at
this edge: callers only ever see the frozen records of ``gateway.policy.model``.

``load_policy_set`` either returns a complete set or raises ``PolicyError`` listing every
problem it found, so an operator fixes a broken directory in one pass instead of one
error per run.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from gateway.clock import parse_duration
from gateway.consent.rules import IMPLIED, ConsentRules, Interaction, Window
from gateway.errors import PolicyError, Problem
from gateway.findings import CATALOGUE
from gateway.policy.model import (
    DEFAULT_BOUNCES,
    DEFAULT_COMPLAINTS,
    CheckRule,
    DealerPolicy,
    DkimSettings,
    PolicySet,
    RateThresholds,
    RelayNetwork,
    ReportPolicy,
    SuppressionPolicy,
    UnsubscribePolicy,
)
from gateway.policy.options import OPTIONS, CheckOptions
from gateway.types import Action, DealerId

__all__ = ["ACTION_NAMES", "DEFAULTS_FILE", "load_policy_set"]

DEFAULTS_FILE = "defaults.toml"
DEALERS_DIR = "dealers"
PRESETS_DIR = "presets"

ACTION_NAMES: tuple[str, ...] = tuple(a.label for a in Action)

OptionValue = str | int | float | bool
_M = TypeVar("_M", bound="BaseModel")
_T = TypeVar("_T")

# Lower-case letters, digits and inner hyphens: safe as a file name, a metric label and a
# URL path segment without escaping.
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
# RFC 1035 §2.3.1 labels (RFC 1123 §2.1 allows a leading digit); internationalized names
# must be written in their ASCII (xn--) form, which is what appears in headers anyway.
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# AUTH identities as the CRMs send them: no spaces or control characters, which would
# be ambiguous in logs and in the SASL PLAIN encoding (RFC 4616 §2 forbids NUL).
_AUTH_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
_TOML_LINE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


# --- field validators: each raises ValueError with a message meant for an operator ---


def _suggest(word: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _action_name(value: str) -> str:
    if value not in ACTION_NAMES:
        raise ValueError(
            f"unknown action {value!r}{_suggest(value, ACTION_NAMES)}; "
            f"use one of {'|'.join(ACTION_NAMES)}"
        )
    return value


def _check_code(value: str) -> str:
    if value not in CATALOGUE:
        raise ValueError(f"unknown check code {value!r}{_suggest(value, CATALOGUE)}")
    return value


def _slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(
            f"{value!r} is not a safe id: use lower-case letters, digits and inner hyphens "
            "(at most 64 characters)"
        )
    return value


def domain_problem(value: str) -> str | None:
    """Why ``value`` is not a lower-case DNS name we accept, or ``None`` if it is one."""
    if value != value.lower():
        return f"{value!r} must be written in lower case"
    if value.endswith("."):
        return f"{value!r} must not end with a dot"
    if len(value) > 253:
        return f"{value!r} is longer than 253 characters"
    labels = value.split(".")
    if len(labels) < 2:
        return f"{value!r} is not a fully qualified domain name"
    if not all(_LABEL.match(label) for label in labels):
        return f"{value!r} is not a valid domain name (use the xn-- form for non-ASCII)"
    if labels[-1].isdigit():
        return f"{value!r} looks like an IP address, not a domain name"
    return None


def _domain(value: str) -> str:
    problem = domain_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _auth_user(value: str) -> str:
    if not _AUTH_USER.match(value):
        raise ValueError(
            f"{value!r} is not a valid AUTH user name: letters, digits and . _ @ + - only"
        )
    return value


def _address(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if not at or not local or any(c.isspace() or c in "<>,;\"'" for c in local):
        raise ValueError(f"{value!r} is not a plain e-mail address (local@domain)")
    problem = domain_problem(domain.lower())
    if problem:
        raise ValueError(f"{value!r}: the domain{problem.removeprefix(repr(domain.lower()))}")
    return value


def _option_value(value: Any) -> Any:
    # TOML tables or arrays as check options would need a schema per check; the catalogue
    # keeps options flat so that a dealer override is always one key = one value.
    if isinstance(value, str | int | float | bool):
        return value
    raise ValueError("a check option must be a string, number or boolean")


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("needs a time zone, e.g. 2026-02-01T00:00:00Z")
    return value


def _one_or_many(value: Any) -> Any:
    # ``[dkim]`` (one identity, the common case) and ``[[dkim]]`` (several) both read well.
    return [value] if isinstance(value, dict) else value


ActionName = Annotated[str, AfterValidator(_action_name)]
CheckCode = Annotated[str, AfterValidator(_check_code)]
Slug = Annotated[str, AfterValidator(_slug)]
DomainName = Annotated[str, AfterValidator(_domain)]
AuthUser = Annotated[str, AfterValidator(_auth_user)]
Address = Annotated[str, AfterValidator(_address)]


# --- file schemas (the edge): closed, strict, frozen ---


class _Closed(BaseModel):
    # strict: TOML is already typed, so "10" for a number is a mistake, not a conversion.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _CheckEntry(BaseModel):
    """One ``[checks]`` entry: an action plus check-specific options.

    Extra keys are the options; they are open here because their names and types come
    from the check's option record, which ``_check_options`` applies to every layer.
    """

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)
    __pydantic_extra__: dict[str, Annotated[Any, AfterValidator(_option_value)]]

    action: ActionName | None = None


class _DkimEntry(_Closed):
    domain: DomainName
    selector: Annotated[str, AfterValidator(_slug)]
    # Declared before key_file so that the key check can see it (pydantic validates in
    # field order and passes earlier values in ``info.data``).
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"
    key_file: str = Field(min_length=1)  # relative to the policies directory
    # A key being rotated out signs until this moment (see `mailgate dkim rotate`).
    retire_at: Annotated[datetime, AfterValidator(_aware)] | None = None

    @field_validator("key_file")
    @classmethod
    def _key_parses(cls, value: str, info: ValidationInfo) -> str:
        directory = info.context.get("directory") if info.context else None
        if isinstance(directory, Path):
            _check_private_key(directory / value, info.data.get("algorithm"))
        return value


def _duration(value: str) -> str:
    parse_duration(value)  # raises ValueError with the expected forms
    return value


DurationText = Annotated[str, AfterValidator(_duration)]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]


class _Rates(_Closed):
    """``[complaints]`` or ``[bounces]``: every key optional, merged key by key."""

    window: DurationText | None = None
    min_volume: int | None = Field(default=None, ge=0)
    warn_rate: Rate | None = None
    suspend_rate: Rate | None = None
    suspend_for: DurationText | None = None


class _Unsubscribe(_Closed):
    """``[unsubscribe]``: the CRM's own List-Unsubscribe is kept, replaced or added to."""

    existing: Literal["keep", "replace", "add"] | None = None


class _Report(_Closed):
    """``[report]``: how often the contacts get the deliverability report, and when."""

    every: Literal["day", "week", "off"] | None = None
    hour: int | None = Field(default=None, ge=0, le=23)


class _Suppression(_Closed):
    """``[suppression]``: how suppressed recipients are refused; soft-bounce limits."""

    on_rcpt: Literal["reject", "drop"] | None = None
    soft_bounce_limit: int | None = Field(default=None, ge=0)
    soft_bounce_window: DurationText | None = None
    soft_bounce_suppress_for: DurationText | None = None


# -- consent rules ([consent], gateway/consent/rules.py) -----------------------------------------

_WINDOW_KINDS = tuple(sorted(k.value for k in IMPLIED))


def _window_kind(value: str) -> str:
    if value not in _WINDOW_KINDS:
        raise ValueError(
            f"{value!r} opens no window{_suggest(value, _WINDOW_KINDS)}; "
            f"use one of {', '.join(_WINDOW_KINDS)}"
        )
    return value


def _window(value: str) -> str:
    if value.strip().lower() != "off":
        Window.parse(value)  # raises ValueError with the accepted forms
    return value


def _webhook_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ValueError, ZoneInfoNotFoundError):
        raise ValueError(
            f"{value!r} is not an IANA time zone (e.g. 'America/Toronto', 'Europe/Paris', 'UTC')"
        ) from None
    return value


class _Consent(_Closed):
    """``[consent]``: every key optional; ``windows`` merged kind by kind ("off" removes one)."""

    enforce: bool | None = None
    name: str | None = Field(default=None, min_length=1, max_length=80)
    express_consent: bool | None = None
    require_opt_in: bool | None = None
    require_postal_address: bool | None = None
    require_unsubscribe: bool | None = None
    postal_address: str | None = Field(default=None, max_length=300)
    # The law a legal preset implements ("CASL"): rules that loosen it are refused unless
    # a later layer clears it ("") and gives the rules a name of their own.
    law: str | None = Field(default=None, max_length=40)
    time_zone: Annotated[str, AfterValidator(_time_zone)] | None = None
    refused_dsn: bool | None = None
    review_after: Annotated[str, AfterValidator(_window)] | None = None
    # Where unsubscribes, complaints and withdrawals are pushed (gateway/consent/sync.py):
    # an https URL, the file holding the shared secret (relative to the policies
    # directory), and the CRM's words for each kind of statement.
    crm_webhook_url: Annotated[str, AfterValidator(_webhook_url)] | None = None
    crm_secret_file: str | None = Field(default=None, min_length=1, max_length=300)
    crm_vocabulary: dict[Literal["unsubscribe", "complaint", "withdrawal"], str] | None = None
    windows: dict[
        Annotated[str, AfterValidator(_window_kind)], Annotated[str, AfterValidator(_window)]
    ] = {}


# -- end of consent rules -------------------------------------------------------------------


# -- relay networks (relay_networks in a dealer file, [limits] in defaults.toml) -----------
#
# A dealer file may bind source networks to the dealer, for systems that speak neither
# STARTTLS nor AUTH (an on-premises DMS, a web-form relay, smtp-source): a session from
# such a network is the dealer's without AUTH; everything else (sender domains, checks,
# signing) is unchanged. Only defaults.toml sets how wide a network may be, so a dealer
# file cannot widen its own limit; overlapping networks of two dealers are refused, so
# a source address always names one dealer.

RELAY_PREFIX_V4 = 24  # shipped limits: a /24 (256 addresses) ...
RELAY_PREFIX_V6 = 56  # ... or an IPv6 /56 at the widest


def _network(value: str) -> str:
    try:
        ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not a network in CIDR form (e.g. 10.20.0.0/24): {exc}"
        ) from None
    return value


NetworkText = Annotated[str, AfterValidator(_network)]


class _Limits(_Closed):
    """``[limits]`` (defaults.toml only): the widest relay network, as a prefix length."""

    relay_prefix_v4: int | None = Field(default=None, ge=8, le=32)
    relay_prefix_v6: int | None = Field(default=None, ge=16, le=128)


def _relay_networks(
    dealers: list[_DealerSource], limits: _Limits | None, found: _Collector
) -> dict[str, tuple[RelayNetwork, ...]]:
    """Each dealer file's networks, parsed; too wide and overlapping ones are problems."""
    widest = {
        4: (limits.relay_prefix_v4 if limits else None) or RELAY_PREFIX_V4,
        6: (limits.relay_prefix_v6 if limits else None) or RELAY_PREFIX_V6,
    }
    taken: list[tuple[RelayNetwork, _DealerSource]] = []
    result: dict[str, tuple[RelayNetwork, ...]] = {}
    for source in dealers:
        own: list[RelayNetwork] = []
        for index, text in enumerate(source.file.relay_networks):
            network = ip_network(text, strict=True)
            key = f"relay_networks[{index}]"
            if network.prefixlen < widest[network.version]:
                found.add(
                    source.name,
                    key,
                    f"{text} is wider than the /{widest[network.version]} that "
                    f"limits.relay_prefix_v{network.version} in {DEFAULTS_FILE} allows; "
                    "list the dealer's hosts or smaller networks",
                )
                continue
            other = next((s for n, s in taken if n.version == network.version
                          and n.overlaps(network)), None)  # fmt: skip
            if other is source:
                found.add(source.name, key, f"{text} overlaps another of this dealer's networks")
                continue
            if other is not None:
                found.add(
                    source.name,
                    key,
                    f"{text} overlaps a network of dealer {other.file.dealer_id!r} "
                    f"({other.name}); a source address must name one dealer",
                )
                continue
            taken.append((network, source))
            own.append(network)
        result[source.file.dealer_id] = tuple(own)
    return result


# -- end of relay networks -------------------------------------------------------------------


class _Layer(_Closed):
    """The keys every layer may set; in presets and dealer files all are optional."""

    null_sender: Literal["reject", "allow"] | None = None
    on_suspended: Literal["reject", "tempfail"] | None = None
    max_recipients: int | None = Field(default=None, ge=1, le=10_000)
    checks: dict[CheckCode, _CheckEntry] = {}
    complaints: _Rates | None = None
    bounces: _Rates | None = None
    suppression: _Suppression | None = None
    consent: _Consent | None = None
    unsubscribe: _Unsubscribe | None = None
    report: _Report | None = None


class _Defaults(_Layer):
    """defaults.toml: the layer keys plus the operator's own ``[limits]``."""

    limits: _Limits | None = None


class _DealerFile(_Layer):
    dealer_id: Slug
    name: str = Field(min_length=1, max_length=200)
    preset: Slug | None = None
    auth_users: list[AuthUser] = Field(min_length=1)
    from_domains: list[DomainName] = Field(min_length=1)
    contacts: list[Address] = []
    dkim: Annotated[list[_DkimEntry], BeforeValidator(_one_or_many)] = []
    relay_networks: list[NetworkText] = []  # see "relay networks" below

    @field_validator("dealer_id")
    @classmethod
    def _matches_stem(cls, value: str, info: ValidationInfo) -> str:
        stem = info.context.get("stem") if info.context else None
        if stem is not None and value != stem:
            raise ValueError(f"{value!r} does not match the file name {stem + '.toml'!r}")
        return value


_KNOWN_KEYS = (
    frozenset(_DealerFile.model_fields)
    | frozenset(_Limits.model_fields)
    | frozenset(_DkimEntry.model_fields)
    | frozenset(_Rates.model_fields)
    | frozenset(_Suppression.model_fields)
    | frozenset(_Unsubscribe.model_fields)
    | frozenset(_Report.model_fields)
    | frozenset(_Consent.model_fields)
    | {"action"}
)


def _check_private_key(path: Path, algorithm: object) -> None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"key file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ValueError(f"key file {str(path)!r} cannot be read: {exc.strerror}") from None
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError(f"key file {str(path)!r} is encrypted; store it unencrypted") from None
    except ValueError:
        raise ValueError(f"key file {str(path)!r} is not a PEM private key") from None
    if algorithm == "ed25519-sha256":
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError(f"key file {str(path)!r} is not an Ed25519 key (RFC 8463)")
    elif not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"key file {str(path)!r} is not an RSA key; set algorithm to match")
    elif key.key_size < 1024:
        # RFC 8301 §3.2: verifiers must not accept RSA keys below 1024 bits.
        raise ValueError(f"key file {str(path)!r} holds a {key.key_size}-bit RSA key; use 2048")


# --- reading files ---


@dataclass(slots=True)
class _Collector:
    """Problems found so far, in the order found."""

    problems: list[Problem] = field(default_factory=list)

    def add(self, file: str, key: str, message: str) -> None:
        self.problems.append(Problem(file, key, message))

    def add_validation(self, file: str, exc: ValidationError) -> None:
        for err in exc.errors():
            loc = [p for p in err["loc"] if p != "[key]"]
            key = ""
            for part in loc:
                key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
            if err["type"] == "extra_forbidden":
                message = f"unknown key{_suggest(str(loc[-1]), _KNOWN_KEYS)}"
            elif err["type"] == "missing":
                message = "required key is missing"
            else:
                message = str(err["msg"]).removeprefix("Value error, ")
            self.add(file, key, message)


def _read_toml(path: Path, name: str, found: _Collector) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        found.add(name, "", "file not found")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        found.add(name, "", f"cannot be read: {exc}")
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = _TOML_LINE.search(message)
        if where is None:
            found.add(name, "", f"invalid TOML: {message}")
        else:
            found.add(name, f"line {where.group(1)}", f"invalid TOML: {message[: where.start()]}")
        return None


def _validate(
    model: type[_M], data: dict[str, Any], name: str, found: _Collector, **context: object
) -> _M | None:
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        found.add_validation(name, exc)
        return None


def _display(directory: Path, *parts: str) -> str:
    return str(directory.joinpath(*parts))


# --- cross-checks ---


def _check_defaults(defaults: _Layer, name: str, found: _Collector) -> None:
    for code in CATALOGUE:
        entry = defaults.checks.get(code)
        if entry is None:
            found.add(name, f"checks.{code}", "missing: every check code needs a default action")
        elif entry.action is None:
            found.add(name, f"checks.{code}.action", "required key is missing")


@functools.cache
def _option_fields(code: str) -> dict[str, tuple[Any, Mapping[str, Any]]]:
    """Each option of check ``code``: its type and its limits (``options.limits``)."""
    kind = OPTIONS.get(code, CheckOptions)
    hints = typing.get_type_hints(kind)
    return {f.name: (hints[f.name], f.metadata) for f in dataclasses.fields(kind)}


def _limit_problem(value: float, limits: Mapping[str, Any], unit: str = "") -> str | None:
    low, high = limits.get("minimum"), limits.get("maximum")
    if low is not None and value < low:
        return f"must be at least {low:g}{unit}"
    if high is not None and value > high:
        return f"must be at most {high:g}{unit}"
    return None


def _typed_option(code: str, option: str, value: OptionValue) -> tuple[Any, str]:
    """``(typed value, "")`` for a valid ``value`` of ``option``, or ``(None, problem)``."""
    hint, limits = _option_fields(code)[option]
    if hint is bool:
        return (value, "") if isinstance(value, bool) else (None, "must be true or false")
    if hint is int or hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or (hint is int and not isinstance(value, int)):
            return None, "must be a whole number" if hint is int else "must be a number"
        number = hint(value)
        problem = _limit_problem(number, limits)
        return (None, problem) if problem else (number, "")
    if hint is timedelta:
        if not isinstance(value, str):
            return None, "must be a duration in quotes, e.g. '90s', '5m', '72h', '5d'"
        try:
            duration = parse_duration(value)
        except ValueError as exc:
            return None, str(exc)
        problem = _limit_problem(duration.total_seconds(), limits, "s")
        return (None, problem) if problem else (duration, "")
    if typing.get_origin(hint) is Literal:
        words = typing.get_args(hint)
        if value in words and isinstance(value, str):
            return value, ""
        return None, f"must be one of {', '.join(repr(w) for w in words)}"
    if not isinstance(value, str):
        return None, "must be a string"
    if limits.get("pattern"):
        # Compiled here so that a typo is a policy error, not a failure on every message.
        try:
            re.compile(value)
        except re.error as exc:
            return None, f"not a valid regular expression: {exc}"
    return value, ""


def _check_options(layer: _Layer, name: str, found: _Collector) -> None:
    # The option records (gateway/policy/options.py) say which options a check takes, so
    # a misspelt option, in any layer, is an error instead of a silently ignored key.
    for code, entry in layer.checks.items():
        declared = _option_fields(code)
        for option, value in (entry.model_extra or {}).items():
            key = f"checks.{code}.{option}"
            if option not in declared:
                takes = ", ".join(sorted(declared)) or "no options"
                hint = _suggest(option, [*declared, "action"])
                found.add(name, key, f"unknown option{hint}; {code} takes {takes}")
                continue
            _, problem = _typed_option(code, option, value)
            if problem:
                found.add(name, key, problem)


@dataclass(frozen=True, slots=True)
class _DealerSource:
    name: str  # the file, as reported in problems
    file: _DealerFile
    preset: _Layer | None


def _check_unique(dealers: list[_DealerSource], found: _Collector) -> None:
    domain_owner: dict[str, _DealerSource] = {}
    user_owner: dict[str, _DealerSource] = {}
    for source in dealers:
        for attr, values, owner, what in (
            ("from_domains", source.file.from_domains, domain_owner, "domain"),
            ("auth_users", source.file.auth_users, user_owner, "AUTH user"),
        ):
            for index, value in enumerate(values):
                key = f"{attr}[{index}]"
                first = owner.setdefault(value, source)
                if first is source and values.index(value) != index:
                    found.add(source.name, key, f"{what} {value!r} is listed twice")
                elif first is not source:
                    found.add(
                        source.name,
                        key,
                        f"{what} {value!r} already belongs to dealer {first.file.dealer_id!r}"
                        f" ({first.name}); each {what} belongs to one dealer only",
                    )


def _check_dkim_domains(dealers: list[_DealerSource], found: _Collector) -> None:
    # A dealer must never sign as another dealer's domain (the signer only ever uses the
    # dealer's own entries; this keeps those entries from naming someone else's domain).
    owner = {domain: s for s in dealers for domain in s.file.from_domains}
    for source in dealers:
        for index, entry in enumerate(source.file.dkim):
            other = owner.get(entry.domain)
            if other is not None and other is not source:
                found.add(
                    source.name,
                    f"dkim[{index}].domain",
                    f"{entry.domain!r} is a sending domain of dealer {other.file.dealer_id!r}",
                )


# --- building the records ---


def _last(values: Iterable[_T | None]) -> _T | None:
    result: _T | None = None
    for value in values:
        if value is not None:
            result = value
    return result


def _rule(code: str, entry: Mapping[str, Any]) -> CheckRule:
    # Every layer's options were validated already (_check_options): conversion cannot fail.
    options = {k: _typed_option(code, k, v)[0] for k, v in entry.items() if k != "action"}
    return CheckRule(Action.parse(entry["action"]), OPTIONS.get(code, CheckOptions)(**options))


def _merged_checks(layers: list[_Layer]) -> dict[str, CheckRule]:
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for code, entry in layer.checks.items():
            merged.setdefault(code, {}).update(entry.model_dump(exclude_unset=True))
    # Catalogue order, so listings and `policy show` read the same for every dealer.
    return {code: _rule(code, merged[code]) for code in CATALOGUE}


def _build_dealer(
    source: _DealerSource,
    defaults: _Layer,
    directory: Path,
    relay_networks: tuple[RelayNetwork, ...] = (),
) -> DealerPolicy:
    file = source.file
    layers = [defaults] if source.preset is None else [defaults, source.preset]
    layers.append(file)
    return DealerPolicy(
        dealer_id=DealerId(file.dealer_id),
        name=file.name,
        auth_users=frozenset(file.auth_users),
        from_domains=frozenset(file.from_domains),
        contacts=tuple(file.contacts),
        checks=MappingProxyType(_merged_checks(layers)),
        null_sender=_last(layer.null_sender for layer in layers) or "reject",
        on_suspended=_last(layer.on_suspended for layer in layers) or "reject",
        max_recipients=_last(layer.max_recipients for layer in layers),
        dkim=tuple(
            DkimSettings(d.domain, d.selector, directory / d.key_file, d.algorithm, d.retire_at)
            for d in file.dkim
        ),
        source=source.name,
        complaints=_rates([layer.complaints for layer in layers], DEFAULT_COMPLAINTS),
        bounces=_rates([layer.bounces for layer in layers], DEFAULT_BOUNCES),
        suppression=_suppression([layer.suppression for layer in layers]),
        consent=_consent([layer.consent for layer in layers], file.preset or ""),
        unsubscribe=UnsubscribePolicy(
            existing=_last(
                layer.unsubscribe.existing for layer in layers if layer.unsubscribe is not None
            )
            or "keep"
        ),
        report=ReportPolicy(**_merged(layer.report for layer in layers)),
        relay_networks=relay_networks,
    )


def _merged(sections: Iterable[BaseModel | None]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for section in sections:
        if section is not None:
            merged.update(section.model_dump(exclude_none=True))
    return merged


def _rates(sections: list[_Rates | None], default: RateThresholds) -> RateThresholds:
    values = _merged(sections)
    return RateThresholds(
        window=parse_duration(values.get("window", default.window)),
        min_volume=values.get("min_volume", default.min_volume),
        warn_rate=values.get("warn_rate", default.warn_rate),
        suspend_rate=values.get("suspend_rate", default.suspend_rate),
        suspend_for=parse_duration(values.get("suspend_for", default.suspend_for)),
    )


def _suppression(sections: list[_Suppression | None]) -> SuppressionPolicy:
    values = _merged(sections)
    default = SuppressionPolicy()
    return SuppressionPolicy(
        on_rcpt=values.get("on_rcpt", default.on_rcpt),
        soft_bounce_limit=values.get("soft_bounce_limit", default.soft_bounce_limit),
        soft_bounce_window=parse_duration(
            values.get("soft_bounce_window", default.soft_bounce_window)
        ),
        soft_bounce_suppress_for=parse_duration(
            values.get("soft_bounce_suppress_for", default.soft_bounce_suppress_for)
        ),
    )


def _check_rates(source: _DealerSource, defaults: _Layer, found: _Collector) -> None:
    # Checked on the merged values: a dealer may lower suspend_rate below the shipped
    # warn_rate without touching warn_rate, which would make the warning unreachable.
    layers = [defaults] if source.preset is None else [defaults, source.preset]
    layers.append(source.file)
    for name, default in (("complaints", DEFAULT_COMPLAINTS), ("bounces", DEFAULT_BOUNCES)):
        rates = _rates([getattr(layer, name) for layer in layers], default)
        warn, suspend = rates.warn_rate, rates.suspend_rate
        if warn > suspend:
            found.add(
                source.name,
                f"{name}.warn_rate",
                f"{warn} is above suspend_rate {suspend}; the warning must come first",
            )


# --- the entry point ---


def load_policy_set(directory: Path) -> PolicySet:
    """Load, merge and validate every policy file under ``directory``.

    Returns the complete set, or raises ``PolicyError`` whose ``problems`` list every
    problem found (file, dotted key, message). A directory without a ``dealers/``
    folder is a valid set with no dealers; a missing ``defaults.toml`` is a problem.
    Performs blocking file I/O: call it from a thread when on the event loop.
    """
    found = _Collector()
    read: list[str] = []

    defaults_name = _display(directory, DEFAULTS_FILE)
    defaults: _Defaults | None = None
    data = _read_toml(directory / DEFAULTS_FILE, defaults_name, found)
    if data is not None:
        read.append(defaults_name)
        defaults = _validate(_Defaults, data, defaults_name, found)
        if defaults is not None:
            _check_defaults(defaults, defaults_name, found)

    presets: dict[str, tuple[str, _Layer | None]] = {}
    dealers: list[_DealerSource] = []
    dealer_dir = directory / DEALERS_DIR
    paths = sorted(dealer_dir.glob("*.toml")) if dealer_dir.is_dir() else []
    for path in paths:
        name = _display(directory, DEALERS_DIR, path.name)
        data = _read_toml(path, name, found)
        if data is None:
            continue
        read.append(name)
        file = _validate(_DealerFile, data, name, found, stem=path.stem, directory=directory)
        if file is None:
            continue
        preset: _Layer | None = None
        if file.preset is not None:
            if file.preset not in presets:
                presets[file.preset] = _load_preset(directory, file.preset, found, read)
            preset_name, preset = presets[file.preset]
            if preset is None and not (directory / PRESETS_DIR / f"{file.preset}.toml").exists():
                found.add(name, "preset", f"no preset named {file.preset!r} ({preset_name})")
                continue
            if preset is None:
                continue  # the preset's own problems are already listed
        dealers.append(_DealerSource(name, file, preset))

    if defaults is not None:
        _check_options(defaults, defaults_name, found)
        for preset_name, preset in presets.values():
            if preset is not None:
                _check_options(preset, preset_name, found)
        for source in dealers:
            _check_options(source.file, source.name, found)
            _check_rates(source, defaults, found)
            _check_consent(source, defaults, found)
    _check_unique(dealers, found)
    _check_dkim_domains(dealers, found)
    networks = _relay_networks(dealers, defaults.limits if defaults else None, found)

    if found.problems or defaults is None:
        raise PolicyError(found.problems)
    return PolicySet(
        defaults=MappingProxyType(_merged_checks([defaults])),
        dealers=MappingProxyType(
            {
                DealerId(s.file.dealer_id): _build_dealer(
                    s, defaults, directory, networks[s.file.dealer_id]
                )
                for s in dealers
            }
        ),
        source_dir=directory,
        loaded_from=tuple(read),
    )


def _load_preset(
    directory: Path, preset: str, found: _Collector, read: list[str]
) -> tuple[str, _Layer | None]:
    name = _display(directory, PRESETS_DIR, f"{preset}.toml")
    path = directory / PRESETS_DIR / f"{preset}.toml"
    if not path.exists():
        return name, None  # reported against the dealer file that names it
    data = _read_toml(path, name, found)
    if data is None:
        return name, None
    read.append(name)
    return name, _validate(_Layer, data, name, found)


# -- consent rules: merge and cross-check ------------------------------------------------


def _consent_layers(source: _DealerSource, defaults: _Layer) -> list[_Consent]:
    layers = [defaults] if source.preset is None else [defaults, source.preset]
    layers.append(source.file)
    return [layer.consent for layer in layers if layer.consent is not None]


def _consent(sections: Iterable[_Consent | None], preset: str = "") -> ConsentRules:
    values: dict[str, Any] = {}
    windows: dict[str, str] = {}
    for section in sections:
        if section is None:
            continue
        values.update(section.model_dump(exclude_none=True, exclude={"windows"}))
        windows.update(section.windows)
    return ConsentRules(
        enforce=values.get("enforce", False),
        name=values.get("name", ""),
        windows=MappingProxyType(
            {
                Interaction(kind): Window.parse(text)
                for kind, text in windows.items()
                if text.strip().lower() != "off"
            }
        ),
        express_consent=values.get("express_consent", True),
        require_opt_in=values.get("require_opt_in", False),
        require_postal_address=values.get("require_postal_address", False),
        require_unsubscribe=values.get("require_unsubscribe", False),
        postal_address=values.get("postal_address", "").strip(),
        law=values.get("law", "").strip(),
        zone=ZoneInfo(values["time_zone"]) if "time_zone" in values else UTC,
        preset=preset,
        refused_dsn=values.get("refused_dsn", False),
        review_after=_review_after(values.get("review_after")),
        crm_webhook_url=values.get("crm_webhook_url", ""),
        crm_secret_file=values.get("crm_secret_file", ""),
        crm_vocabulary=MappingProxyType(dict(values.get("crm_vocabulary", {}))),
    )


def _review_after(text: str | None) -> Window | None:
    if text is None or text.strip().lower() == "off":
        return None
    return Window.parse(text)


def _check_consent(source: _DealerSource, defaults: _Layer, found: _Collector) -> None:
    # A preset that requires the postal address (CAN-SPAM §7704(a)(5)(A)(iii)) is
    # meaningless without one: every commercial message would be flagged.
    rules = _consent(_consent_layers(source, defaults))
    if rules.enforce and rules.require_postal_address and not rules.postal_address:
        found.add(
            source.name,
            "consent.postal_address",
            f"the {rules.name or 'consent'} rules require the dealer's postal address in "
            "commercial mail; set it here",
        )
    if bool(rules.crm_webhook_url) != bool(rules.crm_secret_file):
        found.add(
            source.name,
            "consent.crm_webhook_url",
            "the CRM webhook needs both crm_webhook_url and crm_secret_file (its statements "
            "are signed)",
        )
    if source.preset is not None and source.preset.consent is not None:
        _check_loosened(source, defaults, found)


def _loosened(legal: ConsentRules, rules: ConsentRules) -> list[tuple[str, str]]:
    """(key, how) for each way ``rules`` allow more than the legal preset ``legal``."""
    found: list[tuple[str, str]] = []
    if legal.enforce and not rules.enforce:
        found.append(("consent.enforce", "turns the rules off"))
    for key in ("require_opt_in", "require_postal_address", "require_unsubscribe"):
        if getattr(legal, key) and not getattr(rules, key):
            found.append((f"consent.{key}", "drops a requirement"))
    if rules.express_consent and not legal.express_consent:
        found.append(("consent.express_consent", "counts express consent the preset does not"))
    for kind, window in sorted(rules.windows.items(), key=lambda kw: kw[0].value):
        allowed = legal.windows.get(kind)
        if allowed is None:
            found.append((f"consent.windows.{kind}", f"{window} where the preset opens none"))
        elif window.longer_than(allowed):
            found.append((f"consent.windows.{kind}", f"{window} is longer than {allowed}"))
    return found


def _check_loosened(source: _DealerSource, defaults: _Layer, found: _Collector) -> None:
    # A legal preset is a floor (B7): a dealer may tighten it, but rules that allow more
    # than the law must not be described with the law's name in replies and reports.
    assert source.preset is not None
    legal = _consent([defaults.consent, source.preset.consent])
    if not legal.law:
        return
    rules = _consent(_consent_layers(source, defaults))
    loosened = _loosened(legal, rules)
    if not loosened:
        return
    if rules.law:
        for key, how in loosened:
            found.add(
                source.name,
                key,
                f"{how}: looser than {legal.law} (the {source.file.preset} preset); a legal "
                f'preset may only be tightened. Rules of your own need consent.law = "" and '
                "a consent.name of their own",
            )
    elif rules.name == legal.name or legal.law.lower() in rules.name.lower():
        found.add(
            source.name,
            "consent.name",
            f"rules looser than {legal.law} ({', '.join(k for k, _ in loosened)}) cannot be "
            f"called {rules.name!r}; give them a name of their own",
        )


# -- end of consent rules: merge and cross-check -----------------------------------------
