"""The policy loader: layering, closed schemas and whole-set cross-checks."""

from __future__ import annotations

import dataclasses
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.errors import PolicyError, Problem
from gateway.findings import CATALOGUE
from gateway.policy.loader import load_policy_set
from gateway.policy.model import CheckRule, options_of
from gateway.policy.options import (
    NO_OPTIONS,
    OPTIONS,
    BrokenHtmlOptions,
    CheckOptions,
    DangerousAttachmentOptions,
    DuplicateMessageOptions,
    FrequencyCapOptions,
    GmailClippingOptions,
    NearDuplicateOptions,
)
from gateway.types import Action, DealerId

from .policyfiles import MakeDir, Tree, dealer_toml, defaults_toml


def rel(problem: Problem, root: Path) -> str:
    return Path(problem.file).relative_to(root).as_posix()


def problems_of(root: Path) -> list[Problem]:
    with pytest.raises(PolicyError) as info:
        load_policy_set(root)
    assert str(info.value) == "\n".join(str(p) for p in info.value.problems)
    return list(info.value.problems)


def pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


DKIM_RSA = '[dkim]\ndomain = "a.test"\nselector = "crm1"\nkey_file = "keys/a.pem"\n'
DKIM_ED = DKIM_RSA + 'algorithm = "ed25519-sha256"\n'


# --- the shipped directory ---


def test_shipped_policies_validate(shipped: Path) -> None:
    policy_set = load_policy_set(shipped)
    dealer = policy_set.dealer("example-motors")
    assert dealer is not None
    assert dealer.name == "Example Motors"
    assert dealer.auth_users == {"example-crm"}
    assert dealer.from_domains == {"example-motors.test"}
    assert dealer.contacts == ("gm@example-motors.test",)
    assert dealer.dkim == ()
    assert policy_set.dealer_for_user("example-crm") is dealer


def test_shipped_defaults_agree_with_catalogue(shipped: Path) -> None:
    # defaults.toml is the source of default actions; the catalogue's copy must not drift.
    checks = tomllib.loads((shipped / "defaults.toml").read_text())["checks"]
    assert list(checks) == list(CATALOGUE)
    for code, kind in CATALOGUE.items():
        assert Action.parse(checks[code]["action"]) is kind.default_action, code


def test_every_dealer_gets_every_catalogue_code(shipped: Path) -> None:
    for dealer in load_policy_set(shipped).dealers.values():
        assert list(dealer.checks) == list(CATALOGUE)
        for code in CATALOGUE:
            assert dealer.rule(code).action is CATALOGUE[code].default_action


# --- layering ---


def test_preset_then_dealer_override_defaults(make_dir: MakeDir) -> None:
    root = make_dir(sample="with-preset")
    policy_set = load_policy_set(root)
    dealer = policy_set.dealer("review-motors")
    assert dealer is not None
    assert dealer.rule("from-domain-not-allowed").action is Action.HOLD  # from the preset
    assert dealer.rule("multiple-from").action is Action.REJECT  # the dealer beats the preset
    assert dealer.rule("missing-from").action is Action.REJECT  # from the defaults
    assert dealer.on_suspended == "tempfail"  # preset
    assert dealer.max_recipients == 10  # dealer
    assert dealer.null_sender == "reject"  # defaults
    assert str(root / "presets" / "strict.toml") in policy_set.loaded_from
    other = policy_set.dealer("good-motors")
    assert other is not None
    assert other.rule("from-domain-not-allowed").action is Action.REJECT
    assert other.max_recipients is None


