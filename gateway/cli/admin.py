"""``mailgate admin …``: the runtime operations, as a thin client of the admin API.

Everything here but ``admin token create`` talks to a running gateway over HTTP
(``gateway/cli/client.py``), so the change is made by the process that owns the state,
logged with the token's name, and seen by every node at once. Output is a table for
people, or the API's JSON with ``--json`` for scripts. Long operations (imports, exports,
releasing many messages) draw a progress bar on a terminal.

Exit codes: 0 done; 1 refused or not found (the message says why); 2 usage error; 3 the
gateway is unreachable or its store unavailable (retry); 4 no token or a wrong one.

The older ``mailgate dealers``, ``suppress`` and ``held`` commands work on the store
directly; they remain for when no gateway is running.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.addresslists import CsvFormatError, RowProblem
from gateway.cli.client import (
    EXIT_OK,
    EXIT_USAGE,
    ApiClient,
    ApiError,
    base_url,
    read_token,
)
from gateway.cli.reputation import Progress
from gateway.reputation.csvformat import suppression_rows
from gateway.settings import Settings, load_settings

BATCH = 1000


def _settings(args: argparse.Namespace) -> Settings:
    path: Path | None = args.config
    if path is None and Path("mailgate.toml").exists():
        path = Path("mailgate.toml")
    return load_settings(path)


def _client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(base_url(_settings(args), args.api), read_token(args.token_file))


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Left-aligned columns as wide as their widest cell; the last one is not padded."""
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        padded = [c.ljust(widths[i]) for i, c in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def _short(moment: str | None) -> str:
    return moment[:16].replace("T", " ") if moment else "-"


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
    from gateway.admin.tokens import create_token

    path: Path = args.file or _settings(args).admin_token_file
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

    def human(d: dict[str, Any]) -> str:
        queue = ", ".join(f"{k} {v}" for k, v in d["queue"].items() if v) or "empty"
        return (
            f"node:     {d['node']} ({'ok' if d['ok'] else 'NOT OK'})\n"
            f"storage:  {d['storage']}\nspool:    {'FULL' if d['spool_full'] else 'ok'}\n"
            f"dealers:  {d['dealers']}\nqueue:    {queue}\n"
            f"oldest:   {_short(d['oldest_queued_at'])}"
        )

    _out(args, data, human)
    return EXIT_OK if data["ok"] else 1


def _reload(args: argparse.Namespace, api: ApiClient) -> int:
    """Validate the policy directory on the gateway and apply it if all of it is valid."""
    data = api.call("POST", "/api/policies/reload", ok=(422,))

    def human(d: dict[str, Any]) -> str:
        if d["ok"]:
            return f"policies reloaded: {len(d['dealers'])} dealers"
        return (
            "policies NOT reloaded; the previous set stays in force. Fix these and retry "
            "(`mailgate policy check` shows the same):\n" + "\n".join(d["problems"])
        )

    _out(args, data, human)
    return EXIT_OK if data["ok"] else 1


# -- dealers -----------------------------------------------------------------------------


def _pct(rate: dict[str, Any]) -> str:
    return f"{rate['rate']:.3%} ({rate['events']}/{rate['volume']})"


def _dealers(args: argparse.Namespace, api: ApiClient) -> int:
    """Every dealer's state and rates."""
    data = api.call("GET", "/api/dealers")

    def human(d: dict[str, Any]) -> str:
        rows = [
            (x["id"], x["state"], _pct(x["rates"]["complaints"]),
             f"{x['rates']['complaints']['suspend_rate']:.2%}", _pct(x["rates"]["bounces"]),
             x["reason"])
            for x in d["dealers"]
        ]  # fmt: skip
        return table(rows, ("DEALER", "STATE", "COMPLAINTS", "SUSPEND AT", "BOUNCES", "REASON"))

    _out(args, data, human)
    return EXIT_OK


def _dealer(args: argparse.Namespace, api: ApiClient) -> int:
    """One dealer: state, why, rates against thresholds, history."""
    data = api.call("GET", f"/api/dealers/{_seg(args.dealer)}")

    def human(d: dict[str, Any]) -> str:
        lines = [
            f"dealer:   {d['id']} ({d['name']})",
            f"state:    {d['state']}" + (f" since {_short(d['since'])}" if d["since"] else ""),
        ]
        if d["reason"]:
            lines.append(f"why:      {d['reason']}")
        if d["expires_at"]:
            lines.append(f"until:    {_short(d['expires_at'])}")
        rows = [
            (name, _pct(r), f"{r['warn_rate']:.2%}", f"{r['suspend_rate']:.2%}", r["min_volume"],
             f"{r['since']}..{r['until']}", r["level"])
            for name, r in d["rates"].items()
        ]  # fmt: skip
        lines += ["", table(rows, ("RATE", "NOW", "WARN", "SUSPEND", "MIN", "WINDOW", "LEVEL"))]
        today = d["today"]
        lines.append(
            f"\ntoday:    sent {today['sent']}, delivered {today['delivered']}, complaints "
            f"{today['complaints']}, hard bounces {today['hard_bounces']}"
        )
        if d["history"]:
            lines.append("\nhistory:")
            for c in d["history"]:
                who = c["actor"] + (f" ({c['by']})" if c["by"] else "")
                lines.append(
                    f"  {_short(c['at'])}  {c['previous']} -> {c['state']}  by {who}: {c['reason']}"
                )
        return "\n".join(lines)

    _out(args, data, human)
    return EXIT_OK


def _change(d: dict[str, Any]) -> str:
    until = f" until {_short(d['expires_at'])}" if d["expires_at"] else ""
    return f"{d['dealer']}: {d['previous']} -> {d['state']}{until}"


def _suspend(args: argparse.Namespace, api: ApiClient) -> int:
    """Suspend a dealer."""
    body: dict[str, Any] = {"reason": args.reason, "by": args.by or ""}
    if args.duration:
        body["for"] = args.duration
    _out(args, api.call("POST", f"/api/dealers/{_seg(args.dealer)}/suspend", body=body), _change)
    return EXIT_OK


def _resume(args: argparse.Namespace, api: ApiClient) -> int:
    """Resume a dealer."""
    body = {"reason": args.reason, "by": args.by or ""}
    _out(args, api.call("POST", f"/api/dealers/{_seg(args.dealer)}/resume", body=body), _change)
    return EXIT_OK


def _events(args: argparse.Namespace, api: ApiClient) -> int:
    """A dealer's complaints, bounces and transitions."""
    data = api.call(
        "GET",
        f"/api/dealers/{_seg(args.dealer)}/events",
        query={"kind": args.kind, "since": args.since, "limit": args.limit},
    )

    def human(d: dict[str, Any]) -> str:
        rows = [(_short(e["at"]), e["kind"], e["recipient"], e["detail"], e["subject"])
                for e in d["events"]]  # fmt: skip
        text = table(rows, ("WHEN", "KIND", "RECIPIENT", "DETAIL", "SUBJECT"))
        if d["transitions"]:
            text += "\n\n" + table(
                [(_short(c["at"]), f"{c['previous']} -> {c['state']}", c["actor"], c["reason"])
                 for c in d["transitions"]],
                ("WHEN", "CHANGE", "BY", "REASON"),
            )  # fmt: skip
        return text

    _out(args, data, human)
    return EXIT_OK


def _link(args: argparse.Namespace, api: ApiClient) -> int:
    """The dealer's status-page link."""
    _out(args, api.call("GET", f"/api/dealers/{_seg(args.dealer)}/status-link"), lambda d: d["url"])
    return EXIT_OK


# -- suppressions ------------------------------------------------------------------------


def _entries_table(entries: list[dict[str, Any]]) -> str:
    rows = [
        (e["id"], e["list"], e["address"], _short(e["created_at"]), e["reason"],
         f"lifted by {e['lifted_by']}" if e["lifted_at"] else
         (f"until {_short(e['expires_at'])}" if e["expires_at"] else "active"))
        for e in entries
    ]  # fmt: skip
    return table(rows, ("ID", "LIST", "ADDRESS", "ADDED", "REASON", "STATE"))


def _search(args: argparse.Namespace, api: ApiClient) -> int:
    """Search suppression entries."""
    query = {"list": args.list, "q": args.query, "all": args.all, "limit": args.limit}
    data = api.call("GET", "/api/suppressions", query=query)
    _out(args, data, lambda d: _entries_table(d["entries"]))
    return EXIT_OK


def _add(args: argparse.Namespace, api: ApiClient) -> int:
    """Suppress addresses on one list."""
    body = {"list": args.list, "addresses": args.addresses, "reason": args.reason,
            "by": args.by or ""}  # fmt: skip
    data = api.call("POST", "/api/suppressions", body=body)
    _out(args, data, lambda d: table([(r["address"], r["result"]) for r in d["results"]],
                                     ("ADDRESS", "RESULT")))  # fmt: skip
    return EXIT_USAGE if any(r["result"] == "invalid" for r in data["results"]) else EXIT_OK


def _remove(args: argparse.Namespace, api: ApiClient) -> int:
    """Lift a suppression."""
    body = {"list": args.list, "address": args.address, "reason": args.reason,
            "by": args.by or ""}  # fmt: skip
    data = api.call("DELETE", "/api/suppressions", body=body)
    _out(args, data, lambda d: f"lifted {d['address']} ({d['list']})")
    return EXIT_OK


def _csv_rows(path: Path) -> list[tuple[str, str] | RowProblem]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return list(suppression_rows(handle))


def _import(args: argparse.Namespace, api: ApiClient) -> int:
    """Import a CSV file into one list, in batches, with a progress bar."""
    path = Path(args.file)
    try:
        entries = _csv_rows(path)
    except OSError as exc:
        print(f"mailgate: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except CsvFormatError as exc:
        print(f"mailgate: {path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rows = [e for e in entries if not isinstance(e, RowProblem)]
    for problem in (e for e in entries if isinstance(e, RowProblem)):
        print(f"{path}:{problem.line}: {problem.problem}", file=sys.stderr)
    progress = Progress(f"importing {path.name}", len(rows))
    totals = {"added": 0, "skipped": 0, "invalid": len(entries) - len(rows)}
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
    _out(args, totals, lambda d: f"{d['added']} added, {d['skipped']} already suppressed, "
                                 f"{d['invalid']} not addresses ({args.list})")  # fmt: skip
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


def _messages_table(messages: list[dict[str, Any]]) -> str:
    rows = [
        (m["id"], m["state"], m["dealer"], m["attempts"], _short(m["updated_at"]),
         ",".join(m["findings"]) or "-", m["rcpt"], m["last_error"] or m["note"])
        for m in messages
    ]  # fmt: skip
    return table(rows, ("ID", "STATE", "DEALER", "ATT", "UPDATED", "FINDINGS", "RECIPIENT", "NOTE"))


def _message_detail(m: dict[str, Any]) -> str:
    lines = [
        f"id:        {m['id']}",
        f"state:     {m['state']}",
        f"dealer:    {m['dealer']}",
        f"from:      <{m['mail_from']}>",
        f"to:        <{m['rcpt']}>",
        f"received:  {_short(m['received_at'])}",
        f"attempts:  {m['attempts']}" + (f", next {_short(m['next_attempt_at'])}"
                                          if m["next_attempt_at"] else ""),
        f"size:      {m['size']} bytes",
    ]  # fmt: skip
    if m["last_error"]:
        lines.append(f"error:     {m['last_error']}")
    if m["note"]:
        lines.append(f"note:      {m['note']}")
    for f in m.get("findings_explained", []):
        lines.append(f"finding:   {f['code']}" + (f": {f['summary']}" if f["summary"] else ""))
        if f["advice"]:
            lines.append(f"           fix: {f['advice']}")
    lines.append("")
    lines.extend(m.get("header", []))
    return "\n".join(lines)


def _list_messages(args: argparse.Namespace, api: ApiClient) -> int:
    """List held or stored messages."""
    if args.what == "held":
        data = api.call("GET", "/api/held", query={"dealer": args.dealer, "limit": args.limit})
    else:
        query = {"state": args.state, "dealer": args.dealer, "limit": args.limit}
        data = api.call("GET", "/api/queue", query=query)
    _out(args, data, lambda d: _messages_table(d["messages"]))
    return EXIT_OK


def _show_message(args: argparse.Namespace, api: ApiClient) -> int:
    """Show one message."""
    base = "/api/held" if args.what == "held" else "/api/queue"
    _out(args, api.call("GET", f"{base}/{_seg(args.id)}"), _message_detail)
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
    return 1 if failed else EXIT_OK


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
    from urllib.parse import quote

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
    p.add_argument("--reason", required=True)
    p.add_argument("--for", dest="duration", help="ends by itself after e.g. 72h")
    p.add_argument("--by", help="who (default: the token's name)")
    p.set_defaults(func=_run(_suspend))
    p = sub.add_parser("resume", help="end a dealer's suspension", parents=[common])
    p.add_argument("dealer")
    p.add_argument("--reason", required=True)
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
