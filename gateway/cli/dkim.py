"""``mailgate dkim``: create a dealer's DKIM keys and rotate them.

``keygen`` writes a new private key under ``<policies>/keys/`` and prints the TXT record
to publish (and, with ``--add``, adds the ``[[dkim]]`` entry to the dealer's file).
``rotate`` starts a rotation: a key for the next selector, and the dealer's file edited so
that the old and the new key both sign until ``retire_at``; ``rotate --finish`` removes
the entries whose time has passed. Every edit is validated by loading the whole policy
directory; a failing edit is undone. The running gateway applies an edit on its next
policy reload (SIGHUP or ``POST /policies/reload``). These commands work on files only.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, settings_for
from gateway.clock import parse_duration
from gateway.dkim.keys import (
    KEYS_DIR,
    KeyType,
    NewIdentity,
    PolicyEditError,
    PrivateKey,
    add_identity,
    algorithm_for,
    dns_name,
    finish_rotation,
    generate_key,
    key_file_name,
    next_selector,
    public_record,
    start_rotation,
    toml_datetime,
    write_private_key,
    zone_line,
)
from gateway.errors import PolicyError
from gateway.policy.loader import DEALERS_DIR, load_policy_set
from gateway.policy.model import DealerPolicy, DkimSettings, PolicySet
from gateway.settings import Settings

__all__ = ["register"]
DEFAULT_SELECTOR = "mg1"
# The loader's rule for selectors: also safe in a file name and a DNS label.
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
RELOAD_HINT = "reload the policies (SIGHUP to `mailgate serve`, or POST /policies/reload)"


class _Refused(Exception):
    """The command cannot go on; the message is for the operator."""


def register(subparsers: Any) -> None:
    """Add ``dkim keygen`` and ``dkim rotate`` to the ``mailgate`` parser."""
    dkim = subparsers.add_parser("dkim", help="DKIM keys: create and rotate")
    commands = dkim.add_subparsers(dest="dkim_command", required=True)

    p = commands.add_parser("keygen", help="create a key and print its DNS record")
    _common(p)
    p.add_argument(
        "--selector", help=f"the selector (default {DEFAULT_SELECTOR}, or the next free)"
    )
    p.add_argument("--type", choices=["rsa", "ed25519"], default="rsa",
                   help="rsa (2048 bits, the default) or ed25519 (a second signature)")  # fmt: skip
    p.add_argument("--domain", help="signing domain (default: the dealer's only from_domain)")
    p.add_argument("--add", action="store_true",
                   help="also add the [[dkim]] entry to the dealer's policy file")  # fmt: skip
    p.set_defaults(func=cmd_keygen)

    p = commands.add_parser("rotate", help="start (or --finish) a key rotation")
    _common(p)
    p.add_argument("--selector", help="the selector to rotate out (default: the dealer's only one)")
    p.add_argument("--transition", default="72h",
                   help="how long old and new keys both sign (default 72h)")  # fmt: skip
    p.add_argument("--finish", action="store_true",
                   help="remove the entries whose transition has ended")  # fmt: skip
    p.set_defaults(func=cmd_rotate)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dealer", required=True, help="dealer id")
    p.add_argument("--policies", type=Path, help="policies directory (default: settings)")


# --- commands ---


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write a new key for a dealer and print what to publish."""
    try:
        _settings, directory, policies, dealer = _context(args)
        domain = _domain(args.domain, dealer)
        taken = _selectors(policies, domain) | _key_files(directory, domain)
        selector = args.selector or (
            DEFAULT_SELECTOR
            if DEFAULT_SELECTOR not in taken
            else next_selector(DEFAULT_SELECTOR, taken)
        )
        if not _SELECTOR.match(selector):
            raise _Refused(f"selector {selector!r}: use lower-case letters, digits and hyphens")
        if selector in taken:
            raise _Refused(f"selector {selector!r} is already used for {domain}")
        entry = NewIdentity(
            domain, selector, key_file_name(domain, selector), algorithm_for(args.type)
        )
        key_path = directory / entry.key_file
        key = generate_key(args.type)
        _write_key(key_path, key)
        print(f"wrote {key_path} ({_describe(args.type)}, mode 0600)")
        if args.add:
            _edit(directory, dealer, key_path, lambda text: add_identity(text, entry))
            print(f"added selector {selector!r} to {dealer.source}")
        print()
        _print_record(entry, public_record(key))
        if args.add:
            print(f"\nOnce the record resolves, {RELOAD_HINT}; signing starts then.")
        else:
            print(f"\nOnce the record resolves, add this to {dealer.source} and {RELOAD_HINT}:\n")
            print(entry.toml(), end="")
        return EXIT_OK
    except _Refused as exc:
        print(f"mailgate dkim keygen: {exc}", file=sys.stderr)
        return EXIT_FAIL


