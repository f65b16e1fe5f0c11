"""Which durable spool? Measures the two designs the spine allows, in one run.

(a) spool files: write a temporary file, fsync it, rename it into place, fsync the
    directory, then commit an index row (SQLite, synchronous=FULL) — Postfix's shape;
(b) the message inside the database transaction (SqliteStorage.enqueue), with and without
    group commit.

Each design is driven by ``--concurrency`` concurrent writers storing ``--messages`` messages
of ``--size`` bytes, and durable on return. Usage::

    .venv/bin/python bench/spool_choice.py --messages 2000 --concurrency 20 --size 10240
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.storage.sqlite import SqliteStorage
from gateway.types import DealerId, MessageId, NewMessage


class FileSpool:
    """Spool files plus a SQLite index row per message, as a file-spool MTA would do."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        (directory / "tmp").mkdir(parents=True)
        (directory / "new").mkdir()
        self.db = sqlite3.connect(directory / "index.db", check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE q (id TEXT PRIMARY KEY, path TEXT)")
        self.lock = threading.Lock()
        self.dir_fd = os.open(directory / "new", os.O_RDONLY)

    def store(self, message_id: str, data: bytes) -> None:
        tmp = self.dir / "tmp" / message_id
        final = self.dir / "new" / message_id
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        os.fsync(self.dir_fd)
        with self.lock:
            self.db.execute("INSERT INTO q VALUES (?, ?)", (message_id, str(final)))
            self.db.commit()


async def run_files(messages: int, concurrency: int, data: bytes) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        spool = FileSpool(Path(tmp))
        latencies: list[float] = []
        counter = iter(range(messages))

        async def writer() -> None:
            for n in counter:
                start = time.perf_counter()
                await asyncio.to_thread(spool.store, f"m{n}", data)
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(writer() for _ in range(concurrency)))
        return latencies


async def run_db(messages: int, concurrency: int, data: bytes, group: bool) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = await SqliteStorage.open(str(Path(tmp) / "q.db"), group_commit=group)
        latencies: list[float] = []
        counter = iter(range(messages))
        now = datetime.now(UTC)

        async def writer() -> None:
            for n in counter:
                message = NewMessage(
                    id=MessageId(f"m{n}"), dealer_id=DealerId("d"), mail_from="a@b.test",
                    rcpt="c@d.test", data=data, received_at=now,
                )  # fmt: skip
                start = time.perf_counter()
                await store.enqueue([message])
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(writer() for _ in range(concurrency)))
        await store.close()
        return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--size", type=int, default=10240)
    args = parser.parse_args()
    data = b"x" * args.size
    print(f"{args.messages} messages x {args.size} B, {args.concurrency} concurrent writers\n")
    print("| design | stored/s | p50 ms | p99 ms |\n|---|---:|---:|---:|")
    designs = (
        ("spool file + fsync + rename + dir fsync + index commit",
         lambda: run_files(args.messages, args.concurrency, data)),
        ("message in SQLite transaction, group commit (chosen)",
         lambda: run_db(args.messages, args.concurrency, data, True)),
        ("message in SQLite transaction, one commit each",
         lambda: run_db(args.messages, args.concurrency, data, False)),
    )  # fmt: skip
    for name, run in designs:
        start = time.perf_counter()
        latencies = await run()
        elapsed = time.perf_counter() - start
        q = statistics.quantiles(latencies, n=100)
        print(f"| {name} | {len(latencies) / elapsed:,.0f} | {q[49] * 1000:.1f} | "
              f"{q[98] * 1000:.1f} |")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
