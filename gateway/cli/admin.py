"""``mailgate admin …``: the runtime operations, as a thin client of the admin API.

Everything here but ``admin token create`` talks to a running gateway over HTTP
(``gateway/cli/client.py``), so the change is made by the process that owns the state,
logged with the token's name, and seen by every node at once. Output is a table for
people, or the API's JSON with ``--json`` for scripts. Long operations (imports, exports,
releasing many messages) draw a progress bar on a terminal.

Exit codes (``gateway/cli/common.py``): 0 done; 1 refused or not found (the message says
why); 2 usage error; 3 the gateway is unreachable or its store unavailable (retry); 4 no
token or a wrong one.

When no gateway is running, ``mailgate dealers``, ``suppress``, ``held`` and ``queue ls``
run the same operations on the store (``gateway/cli/offline.py``) and print the same way
(``gateway/cli/render.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gateway.admin.tokens import create_token
from gateway.cli import render
from gateway.cli.client import ApiClient, ApiError, base_url, read_token
from gateway.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, Progress, settings_for
from gateway.cli.dealers import NOTE_HELP, REASON_HELP
from gateway.cli.suppress import BATCH, read_rows
from gateway.mail.addresslists import CsvFormatError


def _client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(base_url(settings_for(args), args.api), read_token(args.token_file))


def _out(args: argparse.Namespace, data: Any, human: Callable[[Any], str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(human(data))


def _run(work: Callable[[argparse.Namespace, ApiClient], int]) -> Callable[..., int]:
    def command(args: argparse.Namespace) -> int:
        try:
            return work(args, _client(args))
        except ApiError as exc:
            print(f"mailgate: {exc}", file=sys.stderr)
            return exc.exit_code

    command.__doc__ = work.__doc__
    return command


# -- token (local) -----------------------------------------------------------------------


def cmd_token_create(args: argparse.Namespace) -> int:
    """Create an admin API token; it is printed once and stored only as a hash."""
    path: Path = args.file or settings_for(args).admin_token_file
    token = create_token(path, args.name)
    print(f"token {args.name!r} added to {path} (the gateway reads it at the next request).")
    print("It is shown only now; keep it in a secret store:")
    print(token)
    print("\nUse it with: export MAILGATE_ADMIN_TOKEN=<token>", file=sys.stderr)
    return EXIT_OK


# -- health and policies -----------------------------------------------------------------


def _health(args: argparse.Namespace, api: ApiClient) -> int:
    """Whether the gateway is healthy."""
    data = api.call("GET", "/api/health")
    _out(args, data, render.health)
    return EXIT_OK if data["ok"] else EXIT_FAIL


def _reload(args: argparse.Namespace, api: ApiClient) -> int:
    """Validate the policy directory on the gateway and apply it if all of it is valid."""
    data = api.call("POST", "/api/policies/reload", ok=(422,))
    _out(args, data, render.reload)
    return EXIT_OK if data["ok"] else EXIT_FAIL


# -- dealers -----------------------------------------------------------------------------


def _dealers(args: argparse.Namespace, api: ApiClient) -> int:
    """Every dealer's state and rates."""
    _out(args, api.call("GET", "/api/dealers"), lambda d: render.dealers(d["dealers"]))
    return EXIT_OK


def _dealer(args: argparse.Namespace, api: ApiClient) -> int:
    """One dealer: state, why, rates against thresholds, history."""
    _out(args, api.call("GET", f"/api/dealers/{_seg(args.dealer)}"), render.dealer)
    return EXIT_OK


def _suspend(args: argparse.Namespace, api: ApiClient) -> int:
    """Suspend a dealer."""
    body: dict[str, Any] = {"reason": args.reason, "by": args.by or "", "note": args.note}
    if args.duration:
        body["for"] = args.duration
    data = api.call("POST", f"/api/dealers/{_seg(args.dealer)}/suspend", body=body)
    _out(args, data, render.change)
    return EXIT_OK


def _resume(args: argparse.Namespace, api: ApiClient) -> int:
    """Resume a dealer."""
    body = {"reason": args.reason, "by": args.by or "", "note": args.note}
    data = api.call("POST", f"/api/dealers/{_seg(args.dealer)}/resume", body=body)
    _out(args, data, render.change)
    return EXIT_OK


