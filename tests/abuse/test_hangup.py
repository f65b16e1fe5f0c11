"""A CRM that hangs up while its replies are pending: the session ends quietly.

The G5 load run (tests/load/test_memory_load.py) once saw reply writes to a TLS
connection the client had just closed raise inside asyncio and log tracebacks; these
cases keep the two ways a client can leave replies behind covered in the fast suite.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.abuse.conftest import SENDER, MakeHarness, Recorder, check_invariants
from tests.load.common import body


async def test_client_gone_before_the_reply_to_dot_leaves_no_traceback(
    make_harness: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    h = await make_harness(submission={"max_message_size": "10MB"})
    rec = Recorder(h)
    client = await rec.connect()
    assert (await client.cmd(f"MAIL FROM:<{SENDER}>")).code == 250
    assert (await client.cmd("RCPT TO:<gone@example.org>")).code == 250
    assert (await client.cmd("DATA")).code == 354
    # A few MB take the gateway a second or so to check and store: long enough to be gone.
    await client.send(body("gone@example.org", "hung up", 3_000_000))
    client.writer.close()
    with caplog.at_level(logging.INFO):
        await asyncio.sleep(3.0)
        await check_invariants(h, rec)
    crashes = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert crashes == [], [r.getMessage() for r in crashes]


async def test_client_gone_with_commands_still_unread_leaves_no_traceback(
    make_harness: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    h = await make_harness()
    rec = Recorder(h)
    client = await rec.connect()
    # Commands already in the gateway's buffer when the connection drops: each reply has
    # nowhere to go.
    await client.send(b"RSET\r\n" * 50)
    client.writer.close()
    with caplog.at_level(logging.INFO):
        await asyncio.sleep(1.0)
        await check_invariants(h, rec)
    crashes = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert crashes == [], [r.getMessage() for r in crashes]
