"""DKIM key material and key rotation: new keys, their DNS records, and policy-file edits.

Keys are PEM files (PKCS#8, unencrypted, mode 0600) under ``<policies>/keys/``, named
``<domain>.<selector>.pem``, and referenced from the dealer's policy file by ``[[dkim]]``
entries. The public half is published as a TXT record at ``<selector>._domainkey.<domain>``
(RFC 6376 §3.6.1; Ed25519 keys per RFC 8463 §4.2).

Rotation is expressed in the dealer's policy file, so that it is reviewed, versioned and
validated like every other policy change. ``start_rotation`` gives the old entry a
``retire_at`` time and adds an entry for the new selector right after it; until that
time both sign, from then on only the new one does (the signer compares ``retire_at``
with the clock, no further edit needed). ``finish_rotation`` then removes the retired
entries from the file. The edits work on the text, keeping the operator's comments and
layout, and are checked by parsing the result again.
"""

from __future__ import annotations

import base64
import os
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from gateway.errors import GatewayError

__all__ = [
    "KEYS_DIR",
    "KeyType",
    "NewIdentity",
    "PolicyEditError",
    "PrivateKey",
    "add_identity",
    "algorithm_for",
    "dns_name",
    "finish_rotation",
    "generate_key",
    "key_file_name",
    "next_selector",
    "public_record",
    "start_rotation",
    "toml_datetime",
    "txt_strings",
    "write_private_key",
    "zone_line",
]

KEYS_DIR = "keys"
RSA_BITS = 2048  # RFC 8301 §3.2: signers use at least 1024 bits; 2048 is what verifiers expect
KeyType = Literal["rsa", "ed25519"]
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

_TABLE_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")
_DKIM_HEADER = re.compile(r"^\s*\[\[?\s*dkim\s*\]\]?\s*(#.*)?$")
_SELECTOR_DIGITS = re.compile(r"^(.*?)(\d+)$")


class PolicyEditError(GatewayError):
    """A policy file cannot be edited safely; the message says what to do by hand."""


# --- keys and records ---


def generate_key(kind: KeyType) -> PrivateKey:
    """A new private key: RSA-2048 (e = 65537) or Ed25519."""
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


def algorithm_for(kind: KeyType) -> Literal["rsa-sha256", "ed25519-sha256"]:
    """The ``a=`` value (and policy ``algorithm``) for a key type."""
    return "ed25519-sha256" if kind == "ed25519" else "rsa-sha256"


def key_file_name(domain: str, selector: str) -> str:
    """The key's path relative to the policies directory."""
    return f"{KEYS_DIR}/{domain}.{selector}.pem"


def write_private_key(path: Path, key: PrivateKey) -> None:
    """Write ``key`` as PEM to a new file readable by its owner only.

    Creates the parent directory (mode 0700) if needed. Raises ``FileExistsError``
    rather than replace a key, which may still be signing or published.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: never truncate an existing key; the mode is set at creation, so the key is
    # never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)


def public_record(key: PrivateKey) -> str:
    """The DKIM key record (the TXT data) for ``key``'s public half."""
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        # RFC 8463 §4.2: p= is the raw 32-byte public key, not a SubjectPublicKeyInfo.
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode('ascii')}"
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"


def dns_name(selector: str, domain: str) -> str:
    """Where the key record is published (RFC 6376 §3.6.2.1)."""
    return f"{selector}._domainkey.{domain}"


def txt_strings(record: str, size: int = 255) -> list[str]:
    """``record`` split into TXT character-strings of at most ``size`` octets.

    RFC 1035 §3.3 limits each string to 255 octets; an RSA-2048 record is longer, and
    RFC 6376 §3.6.2.2 has verifiers concatenate the strings without separators.
    """
    return [record[i : i + size] for i in range(0, len(record), size)] or [""]


def zone_line(selector: str, domain: str, record: str, ttl: int = 3600) -> str:
    """A zone-file line publishing ``record`` (BIND syntax, strings split at 255)."""
    strings = " ".join(f'"{s}"' for s in txt_strings(record))
    return f"{dns_name(selector, domain)}. {ttl} IN TXT ( {strings} )"


def next_selector(current: str, taken: set[str]) -> str:
    """The selector after ``current``: its trailing number plus one (``mg1`` -> ``mg2``).

    A selector without a trailing number gets ``2`` appended. Selectors in ``taken``
    are skipped, so a selector is never reused for a different key.
    """
    match = _SELECTOR_DIGITS.match(current)
    stem, number = (match.group(1), int(match.group(2))) if match else (current, 1)
    width = len(match.group(2)) if match else 1
    while True:
        number += 1
        candidate = f"{stem}{number:0{width}d}"
        if candidate not in taken:
            return candidate