def _events(args: argparse.Namespace, api: ApiClient) -> int:
    """A dealer's complaints, bounces and transitions."""
    data = api.call(
        "GET",
        f"/api/dealers/{_seg(args.dealer)}/events",
        query={"kind": args.kind, "since": args.since, "limit": args.limit},
    )
    _out(args, data, render.events)
    return EXIT_OK


def _link(args: argparse.Namespace, api: ApiClient) -> int:
    """The dealer's status-page link."""
    _out(args, api.call("GET", f"/api/dealers/{_seg(args.dealer)}/status-link"), lambda d: d["url"])
    return EXIT_OK


# -- suppressions ------------------------------------------------------------------------


def _search(args: argparse.Namespace, api: ApiClient) -> int:
    """Search suppression entries."""
    query = {"list": args.list, "q": args.query, "all": args.all, "limit": args.limit}
    data = api.call("GET", "/api/suppressions", query=query)
    _out(args, data, lambda d: render.entries(d["entries"]))
    return EXIT_OK


def _add(args: argparse.Namespace, api: ApiClient) -> int:
    """Suppress addresses on one list."""
    body = {"list": args.list, "addresses": args.addresses, "reason": args.reason,
            "by": args.by or ""}  # fmt: skip
    data = api.call("POST", "/api/suppressions", body=body)
    _out(args, data, lambda d: render.outcomes(d["results"]))
    return EXIT_USAGE if any(r["result"] == "invalid" for r in data["results"]) else EXIT_OK


def _remove(args: argparse.Namespace, api: ApiClient) -> int:
    """Lift a suppression."""
    body = {"list": args.list, "address": args.address, "reason": args.reason,
            "by": args.by or ""}  # fmt: skip
    data = api.call("DELETE", "/api/suppressions", body=body)
    _out(args, data, lambda d: f"lifted {d['address']} ({d['list']})")
    return EXIT_OK