def cmd_rotate(args: argparse.Namespace) -> int:
    """Start a rotation, or finish the ones whose transition has ended."""
    try:
        settings, directory, policies, dealer = _context(args)
        if args.finish:
            return _finish(settings, directory, dealer)
        try:
            transition = parse_duration(args.transition)
        except ValueError as exc:
            print(f"mailgate dkim rotate: --transition: {exc}", file=sys.stderr)
            return EXIT_USAGE
        old = _rotated_out(args.selector, dealer)
        taken = _selectors(policies, old.domain) | _key_files(directory, old.domain)
        selector = next_selector(old.selector, taken)
        kind: KeyType = "ed25519" if old.algorithm == "ed25519-sha256" else "rsa"
        entry = NewIdentity(
            old.domain, selector, key_file_name(old.domain, selector), old.algorithm
        )
        retire_at = datetime.now(UTC) + transition
        key_path = directory / entry.key_file
        key = generate_key(kind)
        _write_key(key_path, key)
        _edit(
            directory,
            dealer,
            key_path,
            lambda text: start_rotation(text, old.selector, retire_at, entry),
        )
        keep_until = retire_at + settings.delivery.max_age
        print(f"wrote {key_path} ({_describe(kind)}, mode 0600)")
        print(f"{dealer.source}: {old.selector!r} retires at {toml_datetime(retire_at)}; "
              f"{selector!r} signs alongside it until then, alone afterwards.\n")  # fmt: skip
        _print_record(entry, public_record(key))
        print(
            f"\n1. Publish the record above.\n"
            f"2. Once it resolves, {RELOAD_HINT}.\n"
            f"3. After {toml_datetime(retire_at)}, run `mailgate dkim rotate --dealer "
            f"{dealer.dealer_id} --finish`.\n"
            f"4. Keep {dns_name(old.selector, old.domain)} published until "
            f"{toml_datetime(keep_until)} (mail signed before retirement may still be "
            f"queued for delivery.max_age), then remove it and {old.key_file}."
        )
        return EXIT_OK
    except _Refused as exc:
        print(f"mailgate dkim rotate: {exc}", file=sys.stderr)
        return EXIT_FAIL


def _finish(settings: Settings, directory: Path, dealer: DealerPolicy) -> int:
    now = datetime.now(UTC)
    pending = [d for d in dealer.dkim if d.retire_at is not None and d.retire_at > now]
    removed: list[dict[str, object]] = []

    def edit(text: str) -> str:
        new, gone = finish_rotation(text, now)
        removed.extend(gone)
        return new

    if any(d.retire_at is not None and d.retire_at <= now for d in dealer.dkim):
        _edit(directory, dealer, None, edit)
    for entry in removed:
        selector, domain = str(entry.get("selector")), str(entry.get("domain"))
        retired = entry.get("retire_at")
        keep = (retired + settings.delivery.max_age) if isinstance(retired, datetime) else now
        print(
            f"removed {selector!r} from {dealer.source}; {RELOAD_HINT}. "
            f"Remove {dns_name(selector, domain)} from DNS after {toml_datetime(keep)}, "
            f"then delete {entry.get('key_file')}."
        )
    for d in pending:
        assert d.retire_at is not None
        print(f"{d.selector!r} still signs until {toml_datetime(d.retire_at)}; run again then.")
    if not removed and not pending:
        print(f"no rotation in progress for {dealer.dealer_id}")
    return EXIT_OK if removed or not pending else EXIT_FAIL