def toml_datetime(when: datetime) -> str:
    """``when`` as a TOML offset date-time in UTC, to the second."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- policy-file edits ---


@dataclass(frozen=True, slots=True)
class NewIdentity:
    """A ``[[dkim]]`` entry to add to a dealer's policy file."""

    domain: str
    selector: str
    key_file: str
    algorithm: Literal["rsa-sha256", "ed25519-sha256"]

    def toml(self) -> str:
        """The entry as a TOML array-of-tables element."""
        lines = [
            "[[dkim]]",
            f'domain = "{self.domain}"',
            f'selector = "{self.selector}"',
            f'key_file = "{self.key_file}"',
        ]
        if self.algorithm != "rsa-sha256":
            lines.append(f'algorithm = "{self.algorithm}"')
        return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class _Block:
    start: int  # index of the header line
    end: int  # one past the last line that belongs to the entry
    last_key: int  # index of the last key = value line


def _dkim_entries(text: str) -> list[dict[str, object]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyEditError(f"the file is not valid TOML: {exc}") from None
    value = data.get("dkim", [])
    entries = [value] if isinstance(value, dict) else value
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise PolicyEditError("dkim must be a table or an array of tables")
    return entries


def _blocks(lines: list[str]) -> list[_Block]:
    """The ``[dkim]``/``[[dkim]]`` sections, in file order."""
    blocks: list[_Block] = []
    index = 0
    while index < len(lines):
        if not _DKIM_HEADER.match(lines[index]):
            index += 1
            continue
        start = index
        index += 1
        last_key = start
        while index < len(lines) and not _TABLE_HEADER.match(lines[index]):
            stripped = lines[index].strip()
            if stripped and not stripped.startswith("#"):
                last_key = index
            index += 1
        # Comments and blank lines after the last key introduce whatever comes next.
        blocks.append(_Block(start, last_key + 1, last_key))
    return blocks


def _located(text: str) -> tuple[list[str], list[_Block], list[dict[str, object]]]:
    entries = _dkim_entries(text)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    blocks = _blocks(lines)
    if len(blocks) != len(entries):
        raise PolicyEditError(
            "the dkim entries are not all written as [dkim] or [[dkim]] sections "
            "(inline tables cannot be edited); rewrite them as [[dkim]] sections"
        )
    return lines, blocks, entries


def _as_array(lines: list[str], blocks: list[_Block]) -> None:
    for block in blocks:
        header = lines[block.start]
        if "[[" not in header:
            lines[block.start] = header.replace("[", "[[", 1).replace("]", "]]", 1)


def add_identity(text: str, entry: NewIdentity) -> str:
    """Return the policy file ``text`` with ``entry`` added after its last dkim entry."""
    lines, blocks, _entries = _located(text)
    _as_array(lines, blocks)
    new = entry.toml()
    if blocks:
        lines.insert(blocks[-1].end, "\n" + new)
    else:
        tail = "" if not lines or lines[-1].strip() == "" else "\n"
        lines.append(tail + new)
    result = "".join(lines)
    if not any(e.get("selector") == entry.selector for e in _dkim_entries(result)):
        raise PolicyEditError("the new entry did not parse back; add it by hand")
    return result


def start_rotation(text: str, old_selector: str, retire_at: datetime, new: NewIdentity) -> str:
    """Return ``text`` with ``old_selector`` retiring at ``retire_at`` and ``new`` after it.

    Until ``retire_at`` both sign; from then on only ``new`` does.

    Raises ``PolicyEditError`` if there is no such entry, it is already retiring, or the
    file's layout cannot be edited safely.
    """
    lines, blocks, entries = _located(text)
    matches = [i for i, e in enumerate(entries) if e.get("selector") == old_selector]
    if len(matches) != 1:
        raise PolicyEditError(f"expected one dkim entry with selector {old_selector!r}")
    index = matches[0]
    retiring = entries[index].get("retire_at")
    if retiring is not None:
        raise PolicyEditError(f"selector {old_selector!r} is already retiring ({retiring})")
    _as_array(lines, blocks)
    block = blocks[index]
    lines.insert(block.end, "\n" + new.toml())
    lines.insert(
        block.last_key + 1,
        f"retire_at = {toml_datetime(retire_at)}  # rotated out: signs until then\n",
    )
    result = "".join(lines)
    parsed = {str(e.get("selector")): e for e in _dkim_entries(result)}
    if new.selector not in parsed or "retire_at" not in parsed.get(old_selector, {}):
        raise PolicyEditError("the edited file did not parse back as expected; edit by hand")
    return result


def finish_rotation(text: str, now: datetime) -> tuple[str, list[dict[str, object]]]:
    """Remove the entries whose ``retire_at`` has passed; return the text and the removed.

    Entries still in their transition are kept. The comments just above a removed
    section go with it only if they are part of it (after its header).
    """
    lines, blocks, entries = _located(text)
    removed: list[dict[str, object]] = []
    for block, entry in reversed(list(zip(blocks, entries, strict=True))):
        retire_at = entry.get("retire_at")
        if isinstance(retire_at, datetime) and retire_at <= now:
            end = block.end
            # Take one separating blank line with it, so the file does not accumulate gaps.
            if end < len(lines) and lines[end].strip() == "":
                end += 1
            del lines[block.start : end]
            removed.append(entry)
    removed.reverse()
    return "".join(lines), removed
