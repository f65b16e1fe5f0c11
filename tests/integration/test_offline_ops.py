"""The offline commands run the admin API's operations: same records, same rules.

``mailgate suppress`` and ``mailgate held`` work on the store of a gateway that may be
running; what they write and what they refuse must be what ``/api/suppressions`` and
``/api/held`` write and refuse.
"""

from __future__ import annotations

import asyncio
import getpass
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.types import DealerId, MessageState
from tests.integration.admin import add_token, call, store_message
from tests.integration.conftest import Harness

DEALER = DealerId("example-motors")


@pytest.fixture
def config(harness: Harness, tmp_path: Path) -> Path:
    """Settings for the CLI naming the running gateway's store and policies."""
    settings = harness.gateway.settings
    path = tmp_path / "cli.toml"
    path.write_text(
        f'[server]\ndata_dir = "{settings.server.data_dir}"\n'
        f'policies_dir = "{settings.server.policies_dir}"\n'
        f'[storage]\nurl = "{settings.storage_url}"\n'
    )
    return path


def mailgate(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


async def test_suppressions_record_admin_and_who_offline_as_through_the_api(
    harness: Harness, config: Path
) -> None:
    gw = harness.gateway
    token = add_token(gw, "ops")
    through_api = await call(
        gw, "POST", "/api/suppressions", token=token,
        body={"list": DEALER, "addresses": ["api@x.example"], "reason": "asked by phone"},
    )  # fmt: skip
    assert through_api.status == 200
    code = await asyncio.to_thread(mailgate, config, "suppress", "add", "cli@x.example",
                                   "--dealer", DEALER, "--reason", "asked by phone",
                                   "--by", "alice")  # fmt: skip
    assert code == 0
    code = await asyncio.to_thread(mailgate, config, "suppress", "add", "login@x.example",
                                   "--dealer", DEALER, "--reason", "asked by phone")  # fmt: skip
    assert code == 0

    now = gw.clock.now()
    sources = {}
    for address in ("api@x.example", "cli@x.example", "login@x.example"):
        entry = await gw.storage.find_suppression(DEALER, address, now)
        assert entry is not None, address
        sources[address] = entry.source
    # admin:<who acted>: the token's name through the API, --by or the login name offline
    assert sources == {
        "api@x.example": "admin:ops",
        "cli@x.example": "admin:alice",
        "login@x.example": f"admin:{getpass.getuser()}",
    }
    # and the running gateway refuses the address suppressed offline at once
    client = await harness.client()
    try:
        assert (await client.cmd("MAIL FROM:<sales@example-motors.test>")).code == 250
        assert (await client.cmd("RCPT TO:<cli@x.example>")).code == 550
    finally:
        await client.close()


async def test_offline_held_delete_needs_a_reason_as_the_api_does(
    harness: Harness, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = harness.gateway
    held = await store_message(
        gw, "offline.held.1", MessageState.HELD, findings=("stray-attachment",)
    )
    token = add_token(gw, "ops")
    assert (await call(gw, "DELETE", f"/api/held/{held}", token=token, body={})).status == 400

    refused = await asyncio.to_thread(mailgate, config, "held", "delete", held)
    assert refused == 2 and "--reason" in capsys.readouterr().err
    code = await asyncio.to_thread(mailgate, config, "held", "delete", held, "--reason", "   ")
    assert code == 2 and "needs a reason" in capsys.readouterr().err
    assert await gw.storage.get(held) is not None  # refused means nothing was deleted

    code = await asyncio.to_thread(mailgate, config, "held", "delete", held,
                                   "--reason", "malware sample", "--by", "alice")  # fmt: skip
    assert code == 0 and f"{held}: deleted" in capsys.readouterr().out
    assert await gw.storage.get(held) is None
