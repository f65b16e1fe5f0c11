"""``mailgate init``: create the data directory and the store, as ``serve`` would at start.

The only command besides ``serve`` that creates a store (``gateway/cli/store.py``): for
setting logins and suppressions up before the first start, or for a PostgreSQL database
that a deployment migrates ahead of its nodes. Running it again changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from gateway.cli import store
from gateway.cli.common import EXIT_OK, config_path, settings_for
from gateway.storage.base import open_storage, sqlite_path


def cmd_init(args: argparse.Namespace) -> int:
    """Create (or migrate) the store the settings name."""
    settings = settings_for(args)
    config = config_path(args)
    url = settings.storage_url

    async def run() -> bool:
        existed = await store.exists(url)
        if sqlite_path(url) is not None:
            settings.server.data_dir.mkdir(parents=True, exist_ok=True)
        storage = await open_storage(url)
        await storage.close()
        return existed

    existed = asyncio.run(run())
    where = store.describe(url)
    if args.json:
        data = {
            "store": where,
            "created": not existed,
            "data_dir": str(settings.server.data_dir.absolute()),
            "config": str(config) if config is not None else None,
        }
        print(json.dumps(data, indent=2))
    elif existed:
        print(f"{where} already holds Mailgate data; it is up to date")
    else:
        read = f"settings from {config}" if config is not None else "built-in settings"
        print(f"created the store {where} ({read})")
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``init`` to the ``mailgate`` subcommands."""
    p = subparsers.add_parser(
        "init", help="create the data directory and the store (serve also does at start)"
    )
    p.add_argument("--json", action="store_true", help="print what was done as JSON")
    p.set_defaults(func=cmd_init)
