"""``mailgate feedback import``, ``mailgate suppress …`` and ``mailgate dealers …``."""

from __future__ import annotations

import asyncio
import mailbox
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.datadir import load_or_create_key
from gateway.reputation.records import DealerState
from gateway.storage.sqlite import SqliteStorage
from gateway.tracking import RefCodec, message_id_for, new_submission_id
from gateway.types import DealerId, MessageState, NewMessage
from tests.feedback_reports import arf
from tests.integration.conftest import message, policies_dir
from tests.procs import write_config

DEALER = DealerId("example-motors")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    data = tmp_path / "var"
    return write_config(
        tmp_path / "mailgate.toml",
        {
            "server": {
                "hostname": "mailgate.test",
                "data_dir": str(data),
                "policies_dir": str(policies_dir(tmp_path)),
            },
        },
    )


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


async def store_of(tmp_path: Path) -> SqliteStorage:
    return await SqliteStorage.open(str(tmp_path / "var" / "mailgate.db"))


def test_suppress_add_list_remove_export_import(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, "suppress", "add", "A@x.example", "b@x.example", "--dealer", DEALER,
               "--reason", "asked by phone") == 0  # fmt: skip
    assert run(config, "suppress", "add", "g@x.example", "--global", "--reason", "legal") == 0
    assert run(config, "suppress", "add", "c@x.example", "--reason", "r") == 2  # no list named
    capsys.readouterr()
    assert run(config, "suppress", "list") == 0
    listed = capsys.readouterr().out
    assert "a@x.example" in listed and "g@x.example" in listed and "asked by phone" in listed
    assert run(config, "suppress", "remove", "a@x.example", "--dealer", DEALER,
               "--reason", "customer opted in again", "--by", "ops") == 0  # fmt: skip
    capsys.readouterr()
    assert run(config, "suppress", "list", "--dealer", DEALER) == 0
    assert "a@x.example" not in capsys.readouterr().out
    out = tmp_path / "export.csv"
    assert run(config, "suppress", "export", str(out), "--all") == 0
    exported = out.read_text()
    assert exported.splitlines()[0].startswith("list,address,reason")
    assert "customer opted in again" in exported and "ops" in exported

    rows = tmp_path / "import.csv"
    rows.write_text("address,reason\nnew1@x.example,old list\nnot an address,x\nb@x.example,\n")
    capsys.readouterr()
    assert run(config, "suppress", "import", str(rows), "--dealer", DEALER) == 0
    summary = capsys.readouterr().out
    assert "1 added, 1 already suppressed, 1 not addresses" in summary
    rows.write_text("address,resaon\nnew2@x.example,x\n")  # a misspelt column is refused
    assert run(config, "suppress", "import", str(rows), "--dealer", DEALER) == 2
    assert "unknown column 'resaon' (did you mean 'reason'?)" in capsys.readouterr().err
    rows.write_text("address,reason\nnew3@x.example,spam, by phone\n")  # an unquoted comma
    assert run(config, "suppress", "import", str(rows), "--dealer", DEALER) == 0
    out, err = capsys.readouterr()
    assert "import.csv:2: a value in column 3, which has no name" in err
    assert "0 added, 0 already suppressed, 1 not addresses" in out


def test_dealers_suspend_status_resume(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, "dealers", "suspend", DEALER, "--reason", "spam run", "--for", "24h",
               "--by", "ops") == 0  # fmt: skip
    assert run(config, "dealers", "suspend", DEALER, "--reason", "again") == 1
    capsys.readouterr()
    assert run(config, "dealers", "status") == 0
    assert "suspended" in capsys.readouterr().out
    assert run(config, "dealers", "resume", DEALER, "--reason", "cleaned up") == 0
    assert run(config, "dealers", "status", DEALER) == 0
    history = capsys.readouterr().out
    assert "active -> suspended  by admin (ops): spam run" in history
    assert "suspended -> resumed" in history

    async def check() -> None:
        store = await store_of(tmp_path)
        try:
            status = await store.get_dealer_status(DEALER)
            assert status is not None and status.state is DealerState.RESUMED
            # The alerts were queued as system messages for the running gateway to send.
            queued = await store.list_messages(state=MessageState.QUEUED)
            assert {m.rcpt for m in queued} == {"gm@example-motors.test"}
            assert all(m.system for m in queued) and len(queued) == 2
        finally:
            await store.close()

    asyncio.run(check())


def test_feedback_import_mbox_and_maildir_is_idempotent(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = RefCodec(load_or_create_key(tmp_path / "var" / "ref.key"))
    now = datetime.now(UTC)
    submission = new_submission_id(now)
    originals = []
    for n, rcpt in enumerate(("one@x.example", "two@x.example"), start=1):
        mid = message_id_for(submission, n)
        header = f"X-Mailgate-Ref: {refs.header_value(mid, DEALER, rcpt)}\r\n"
        data = message(to=rcpt, extra=header)
        originals.append(NewMessage(mid, DEALER, "s@example-motors.test", rcpt, data, now))

    async def seed() -> None:
        store = await store_of(tmp_path)
        try:
            await store.enqueue(originals)
        finally:
            await store.close()

    asyncio.run(seed())
    box = mailbox.mbox(tmp_path / "fbl.mbox")
    box.add(arf(originals[0].data, originals[0].rcpt, report_id="m1"))
    box.add(message(subject="Out of office"))
    box.flush()
    maildir = mailbox.Maildir(tmp_path / "Maildir")
    maildir.add(arf(originals[1].data, originals[1].rcpt, report_id="m2"))
    capsys.readouterr()
    assert run(config, "feedback", "import", str(tmp_path / "fbl.mbox"),
               str(tmp_path / "Maildir")) == 0  # fmt: skip
    first = capsys.readouterr().out
    assert "3 messages read" in first and "2 recorded complaint" in first
    assert run(config, "feedback", "import", str(tmp_path / "fbl.mbox"),
               str(tmp_path / "Maildir")) == 0  # fmt: skip
    again = capsys.readouterr().out
    assert "recorded" not in again and "2 ignored (replay)" in again

    async def check() -> None:
        store = await store_of(tmp_path)
        try:
            for original in originals:
                assert await store.find_suppression(DEALER, original.rcpt, now) is not None
            rows = await store.daily_counts(DEALER, now.date(), now.date())
            assert rows[0].counts.complaints == 2
        finally:
            await store.close()

    asyncio.run(check())
