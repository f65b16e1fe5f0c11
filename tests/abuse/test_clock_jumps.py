"""F17 and F18: the wall clock of a running gateway process jumps forward and back.

The gateway runs under libfaketime with its offset read from a file the test rewrites,
as an NTP step or an operator's `date -s` would move it. Only the wall clock moves
(``DONT_FAKE_MONOTONIC``): that is what a real step does, and the point of the test
is that the gateway keeps the two apart. Retry times and message age are wall-clock
facts stored in the queue; SMTP deadlines run on the monotonic clock (asyncio's
``call_later``), so a jump must neither expire mail that was never tried after it nor
cut off an idle session, and a step back must not leave deferred mail waiting a day.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from tests.integration.conftest import PASSWORD
from tests.procs import GatewayProcess, free_port, node_config, procs, send, set_password, wait_for
from tests.sinks import Sink
from tests.smtpclient import RawSmtp

__all__ = ["procs"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SENDER = "sales@example-motors.test"


def find_libfaketime() -> Path | None:
    """The multithreaded libfaketime where Debian (any architecture) or a source build puts it."""
    candidates = [
        *sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1")),
        Path("/usr/lib/faketime/libfaketimeMT.so.1"),
        Path("/usr/local/lib/faketime/libfaketimeMT.so.1"),
    ]
    return next((path for path in candidates if path.exists()), None)


LIBFAKETIME = find_libfaketime()


@pytest.fixture(autouse=True)
def needs_libfaketime() -> None:
    """Skipped where libfaketime is missing; in CI (``CI`` set) that is a failure instead."""
    if LIBFAKETIME is not None:
        return
    message = "libfaketime is not installed (Debian package faketime; .ci/run installs it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def faketime(offset_file: Path) -> list[str]:
    """The command prefix that runs the gateway with a wall clock shifted by the file."""
    assert LIBFAKETIME is not None  # needs_libfaketime skipped or failed the test otherwise
    offset_file.write_text("+0\n")
    return [
        "env",
        f"LD_PRELOAD={LIBFAKETIME}",
        f"FAKETIME_TIMESTAMP_FILE={offset_file}",
        "FAKETIME_CACHE_DURATION=1",  # re-read the offset every second
        "DONT_FAKE_MONOTONIC=1",
    ]


def rows(db: Path) -> dict[str, tuple[str, int, str]]:
    with sqlite3.connect(db) as conn:
        found = conn.execute("SELECT rcpt, state, attempts, last_error FROM messages")
        return {rcpt: (state, attempts, error) for rcpt, state, attempts, error in found}


async def started_node(
    tmp_path: Path, procs: list[GatewayProcess], sink_port: int, offset: Path
) -> tuple[GatewayProcess, Path]:
    db = tmp_path / "node" / "mailgate.db"
    # A first retry an hour away: before the jump nothing is retried; after it, only the
    # jump can have made the mail due.
    node = node_config(tmp_path, "node", sink_port, f"sqlite:///{db}", first_retry="1h")
    procs.append(node)
    await set_password(node)
    await node.start(prefix=faketime(offset))
    return node, db


async def test_f17_forward_jump_tries_again_before_expiring_and_keeps_sessions(
    tmp_path: Path, procs: list[GatewayProcess]
) -> None:
    sink_port = free_port()  # the upstream is down until the jump
    offset = tmp_path / "offset"
    node, db = await started_node(tmp_path, procs, sink_port, offset)
    idle = await RawSmtp.connect("127.0.0.1", node.port)
    await idle.login("example-crm", PASSWORD)
    for rcpt in ("good@example.org", "stuck@example.org"):
        assert (await send(node.port, rcpt, f"before the jump to {rcpt}")).startswith("250 ")
    await wait_for(
        lambda: all(r[1] == 1 for r in rows(db).values()) and len(rows(db)) == 2,
        15, "one failed attempt each", node,
    )  # fmt: skip

    sink = Sink()
    sink.handler.rcpt_always["stuck@example.org"] = "451 4.4.1 still unreachable"
    await sink.start(sink_port)
    try:
        offset.write_text("+6d\n")  # past delivery.max_age (5 days)
        await wait_for(lambda: rows(db)["stuck@example.org"][0] == "failed", 20, "expiry", node)
        await wait_for(lambda: len(sink.messages) >= 2, 20, "delivery and the DSN", node)
        # The SMTP idle timer is monotonic: six days of wall clock did not end the session.
        assert (await idle.cmd("NOOP")).code == 250
        await idle.close()
    finally:
        node.terminate()
        await sink.stop()
    after = rows(db)
    # Delivered by the attempt the jump made due, not expired for its new age.
    assert after["good@example.org"][:2] == ("delivered", 2)
    # Expired only after one more attempt, made after the jump (RFC 5321 §4.5.4.1: give up
    # after a period, having tried).
    state, attempts, error = after["stuck@example.org"]
    assert (state, attempts) == ("failed", 2)
    assert error.startswith("554 5.4.7 delivery time expired") and "451 4.4.1" in error
    delivered = sorted(r for m in sink.messages for r in m.rcpt_tos)
    assert delivered == ["good@example.org", SENDER]  # the message, and the DSN for stuck@


async def test_f18_backward_jump_does_not_starve_deferred_mail(
    tmp_path: Path, procs: list[GatewayProcess]
) -> None:
    sink_port = free_port()
    offset = tmp_path / "offset"
    node, db = await started_node(tmp_path, procs, sink_port, offset)
    assert (await send(node.port, "later@example.org", "before the step back")).startswith("250 ")
    await wait_for(lambda: rows(db).get("later@example.org", ("", 0, ""))[1] == 1, 15,
                   "one failed attempt", node)  # fmt: skip
    sink = await Sink().start(sink_port)
    try:
        offset.write_text("-1d\n")
        # Retry was due an hour after the attempt by the old clock: a day and an hour by
        # the new one. The worker notices the step and brings it back within the maximum
        # retry interval, here at once.
        await wait_for(lambda: len(sink.messages) >= 1, 30, "delivery after the step back", node)
    finally:
        node.terminate()
        await sink.stop()
    assert rows(db)["later@example.org"][:2] == ("delivered", 2)
    assert "clock stepped back" in node.output()