def test_check_options_deep_merge(make_dir: MakeDir) -> None:
    root = make_dir(
        {
            "defaults.toml": defaults_toml(
                {"duplicate-message": 'window = "24h", ignore_pattern = "^Ref:"'}
            ),
            "dealers/good-motors.toml": dealer_toml(
                "good-motors", extra='[checks]\nduplicate-message = { window = "48h" }\n'
            ),
        }
    )
    policy_set = load_policy_set(root)
    dealer = policy_set.dealers[DealerId("good-motors")]
    rule = dealer.rule("duplicate-message")
    assert rule.action is CATALOGUE["duplicate-message"].default_action
    assert rule.options == DuplicateMessageOptions(
        window=timedelta(hours=48), ignore_pattern="^Ref:"
    )
    assert dealer.options(DuplicateMessageOptions) is rule.options
    assert policy_set.defaults["duplicate-message"].options == DuplicateMessageOptions(
        window=timedelta(hours=24), ignore_pattern="^Ref:"
    )


def test_options_are_typed_records_built_at_load_time(shipped: Path) -> None:
    dealer = load_policy_set(shipped).dealer("example-motors")
    assert dealer is not None
    assert dealer.options(DuplicateMessageOptions).window == timedelta(hours=72)
    assert dealer.options(FrequencyCapOptions) == FrequencyCapOptions(per_day=1, per_week=3)
    assert dealer.options(NearDuplicateOptions).threshold == 0.6
    assert dealer.options(GmailClippingOptions).max_bytes == 104448
    assert dealer.options(BrokenHtmlOptions).min_severity == "major"
    assert dealer.options(DangerousAttachmentOptions).max_bytes == 100 * 1024 * 1024
    assert dealer.rule("missing-from").options == NO_OPTIONS
    for code, rule in dealer.checks.items():
        assert type(rule.options) is OPTIONS.get(code, CheckOptions), code


def test_shipped_defaults_name_every_option(shipped: Path) -> None:
    # defaults.toml documents every option with its default; a record field it does not
    # name would be a knob nobody can find.
    checks = tomllib.loads((shipped / "defaults.toml").read_text())["checks"]
    for code, kind in OPTIONS.items():
        named = set(checks[code]) - {"action"}
        assert named == {f.name for f in dataclasses.fields(kind)}, code


def test_a_rule_without_options_reads_the_defaults() -> None:
    rules = {"gmail-clipping": CheckRule(Action.TAG)}
    assert options_of(rules, GmailClippingOptions) == GmailClippingOptions()
    assert options_of({}, FrequencyCapOptions) == FrequencyCapOptions()
    with pytest.raises(TypeError, match="holds GmailClippingOptions"):
        options_of(
            {"broken-html": CheckRule(Action.TAG, GmailClippingOptions())}, BrokenHtmlOptions
        )


def test_dkim_keys_resolve_against_policies_dir(make_dir: MakeDir) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = make_dir(
        {
            "keys/a.pem": pem(rsa_key),
            "keys/b.pem": pem(ed25519.Ed25519PrivateKey.generate()),
            "dealers/a.toml": dealer_toml("a", domain="a.test", extra=DKIM_RSA),
            "dealers/b.toml": dealer_toml(
                "b", domain="b.test", extra=DKIM_ED.replace("a.", "b.").replace("\n[", "\n[[")
            ),
        }
    )
    policy_set = load_policy_set(root)
    (a,) = policy_set.dealers[DealerId("a")].dkim
    assert (a.domain, a.selector, a.algorithm) == ("a.test", "crm1", "rsa-sha256")
    assert a.key_file == root / "keys" / "a.pem"
    (b,) = policy_set.dealers[DealerId("b")].dkim
    assert b.algorithm == "ed25519-sha256"


def test_no_dealers_directory_is_an_empty_set(make_dir: MakeDir) -> None:
    root = make_dir({"dealers/good-motors.toml": None})
    assert load_policy_set(root).dealers == {}


# --- problems: one table, each case a small directory and the problems it must produce ---


class Case(NamedTuple):
    tree: Tree
    expected: list[tuple[str, str, str]]  # (file relative to the root, key, message part)


