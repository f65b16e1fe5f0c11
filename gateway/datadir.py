"""Files created once per data directory and read ever after (I/O).

This module owns the tracking key (``gateway.tracking``): 32 random bytes in a file
readable only by the gateway's user; and the node id, which names this node in delivery
leases and survives restarts, so a restarted node can take back what it held. Creation is
atomic and never overwrites: the content is written to a temporary file, flushed, then
hard-linked into place, so concurrent starts agree and a crash never leaves a short file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from gateway.errors import ConfigError

KEY_BYTES = 32


def load_or_create_key(path: Path) -> bytes:
    """Return the key stored at ``path``, creating a new random one (mode 0600) if missing."""
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    _create_once(path, secrets.token_bytes(KEY_BYTES))
    return _read(path)


def load_or_create_node_id(path: Path, prefix: str) -> str:
    """Return the node id stored at ``path``, creating ``<prefix>-<random>`` if missing."""
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    _create_once(path, f"{prefix}-{secrets.token_hex(6)}\n".encode("ascii"))
    return path.read_text(encoding="ascii").strip()


def _create_once(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process created it first
            os.link(temp, path)
        _fsync_dir(path.parent)
    finally:
        temp.unlink(missing_ok=True)


def _read(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{path}: tracking key must be {KEY_BYTES} bytes, found {len(key)}")
    return key


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
