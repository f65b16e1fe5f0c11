"""The human form of the admin API's JSON, shared by ``mailgate admin`` and the offline commands.

Every function takes what ``gateway/admin/views.py`` produces (the API's answer, or the same
view built offline) and returns text, so a dealer, a message or a suppression entry reads
the same whichever way the command reached it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.reputation.records import GLOBAL


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Left-aligned columns as wide as their widest cell; the last one is not padded."""
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        padded = [c.ljust(widths[i]) for i, c in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def short(moment: str | None) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM``, or ``-``."""
    return moment[:16].replace("T", " ") if moment else "-"


def _pct(rate: dict[str, Any]) -> str:
    return f"{rate['rate']:.3%} ({rate['events']}/{rate['volume']})"


def health(d: dict[str, Any]) -> str:
    """``health_json``."""
    queue = ", ".join(f"{k} {v}" for k, v in d["queue"].items() if v) or "empty"
    return (
        f"node:     {d['node']} ({'ok' if d['ok'] else 'NOT OK'})\n"
        f"storage:  {d['storage']}\nspool:    {'FULL' if d['spool_full'] else 'ok'}\n"
        f"dealers:  {d['dealers']}\nqueue:    {queue}\n"
        f"oldest:   {short(d['oldest_queued_at'])}"
    )


def reload(d: dict[str, Any]) -> str:
    """``reload_json``."""
    if d["ok"]:
        return f"policies reloaded: {len(d['dealers'])} dealers"
    return (
        "policies NOT reloaded; the previous set stays in force. Fix these and retry "
        "(`mailgate policy check` shows the same):\n" + "\n".join(d["problems"])
    )


def dealers(items: list[dict[str, Any]]) -> str:
    """A list of ``dealer_json``: one line per dealer."""
    rows = [
        (x["id"], x["state"], _pct(x["rates"]["complaints"]),
         f"{x['rates']['complaints']['suspend_rate']:.2%}", _pct(x["rates"]["bounces"]),
         x["reason"])
        for x in items
    ]  # fmt: skip
    return table(rows, ("DEALER", "STATE", "COMPLAINTS", "SUSPEND AT", "BOUNCES", "REASON"))


def dealer(d: dict[str, Any]) -> str:
    """A detailed ``dealer_json``: state, why, rates against thresholds, today, history."""
    lines = [
        f"dealer:   {d['id']} ({d['name']})",
        f"state:    {d['state']}" + (f" since {short(d['since'])}" if d["since"] else ""),
    ]
    if d["reason"]:
        lines.append(f"why:      {d['reason']}")
    if d["expires_at"]:
        lines.append(f"until:    {short(d['expires_at'])}")
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
                f"  {short(c['at'])}  {c['previous']} -> {c['state']}  by {who}: {c['reason']}"
            )
    return "\n".join(lines)


def change(d: dict[str, Any]) -> str:
    """A ``change_json``: ``dealer: previous -> state [until ...]``."""
    until = f" until {short(d['expires_at'])}" if d["expires_at"] else ""
    return f"{d['dealer']}: {d['previous']} -> {d['state']}{until}"


def events(d: dict[str, Any]) -> str:
    """A dealer's events and transitions."""
    rows = [(short(e["at"]), e["kind"], e["recipient"], e["detail"], e["subject"])
            for e in d["events"]]  # fmt: skip
    text = table(rows, ("WHEN", "KIND", "RECIPIENT", "DETAIL", "SUBJECT"))
    if d["transitions"]:
        text += "\n\n" + table(
            [(short(c["at"]), f"{c['previous']} -> {c['state']}", c["actor"], c["reason"])
             for c in d["transitions"]],
            ("WHEN", "CHANGE", "BY", "REASON"),
        )  # fmt: skip
    return text


def entries(items: list[dict[str, Any]]) -> str:
    """A list of ``suppression_json``."""
    rows = [
        (e["id"], e["list"], e["address"], short(e["created_at"]), e["reason"],
         f"lifted by {e['lifted_by']}" if e["lifted_at"] else
         (f"until {short(e['expires_at'])}" if e["expires_at"] else "active"))
        for e in items
    ]  # fmt: skip
    return table(rows, ("ID", "LIST", "ADDRESS", "ADDED", "REASON", "STATE"))


def outcomes(items: list[dict[str, Any]]) -> str:
    """What adding each address did (``outcome_json``)."""
    return table([(r["address"], r["result"]) for r in items], ("ADDRESS", "RESULT"))


def imported(d: dict[str, Any], list_name: str) -> str:
    """The counts of an import (``import_json``) into ``list_name`` (``*``: the global list)."""
    where = "the global list" if list_name == GLOBAL else f"{list_name}'s list"
    return (
        f"{d['added']} added, {d['skipped']} already suppressed, "
        f"{d['invalid']} not addresses ({where})"
    )


def messages(items: list[dict[str, Any]]) -> str:
    """A list of ``message_json``."""
    rows = [
        (m["id"], m["state"], m["dealer"], m["attempts"], short(m["updated_at"]),
         ",".join(m["findings"]) or "-", m["rcpt"], m["last_error"] or m["note"])
        for m in items
    ]  # fmt: skip
    return table(rows, ("ID", "STATE", "DEALER", "ATT", "UPDATED", "FINDINGS", "RECIPIENT", "NOTE"))


def message(m: dict[str, Any]) -> str:
    """A detailed ``message_json``: who, state, findings with what to fix, the header."""
    lines = [
        f"id:        {m['id']}",
        f"state:     {m['state']}",
        f"dealer:    {m['dealer']}",
        f"from:      <{m['mail_from']}>",
        f"to:        <{m['rcpt']}>",
        f"received:  {short(m['received_at'])}",
        f"attempts:  {m['attempts']}" + (f", next {short(m['next_attempt_at'])}"
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
    if m.get("header_truncated"):
        lines.append("... (more header lines)")
    return "\n".join(lines)