CASES: dict[str, Case] = {
    "unknown-top-level-key": Case(
        {"dealers/good-motors.toml": dealer_toml("good-motors", extra='colour = "red"\n')},
        [("dealers/good-motors.toml", "colour", "unknown key")],
    ),
    "unknown-key-suggests": Case(
        {"dealers/good-motors.toml": dealer_toml("good-motors", extra='on_suspend = "reject"\n')},
        [("dealers/good-motors.toml", "on_suspend", "did you mean 'on_suspended'?")],
    ),
    "unknown-nested-key": Case(
        {
            "keys/a.pem": pem(ed25519.Ed25519PrivateKey.generate()),
            "dealers/a.toml": dealer_toml("a", domain="a.test", extra=DKIM_ED + "slector = 1\n"),
        },
        [("dealers/a.toml", "dkim[0].slector", "did you mean 'selector'?")],
    ),
    "unknown-key-in-defaults": Case(
        {"defaults.toml": defaults_toml() + "[throttle]\nwindow = '7d'\n"},
        [("defaults.toml", "throttle", "unknown key")],
    ),
    "warn-rate-above-suspend-rate": Case(
        {
            "dealers/good-motors.toml": dealer_toml(
                "good-motors", extra="[complaints]\nwarn_rate = 0.003\n"
            )
        },
        [("dealers/good-motors.toml", "complaints.warn_rate", "the warning must come first")],
    ),
    "unknown-key-in-suppression": Case(
        {
            "dealers/good-motors.toml": dealer_toml(
                "good-motors", extra='[suppression]\non_rcp = "drop"\n'
            )
        },
        [("dealers/good-motors.toml", "suppression.on_rcp", "unknown key")],
    ),
    "unknown-check-option": Case(
        {
            "dealers/good-motors.toml": dealer_toml(
                "good-motors", extra='[checks]\nmultiple-from = { acton = "hold" }\n'
            )
        },
        [
            (
                "dealers/good-motors.toml",
                "checks.multiple-from.acton",
                "unknown option (did you mean 'action'?); multiple-from takes no options",
            )
        ],
    ),
    "option-wrong-type": Case(
        {
            "dealers/good-motors.toml": dealer_toml(
                "good-motors",
                extra='[checks]\nduplicate-message = { window = "soon" }\n'
                'frequency-cap = { per_day = "5", per_week = 2.5 }\n'
                "near-duplicate-message = { threshold = true }\n"
                'broken-html = { min_severity = "serious" }\n',
            ),
        },
        [
            ("dealers/good-motors.toml", "checks.duplicate-message.window", "not a duration"),
            ("dealers/good-motors.toml", "checks.frequency-cap.per_day", "whole number"),
            ("dealers/good-motors.toml", "checks.frequency-cap.per_week", "whole number"),
            ("dealers/good-motors.toml", "checks.near-duplicate-message.threshold", "a number"),
            (
                "dealers/good-motors.toml",
                "checks.broken-html.min_severity",
                "must be one of 'minor', 'major', 'critical'",
            ),
        ],
    ),
    "option-out-of-range": Case(
        {
            "dealers/good-motors.toml": dealer_toml(
                "good-motors",
                extra="[checks]\nnear-duplicate-message = { threshold = 1.5 }\n"
                "frequency-cap = { per_day = -1 }\n"
                'duplicate-message = { window = "0s", ignore_pattern = "(" }\n'
                "dangerous-attachment = { max_entries = 0 }\n",
            ),
        },
        [
            (
                "dealers/good-motors.toml",
                "checks.near-duplicate-message.threshold",
                "must be at most 1",
            ),
            ("dealers/good-motors.toml", "checks.frequency-cap.per_day", "must be at least 0"),
            (
                "dealers/good-motors.toml",
                "checks.duplicate-message.window",
                "must be at least 1s",
            ),
            (
                "dealers/good-motors.toml",
                "checks.duplicate-message.ignore_pattern",
                "not a valid regular expression",
            ),
            (
                "dealers/good-motors.toml",
                "checks.dangerous-attachment.max_entries",
                "must be at least 1",
            ),
        ],
    ),
    "duration-not-a-string": Case(
        {"defaults.toml": defaults_toml({"duplicate-message": "window = 3600"})},
        [("defaults.toml", "checks.duplicate-message.window", "a duration in quotes")],
    ),
    "unknown-option-in-defaults": Case(
        {"defaults.toml": defaults_toml({"gmail-clipping": "max_byte = 5"})},
        [
            (
                "defaults.toml",
                "checks.gmail-clipping.max_byte",
                "unknown option (did you mean 'max_bytes'?); gmail-clipping takes max_bytes",
            )
        ],
    ),
    "option-not-scalar": Case(
        {"defaults.toml": defaults_toml({"gmail-clipping": "max_bytes = [1, 2]"})},
        [("defaults.toml", "checks.gmail-clipping.max_bytes", "string, number or boolean")],
    ),
    "overlapping-from-domains": Case(
        {"dealers/other-motors.toml": dealer_toml("other-motors", domain="good-motors.test")},
        [
            (
                "dealers/other-motors.toml",
                "from_domains[0]",
                "already belongs to dealer 'good-motors'",
            )
        ],
    ),
    "domain-listed-twice": Case(
        {
            "dealers/good-motors.toml": dealer_toml("good-motors").replace(
                '["good-motors.test"]', '["good-motors.test", "good-motors.test"]'
            )
        },
        [("dealers/good-motors.toml", "from_domains[1]", "listed twice")],
    ),
    "duplicate-auth-user": Case(
        {"dealers/other-motors.toml": dealer_toml("other-motors", user="good-motors-crm")},
        [("dealers/other-motors.toml", "auth_users[0]", "one dealer only")],
    ),
    "stem-mismatch": Case(
        {"dealers/other.toml": dealer_toml("other-motors")},
        [("dealers/other.toml", "dealer_id", "does not match the file name 'other.toml'")],
    ),
    "unknown-check-code": Case(
        {
            "dealers/good-motors.toml": dealer_toml(
                "good-motors", extra='[checks]\nmultiple-form = { action = "hold" }\n'
            )
        },
        [("dealers/good-motors.toml", "checks.multiple-form", "did you mean 'multiple-from'?")],
    ),
    "bad-action": Case(
        {
            "dealers/good-motors.toml": dealer_toml(
                "good-motors", extra='[checks]\nmultiple-from = { action = "bounce" }\n'
            )
        },
        [("dealers/good-motors.toml", "checks.multiple-from.action", "accept|tag|repair|hold")],
    ),
    "bad-toml": Case(
        {"dealers/good-motors.toml": dealer_toml("good-motors") + "name = \n"},
        [("dealers/good-motors.toml", "line 6", "invalid TOML")],
    ),
    "missing-defaults": Case({"defaults.toml": None}, [("defaults.toml", "", "file not found")]),
    "defaults-missing-a-code": Case(
        {"defaults.toml": defaults_toml(skip="multiple-from")},
        [("defaults.toml", "checks.multiple-from", "needs a default action")],
    ),
    "defaults-entry-without-action": Case(
        {
            "defaults.toml": defaults_toml().replace('multiple-from = { action = "reject" }', "")
            + "[checks.multiple-from]\n"
        },
        [("defaults.toml", "checks.multiple-from.action", "required key is missing")],
    ),
    "missing-preset": Case(
        {"dealers/good-motors.toml": dealer_toml("good-motors", extra='preset = "lenient"\n')},
        [("dealers/good-motors.toml", "preset", "no preset named 'lenient'")],
    ),
    "preset-cannot-set-identity": Case(
        {
            "presets/p.toml": 'auth_users = ["x"]\n',
            "dealers/good-motors.toml": dealer_toml("good-motors", extra='preset = "p"\n'),
        },
        [("presets/p.toml", "auth_users", "unknown key")],
    ),
    "upper-case-domain": Case(
        {"dealers/good-motors.toml": dealer_toml("good-motors", domain="Good-Motors.test")},
        [
            ("dealers/good-motors.toml", "from_domains[0]", "lower case"),
        ],
    ),
    "string-for-number": Case(
        {"dealers/good-motors.toml": dealer_toml("good-motors", extra='max_recipients = "50"\n')},
        [("dealers/good-motors.toml", "max_recipients", "valid integer")],
    ),
    "missing-required-keys": Case(
        {"dealers/good-motors.toml": 'dealer_id = "good-motors"\n'},
        [
            ("dealers/good-motors.toml", "name", "required key is missing"),
            ("dealers/good-motors.toml", "auth_users", "required key is missing"),
            ("dealers/good-motors.toml", "from_domains", "required key is missing"),
        ],
    ),
    "dkim-key-missing": Case(
        {"dealers/a.toml": dealer_toml("a", domain="a.test", extra=DKIM_RSA)},
        [("dealers/a.toml", "dkim[0].key_file", "does not exist")],
    ),
    "dkim-key-not-pem": Case(
        {
            "keys/a.pem": "hello\n",
            "dealers/a.toml": dealer_toml("a", domain="a.test", extra=DKIM_RSA),
        },
        [("dealers/a.toml", "dkim[0].key_file", "not a PEM private key")],
    ),
    "dkim-key-wrong-algorithm": Case(
        {
            "keys/a.pem": pem(ed25519.Ed25519PrivateKey.generate()),
            "dealers/a.toml": dealer_toml("a", domain="a.test", extra=DKIM_RSA),
        },
        [("dealers/a.toml", "dkim[0].key_file", "not an RSA key")],
    ),
    "dkim-key-unsupported-type": Case(
        {
            "keys/a.pem": pem(ec.generate_private_key(ec.SECP256R1())),
            "dealers/a.toml": dealer_toml("a", domain="a.test", extra=DKIM_ED),
        },
        [("dealers/a.toml", "dkim[0].key_file", "not an Ed25519 key")],
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_problems(make_dir: MakeDir, case: Case) -> None:
    root = make_dir(case.tree)
    found = problems_of(root)
    assert [(rel(p, root), p.key) for p in found] == [(f, k) for f, k, _ in case.expected]
    for problem, (_, _, fragment) in zip(found, case.expected, strict=True):
        assert fragment in problem.message, str(problem)


def test_every_problem_of_a_file_is_listed(make_dir: MakeDir) -> None:
    root = make_dir(sample="several-problems")
    found = {p.key: p.message for p in problems_of(root)}
    assert {rel(p, root) for p in problems_of(root)} == {"dealers/rough-motors.toml"}
    assert found.keys() == {
        "dealer_id",
        "auth_users[0]",
        "from_domains[0]",
        "from_domains[1]",
        "contacts[0]",
        "null_sender",
        "max_recipients",
        "colour",
        "checks.multiple-form",
        "checks.missing-from.action",
        "dkim[0].key_file",
        "dkim[0].flavour",
    }
    assert "did you mean 'multiple-from'?" in found["checks.multiple-form"]
    assert "does not exist" in found["dkim[0].key_file"]


def test_problems_across_files_are_all_listed(make_dir: MakeDir) -> None:
    root = make_dir(
        {
            "dealers/a.toml": dealer_toml("a", extra="oops = 1\n"),
            "dealers/b.toml": "[unterminated\n",
            "dealers/c.toml": dealer_toml("c", user="good-motors-crm"),
            "defaults.toml": defaults_toml(skip="missing-from"),
        }
    )
    assert sorted((rel(p, root), p.key) for p in problems_of(root)) == [
        ("dealers/a.toml", "oops"),
        ("dealers/b.toml", "line 1"),
        # Files are read in name order: the later one is named as holding the duplicate.
        ("dealers/good-motors.toml", "auth_users[0]"),
        ("defaults.toml", "checks.missing-from"),
    ]
