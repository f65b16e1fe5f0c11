"""How the offline commands run: the admin API's own operations, on the store, no gateway needed.

``mailgate dealers``, ``suppress``, ``held`` and ``queue ls`` work when no gateway is
running (first setup, recovery, a node taken out). They do not redo what the API does: each
builds ``AdminOps`` over the store with ``gateway.app.offline_admin`` and calls the same
operation the API's handler calls, so the same checks apply (a reason where the API needs
one, the same list and dealer names), the same records are written (a suppression's source
is ``admin:<operator>``) and the same log lines say who acted. What they print is the
API's view of the result (``gateway/admin/views.py``) in the form ``mailgate admin``
prints it (``gateway/cli/render.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gateway.admin.ops import AdminError, AdminOps
from gateway.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    Progress,
    exit_code,
    settings_for,
)
from gateway.errors import StorageError
from gateway.logs import configure_logging


def run(args: argparse.Namespace, work: Callable[[AdminOps], Awaitable[int]]) -> int:
    """Run ``work`` on ``AdminOps`` over the store; an ``AdminError`` is printed and exits.

    The exit code of a refusal is the one ``mailgate admin`` gives for the same answer
    (1 not found or wrong state, 2 bad input, 3 the store is unavailable). A policy
    directory that does not load is left to ``main`` (exit 1, every problem listed).
    """
    # The composition root also builds the listeners; importing it here keeps the commands
    # that need none of it (check, feedback parse, dkim, --help) quick to start.
    from gateway.app import offline_admin

    settings = settings_for(args)
    # Deletions are logged at WARNING by the operations: show them, as the gateway would.
    configure_logging("warning", settings.server.log_format)

    async def main() -> int:
        try:
            async with offline_admin(settings) as ops:
                return await work(ops)
        except AdminError as exc:
            print(f"mailgate: {exc}", file=sys.stderr)
            return exit_code(exc.status)
        except StorageError as exc:
            print(f"mailgate: the store is unavailable ({exc}); retry", file=sys.stderr)
            return EXIT_UNAVAILABLE

    return asyncio.run(main())


async def each(ids: Sequence[str], label: str, act: Callable[[str], Awaitable[Any]]) -> int:
    """Apply ``act`` to every id, printing ``ID: label`` or why not; 1 if any was refused."""
    progress = Progress(label, len(ids)) if len(ids) > 1 else None
    failed = 0
    for message_id in ids:
        try:
            await act(message_id)
        except AdminError as exc:
            failed += 1
            print(f"{message_id}: {exc}", file=sys.stderr)
        else:
            print(f"{message_id}: {label}")
        if progress is not None:
            progress.advance()
    if progress is not None:
        progress.finish()
    return EXIT_FAIL if failed else EXIT_OK
