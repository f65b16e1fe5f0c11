"""A fast SMTP sink for the benchmark: counts messages and bytes and discards the content.

Run as its own process::

    python bench/sink.py --listen 127.0.0.1:2600 --status /tmp/sink.json

Every 200 ms (when something changed) it replaces ``--status`` with a JSON object::

    {"pid": ..., "count": messages, "bytes": content bytes, "recipients": ...,
     "unique": distinct Message-IDs, "duplicates": ..., "last": monotonic time of the last
     message, "first": monotonic time of the first message}

``last``/``first`` come from ``time.monotonic()``, which on Linux is one clock for every
process on the machine, so the driver can compare them with its own timestamps. A message
whose Message-ID was seen before counts as a duplicate (the relay delivered it twice).
With ``--keep N --keep-dir DIR`` the first N messages are also written to DIR (one file
each), so that the driver can verify their DKIM signatures after the run. The sink stops
on SIGTERM/SIGINT, or by itself after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

_MESSAGE_ID = re.compile(rb"(?im)^message-id:[ \t]*(<[^>\r\n]*>)")


class Counter:
    """The sink's handler: counts what arrives and keeps nothing but Message-IDs."""

    def __init__(self, keep: int = 0, keep_dir: Path | None = None) -> None:
        self.keep = keep if keep_dir is not None else 0
        self.keep_dir = keep_dir
        self.count = 0
        self.bytes = 0
        self.recipients = 0
        self.duplicates = 0
        self.no_message_id = 0
        self.first = 0.0
        self.last = 0.0
        self._seen: set[bytes] = set()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Count the message and answer 250."""
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        now = time.monotonic()
        if not self.count:
            self.first = now
        self.count += 1
        self.last = now
        self.bytes += len(content)
        if self.count <= self.keep and self.keep_dir is not None:
            (self.keep_dir / f"{self.count:06d}.eml").write_bytes(content)
        self.recipients += len(envelope.rcpt_tos)
        # The Message-ID is among the headers; look only there.
        head_end = content.find(b"\r\n\r\n")
        match = _MESSAGE_ID.search(content, 0, head_end if head_end >= 0 else len(content))
        if match is None:
            self.no_message_id += 1
        elif match.group(1) in self._seen:
            self.duplicates += 1
        else:
            self._seen.add(match.group(1))
        return "250 2.0.0 OK"

    def snapshot(self) -> dict[str, Any]:
        """The status written to the status file."""
        return {
            "pid": os.getpid(),
            "count": self.count,
            "bytes": self.bytes,
            "recipients": self.recipients,
            "unique": len(self._seen),
            "duplicates": self.duplicates,
            "no_message_id": self.no_message_id,
            "first": self.first,
            "last": self.last,
        }


def write_status(path: Path, status: dict[str, Any]) -> None:
    """Replace ``path`` atomically with ``status`` as JSON."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(status), encoding="utf-8")
    os.replace(tmp, path)


async def serve(
    host: str,
    port: int,
    status_path: Path,
    max_seconds: float,
    keep: int = 0,
    keep_dir: Path | None = None,
) -> None:
    """Serve until a signal or ``max_seconds``, writing the status every 200 ms."""
    if keep_dir is not None:
        keep_dir.mkdir(parents=True, exist_ok=True)
    counter = Counter(keep, keep_dir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            counter,
            hostname="sink.bench.test",
            ident="bench sink",
            decode_data=False,
            enable_SMTPUTF8=False,
            data_size_limit=100 * 1024 * 1024,
            timeout=300,
        ),
        host=host,
        port=port,
        reuse_address=True,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    deadline = loop.time() + max_seconds
    written: dict[str, Any] = {}
    try:
        while not stop.is_set() and loop.time() < deadline:
            status = counter.snapshot()
            if status != written:
                write_status(status_path, status)
                written = status
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
    finally:
        server.close()
        write_status(status_path, counter.snapshot())


def main() -> None:
    """Parse arguments and run the sink."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--listen", required=True, help="host:port (loopback)")
    parser.add_argument("--status", type=Path, required=True, help="JSON status file")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="stop after this")
    parser.add_argument("--keep", type=int, default=0, help="write the first N messages ...")
    parser.add_argument("--keep-dir", type=Path, help="... to this directory")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    # aiosmtpd logs every session at INFO; the benchmark wants none of that.
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    asyncio.run(serve(host, int(port), args.status, args.max_seconds, args.keep, args.keep_dir))


if __name__ == "__main__":
    main()