# --- helpers ---


def _context(args: argparse.Namespace) -> tuple[Settings, Path, PolicySet, DealerPolicy]:
    settings = settings_for(args)
    directory: Path = args.policies or settings.server.policies_dir
    try:
        policies = load_policy_set(directory)
    except PolicyError as exc:
        raise _Refused(
            f"the policies in {directory} do not validate; fix them first:\n{exc}"
        ) from None
    dealer = policies.dealer(args.dealer)
    if dealer is None:
        raise _Refused(f"no dealer {args.dealer!r} in {directory}")
    return settings, directory, policies, dealer


def _domain(requested: str | None, dealer: DealerPolicy) -> str:
    if requested is not None:
        return requested.lower().rstrip(".")
    if len(dealer.from_domains) == 1:
        return next(iter(dealer.from_domains))
    choices = ", ".join(sorted(dealer.from_domains))
    raise _Refused(f"{dealer.dealer_id} sends from several domains ({choices}); pick --domain")


def _selectors(policies: PolicySet, domain: str) -> set[str]:
    return {d.selector for p in policies.dealers.values() for d in p.dkim if d.domain == domain}


def _key_files(directory: Path, domain: str) -> set[str]:
    # A key file left behind by an earlier rotation still names a selector that may be
    # published; never reuse it for a different key.
    prefix = f"{domain}."
    keys = directory / KEYS_DIR
    if not keys.is_dir():
        return set()
    return {p.name[len(prefix) : -4] for p in keys.glob(f"{domain}.*.pem")}


def _rotated_out(selector: str | None, dealer: DealerPolicy) -> DkimSettings:
    if selector is not None:
        found = [d for d in dealer.dkim if d.selector == selector]
        if not found:
            raise _Refused(f"{dealer.dealer_id} has no DKIM selector {selector!r}")
        return found[0]
    own = [d for d in dealer.dkim if d.retire_at is None and d.domain in dealer.from_domains]
    if len(own) == 1:
        return own[0]
    if not own:
        raise _Refused(f"{dealer.dealer_id} has no DKIM key to rotate; use `dkim keygen` first")
    names = ", ".join(f"{d.selector} ({d.domain}, {d.algorithm})" for d in own)
    raise _Refused(f"{dealer.dealer_id} signs with several keys ({names}); pick --selector")


def _write_key(path: Path, key: PrivateKey) -> None:
    try:
        write_private_key(path, key)
    except FileExistsError:
        raise _Refused(f"{path} already exists; a key file is never overwritten") from None


def _edit(
    directory: Path,
    dealer: DealerPolicy,
    new_key: Path | None,
    change: Callable[[str], str],
) -> None:
    """Apply ``change`` to the dealer's file, keep it only if the whole set validates."""
    path = directory / DEALERS_DIR / f"{dealer.dealer_id}.toml"
    original = path.read_text(encoding="utf-8")
    try:
        edited = change(original)
    except PolicyEditError as exc:
        _discard(new_key)
        raise _Refused(f"{path}: {exc}") from None
    _replace(path, edited)
    try:
        load_policy_set(directory)
    except PolicyError as exc:
        _replace(path, original)
        _discard(new_key)
        raise _Refused(f"the edited policies do not validate, nothing changed:\n{exc}") from None


def _replace(path: Path, text: str) -> None:
    # Readers (a reload in progress) see the old file or the new one, never half of it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _discard(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def _describe(kind: str) -> str:
    return "Ed25519" if kind == "ed25519" else "RSA-2048"


def _print_record(entry: NewIdentity, record: str) -> None:
    print(f"Publish this TXT record for {entry.domain}:")
    print(f"  name:  {dns_name(entry.selector, entry.domain)}")
    print(f"  value: {record}")
    print(f"  zone:  {zone_line(entry.selector, entry.domain, record)}")
