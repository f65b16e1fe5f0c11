"""Inspection end to end: the unknown1.txt incident is repaired; a dangerous file is held."""

from __future__ import annotations

import asyncio
import email
import email.policy
from pathlib import Path

import pytest

from gateway.cli import main as cli
from gateway.types import MessageState
from tests.integration.conftest import Harness, dot_stuff

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "messages" / "inspection"


async def submit(h: Harness, data: bytes, rcpt: str = "customer@example.org") -> str:
    client = await h.client()
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        assert (await client.cmd(f"RCPT TO:<{rcpt}>")).code == 250
        return str(await client.data(dot_stuff(data)))
    finally:
        await client.close()


def run_cli(config: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["--config", str(config), *args])
    return code, capsys.readouterr().out


async def test_unknown1_txt_arrives_repaired(harness: Harness) -> None:
    raw = (SAMPLES / "unknown1-html.eml").read_bytes()
    reply = await submit(harness, raw)
    assert reply.startswith("250 "), reply
    await harness.wait_delivered(1)
    got = email.message_from_bytes(harness.sink.messages[0].data, policy=email.policy.default)
    assert got.get_content_type() == "multipart/alternative"
    kinds = [part.get_content_type() for part in got.iter_parts()]
    assert kinds == ["text/plain", "text/html"]
    html = got.get_body(("html",))
    assert html is not None and "Your test drive of the Civic" in html.get_content()
    assert not list(got.iter_attachments())
    assert "unknown1.txt" not in harness.sink.messages[0].data.decode()
    assert got["Subject"] == "Your test drive"


async def test_dangerous_attachment_is_held_then_released(
    harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mailgate.toml"
    config.write_text(f'[storage]\nurl = "{harness.gateway.settings.storage_url}"\n')
    reply = await submit(harness, (SAMPLES / "double-extension.eml").read_bytes())
    assert reply.startswith("250 "), reply  # kept, not lost: the CRM is told it is taken
    (held,) = await harness.gateway.storage.list_messages(state=MessageState.HELD)
    assert held.findings == ("dangerous-attachment",)
    assert "invoice.pdf.exe" in held.note
    await asyncio.sleep(0.3)
    assert harness.sink.messages == []

    code, out = await asyncio.to_thread(run_cli, config, "held", "list", capsys=capsys)
    assert code == 0 and held.id in out and "dangerous-attachment" in out
    code, out = await asyncio.to_thread(run_cli, config, "held", "show", held.id, capsys=capsys)
    assert code == 0 and "invoice.pdf.exe" in out and "fix:" in out

    code, out = await asyncio.to_thread(run_cli, config, "held", "release", held.id, capsys=capsys)
    assert code == 0 and "released" in out
    harness.gateway.worker.notify()
    await harness.wait_delivered(1)
    assert b"invoice.pdf.exe" in harness.sink.messages[0].data
    # Released means no longer held: a second release or delete is refused.
    code, _ = await asyncio.to_thread(
        run_cli, config, "held", "delete", held.id, "--reason", "test", capsys=capsys
    )
    assert code == 1


async def test_held_delete_and_expire(
    harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mailgate.toml"
    config.write_text(f'[storage]\nurl = "{harness.gateway.settings.storage_url}"\n')
    for n, name in enumerate(("macro-office.eml", "zip-with-exe.eml")):
        raw = (SAMPLES / name).read_bytes()
        # Distinct recipients: the duplicate and frequency checks are not under test here.
        assert (await submit(harness, raw, f"customer{n}@example.org")).startswith("250 ")
    first, _second = await harness.gateway.storage.list_messages(state=MessageState.HELD)
    code, out = await asyncio.to_thread(
        run_cli, config, "held", "delete", first.id, "--reason", "macro malware", capsys=capsys
    )
    assert code == 0 and "deleted" in out
    code, out = await asyncio.to_thread(run_cli, config, "held", "expire", capsys=capsys)
    assert "expired 0" in out  # not old enough
    code, out = await asyncio.to_thread(
        run_cli, config, "held", "expire", "--older-than", "0s", capsys=capsys
    )
    assert "expired 1" in out
    assert await harness.gateway.storage.list_messages(state=MessageState.HELD) == []