def _import(args: argparse.Namespace, api: ApiClient) -> int:
    """Import a CSV file into one list, in batches, with a progress bar."""
    path = Path(args.file)
    try:
        rows, unreadable = read_rows(path)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"mailgate: cannot read {path}: {getattr(exc, 'strerror', None) or exc}",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    except CsvFormatError as exc:
        print(f"mailgate: {path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    progress = Progress(f"importing {path.name}", len(rows))
    totals = {"added": 0, "skipped": 0, "invalid": unreadable}
    for start in range(0, len(rows), BATCH):
        chunk = rows[start : start + BATCH]
        body = {
            "list": args.list,
            "reason": args.reason,
            "source": path.name,
            "entries": [{"address": a, "reason": r} for a, r in chunk],
        }
        result = api.call("POST", "/api/suppressions/import", body=body)
        for key in totals:
            totals[key] += int(result[key])
        progress.advance(len(chunk))
    progress.finish()
    _out(args, totals, lambda d: render.imported(d, args.list))
    return EXIT_OK


def _export(args: argparse.Namespace, api: ApiClient) -> int:
    """Export entries as CSV to a file or stdout."""
    query = {"list": args.list, "all": args.all}
    to_file = args.file not in (None, "-")
    out = open(args.file, "wb") if to_file else sys.stdout.buffer  # noqa: SIM115
    progress = Progress("exporting", None) if to_file else None
    try:
        for chunk in api.stream("/api/suppressions/export", query):
            out.write(chunk)
            if progress is not None:
                progress.advance(chunk.count(b"\n"))
    finally:
        if to_file:
            out.close()
        else:
            out.flush()
    if progress is not None:
        progress.finish()
        print(f"wrote {max(progress.done - 1, 0)} entries to {args.file}", file=sys.stderr)
    return EXIT_OK


# -- held and queue ----------------------------------------------------------------------


def _list_messages(args: argparse.Namespace, api: ApiClient) -> int:
    """List held or stored messages."""
    if args.what == "held":
        data = api.call("GET", "/api/held", query={"dealer": args.dealer, "limit": args.limit})
    else:
        query = {"state": args.state, "dealer": args.dealer, "limit": args.limit}
        data = api.call("GET", "/api/queue", query=query)
    _out(args, data, lambda d: render.messages(d["messages"]))
    return EXIT_OK


def _show_message(args: argparse.Namespace, api: ApiClient) -> int:
    """Show one message."""
    base = "/api/held" if args.what == "held" else "/api/queue"
    _out(args, api.call("GET", f"{base}/{_seg(args.id)}"), render.message)
    return EXIT_OK


def _each(args: argparse.Namespace, api: ApiClient, label: str,
          send: Callable[[str], dict[str, Any]]) -> int:  # fmt: skip
    progress = Progress(label, len(args.ids)) if len(args.ids) > 1 else None
    results: list[dict[str, Any]] = []
    failed = 0
    for message_id in args.ids:
        try:
            results.append({"id": message_id, "ok": True, "result": send(message_id)})
        except ApiError as exc:
            if exc.exit_code >= 3:
                raise  # the gateway is unreachable or refuses us: stop now
            failed += 1
            results.append({"id": message_id, "ok": False, "error": str(exc)})
            if not args.json:
                print(f"{message_id}: {exc}", file=sys.stderr)
        if progress is not None:
            progress.advance()
    if progress is not None:
        progress.finish()
    if args.json:
        print(json.dumps({"results": results}, indent=2))
    else:
        for r in results:
            if r["ok"]:
                print(f"{r['id']}: {label}")
    return EXIT_FAIL if failed else EXIT_OK


def _release(args: argparse.Namespace, api: ApiClient) -> int:
    """Release held messages (deliver now)."""
    return _each(args, api, "released",
                 lambda i: api.call("POST", f"/api/held/{_seg(i)}/release"))  # fmt: skip


def _retry(args: argparse.Namespace, api: ApiClient) -> int:
    """Retry queued or failed messages now."""
    return _each(args, api, "due now",
                 lambda i: api.call("POST", f"/api/queue/{_seg(i)}/retry"))  # fmt: skip


def _delete(args: argparse.Namespace, api: ApiClient) -> int:
    """Delete held or stored messages with a reason."""
    base = "/api/held" if args.what == "held" else "/api/queue"
    body = {"reason": args.reason, "by": args.by or ""}
    return _each(args, api, "deleted",
                 lambda i: api.call("DELETE", f"{base}/{_seg(i)}", body=body))  # fmt: skip


def _seg(value: str) -> str:
    """One URL path segment."""
    return quote(value, safe="")


# -- argparse ----------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add ``admin`` and its subcommands to the ``mailgate`` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api", help="API base URL (default MAILGATE_API_URL or http.listen)")
    common.add_argument("--token-file", type=Path, help="file holding the token "
                        "(default MAILGATE_ADMIN_TOKEN, MAILGATE_ADMIN_TOKEN_FILE)")  # fmt: skip
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    admin = subparsers.add_parser(
        "admin",
        help="runtime operations through the gateway's admin API",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    sub = admin.add_subparsers(dest="admin_command", required=True)

    tokens = sub.add_parser("token", help="API tokens (local)").add_subparsers(
        dest="token_command", required=True
    )
    p = tokens.add_parser(
        "create", help="create a token; printed once, stored hashed", parents=[common]
    )
    p.add_argument("--name", default="admin", help="a name for the logs (default admin)")
    p.add_argument("--file", type=Path, help="token file (default http.admin_token_file)")
    p.set_defaults(func=cmd_token_create)

    p = sub.add_parser(
        "health", help="store, spool and queue of the running gateway", parents=[common]
    )
    p.set_defaults(func=_run(_health))
    p = sub.add_parser("reload", help="validate and apply the policy directory", parents=[common])
    p.set_defaults(func=_run(_reload))

    p = sub.add_parser("dealers", help="every dealer's state and rates", parents=[common])
    p.set_defaults(func=_run(_dealers))
    p = sub.add_parser("dealer", help="one dealer: state, why, rates, history", parents=[common])
    p.add_argument("dealer")
    p.set_defaults(func=_run(_dealer))
    p = sub.add_parser(
        "suspend", help="suspend a dealer (refuse mail, hold its queue)", parents=[common]
    )
    p.add_argument("dealer")
    p.add_argument("--reason", required=True, help=REASON_HELP)
    p.add_argument("--note", default="", help=NOTE_HELP)
    p.add_argument("--for", dest="duration", help="ends by itself after e.g. 72h")
    p.add_argument("--by", help="who (default: the token's name)")
    p.set_defaults(func=_run(_suspend))
    p = sub.add_parser("resume", help="end a dealer's suspension", parents=[common])
    p.add_argument("dealer")
    p.add_argument("--reason", required=True, help=REASON_HELP)
    p.add_argument("--note", default="", help=NOTE_HELP)
    p.add_argument("--by", help="who (default: the token's name)")
    p.set_defaults(func=_run(_resume))
    p = sub.add_parser(
        "events", help="a dealer's complaints, bounces and transitions", parents=[common]
    )
    p.add_argument("dealer")
    p.add_argument("--kind", choices=["complaint", "unsubscribe", "hard-bounce", "soft-bounce"])
    p.add_argument("--since", help="ISO time (default 30 days ago)")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=_run(_events))
    p = sub.add_parser("status-link", help="the dealer's status-page link", parents=[common])
    p.add_argument("dealer")
    p.set_defaults(func=_run(_link))

    sup = sub.add_parser("suppressions", help="suppression lists").add_subparsers(
        dest="suppressions_command", required=True
    )
    list_help = "a dealer id, or '*' for the global list"
    p = sup.add_parser("search", help="entries (all lists unless --list)", parents=[common])
    p.add_argument("--list", help=list_help)
    p.add_argument("--query", "-q", help="addresses containing this")
    p.add_argument("--all", action="store_true", help="lifted and expired entries too")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=_run(_search))
    p = sup.add_parser("add", help="suppress addresses", parents=[common])
    p.add_argument("addresses", nargs="+", metavar="ADDRESS")
    p.add_argument("--list", required=True, help=list_help)
    p.add_argument("--reason", required=True)
    p.add_argument("--by")
    p.set_defaults(func=_run(_add))
    p = sup.add_parser(
        "remove", help="lift a suppression (recorded, not deleted)", parents=[common]
    )
    p.add_argument("address")
    p.add_argument("--list", required=True, help=list_help)
    p.add_argument("--reason", required=True)
    p.add_argument("--by")
    p.set_defaults(func=_run(_remove))
    p = sup.add_parser(
        "import", help="add every address of a CSV file (address[,reason])", parents=[common]
    )
    p.add_argument("file")
    p.add_argument("--list", required=True, help=list_help)
    p.add_argument("--reason", default="imported")
    p.set_defaults(func=_run(_import))
    p = sup.add_parser("export", help="entries as CSV (stdout or FILE)", parents=[common])
    p.add_argument("file", nargs="?")
    p.add_argument("--list", help=list_help)
    p.add_argument("--all", action="store_true")
    p.set_defaults(func=_run(_export))

    for what, helptext in (("held", "the hold queue"), ("queue", "stored messages")):
        group = sub.add_parser(what, help=helptext).add_subparsers(
            dest=f"{what}_command", required=True
        )
        p = group.add_parser("list", help="newest first", parents=[common])
        p.add_argument("--dealer")
        p.add_argument("--limit", type=int, default=100)
        if what == "queue":
            p.add_argument(
                "--state", choices=["queued", "held", "delivered", "failed", "quarantined"]
            )
        p.set_defaults(func=_run(_list_messages), what=what)
        p = group.add_parser("show", help="one message, its findings and header", parents=[common])
        p.add_argument("id")
        p.set_defaults(func=_run(_show_message), what=what)
        if what == "held":
            p = group.add_parser("release", help="deliver held messages now", parents=[common])
            p.add_argument("ids", nargs="+", metavar="ID")
            p.set_defaults(func=_run(_release), what=what)
        else:
            p = group.add_parser(
                "retry", help="try queued or failed messages again now", parents=[common]
            )
            p.add_argument("ids", nargs="+", metavar="ID")
            p.set_defaults(func=_run(_retry), what=what)
        p = group.add_parser(
            "delete", help="delete messages for good (with a reason)", parents=[common]
        )
        p.add_argument("ids", nargs="+", metavar="ID")
        p.add_argument("--reason", required=True)
        p.add_argument("--by")
        p.set_defaults(func=_run(_delete), what=what)
