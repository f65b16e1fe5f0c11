"""The data directory's own files: its lock, and what is created once and read ever after (I/O).

``DataDirLock`` makes one process the owner of a data directory: two ``mailgate serve`` on one
directory would read the same node id and take each other's delivery leases for their own
(a restarted node releases the leases its id held), which sends in-flight mail twice. The lock
is an ``flock`` on ``mailgate.lock`` inside the directory, so the kernel releases it when the
owner dies, however it dies; the file names the owner's pid for the refusal.

This module also owns the tracking key (``gateway.tracking``): 32 random bytes in a file
readable only by the gateway's user; and the node id, which names this node in delivery
leases and survives restarts, so a restarted node can take back what it held. Creation is
atomic and never overwrites: the content is written to a temporary file, flushed, then
hard-linked into place, so concurrent starts agree and a crash never leaves a short file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from pathlib import Path

from gateway.errors import ConfigError, DataDirInUse

KEY_BYTES = 32
LOCK_FILE = "mailgate.lock"
ORPHAN_WAIT = 5.0  # seconds a dead owner's exiting workers may still hold the lock


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return True  # cannot tell: assume the owner lives
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DataDirLock:
    """An exclusive, non-blocking lock on a data directory, held until ``release()``."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``DataDirInUse`` naming the process that holds it.

        When the process named in the file is gone but the lock is still held, its worker
        processes (gateway/cli/supervisor.py), which the kernel kills with it, are still
        exiting: wait for them a moment instead of refusing.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + ORPHAN_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                if not _alive(holder) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
            os.close(fd)
            raise DataDirInUse(
                f"data directory {self.path.parent} is in use by another mailgate process "
                f"(pid {holder}); stop it first, or give this one its own server.data_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (idempotent); the file stays, empty of meaning until re-taken."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


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
