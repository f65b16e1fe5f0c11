"""``mailgate feedback parse`` (say what report files are) and ``feedback import`` (record them).

This module owns the offline ``feedback parse PATH... [--json]`` command and the one JSON
shape it prints per file (also what ``bench/feedback_accuracy.py`` and the tests read)::

    {"file", "kind": "complaint"|"bounce"|"delay"|"other", "feedback_type",
     "recipients": [{"address", "hard", "reason", "status", "smtp_code"}], "reference"}

``reference`` is the first ``X-Mailgate-Ref`` token found (``v1.<id>.<mac>``), unverified,
or null. Exit codes: 0 every file was read, 1 a file could not be read or a parser failed.
"""

from __future__ import annotations

import argparse
import json
import mailbox
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.admin.ops import AdminOps
from gateway.cli import offline
from gateway.cli.common import EXIT_FAIL, EXIT_OK, Progress, add_json, emit, settings_for
from gateway.datadir import load_or_create_key
from gateway.errors import FeedbackParseError
from gateway.feedback.ingest import FeedbackIngest, Via
from gateway.feedback.parse import classify_message
from gateway.feedback.reports import FeedbackKind, FeedbackResult
from gateway.metrics import Metrics
from gateway.tracking import RefCodec


def describe(path: str, result: FeedbackResult) -> dict[str, Any]:
    """The JSON-ready description of one parsed file."""
    recipients: list[dict[str, Any]] = []
    feedback_type: str | None = None
    if result.complaint is not None:
        feedback_type = result.complaint.feedback_type
        recipients = [
            {"address": a, "hard": False, "reason": None, "status": None, "smtp_code": None}
            for a in result.complaint.reported_recipients
        ]
    elif result.bounce is not None:
        recipients = [
            {
                "address": r.address,
                "hard": r.hard,
                "reason": r.reason.value,
                "status": r.status,
                "smtp_code": r.smtp_code,
            }
            for r in result.bounce.recipients
        ]
    refs = result.refs
    reference = f"v1.{refs[0].message_id}.{refs[0].mac}" if refs else None
    return {
        "file": path,
        "kind": result.kind.value,
        "feedback_type": feedback_type,
        "recipients": recipients,
        "reference": reference,
    }


def _line(info: dict[str, Any]) -> str:
    kind = info["kind"]
    if info["feedback_type"]:
        kind = f"{kind}({info['feedback_type']})"
    parts = [
        f"{r['address']} {'hard' if r['hard'] else 'soft'} {r['reason']} "
        f"{r['status'] or '-'} {r['smtp_code'] or '-'}"
        if r["reason"]
        else r["address"]
        for r in info["recipients"]
    ]
    ref = info["reference"] or "-"
    return f"{info['file']}\t{kind}\tref={ref}\t" + "; ".join(parts)


def cmd_feedback_parse(args: argparse.Namespace) -> int:
    """Parse each file and print what it is (one JSON object per line with --json)."""
    status = EXIT_OK
    for name in args.paths:
        path = Path(name)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            print(f"mailgate: {name}: cannot read: {exc.strerror or exc}", file=sys.stderr)
            status = EXIT_FAIL
            continue
        try:
            info = describe(name, classify_message(raw))
        except FeedbackParseError as exc:
            print(f"mailgate: {name}: {exc}", file=sys.stderr)
            status = EXIT_FAIL
            continue
        print(json.dumps(info) if args.json else _line(info))
    return status


def _feedback_commands(subparsers: Any) -> Any:
    """The ``feedback`` command's subcommands, shared with other ``feedback`` commands."""
    feedback = subparsers.choices.get("feedback")
    if feedback is None:
        feedback = subparsers.add_parser("feedback", help="feedback reports (complaints, bounces)")
        return feedback.add_subparsers(dest="feedback_command", required=True)
    for action in feedback._actions:  # another module registered "feedback" first
        if isinstance(action, argparse._SubParsersAction):
            return action
    return feedback.add_subparsers(dest="feedback_command", required=True)


def _is_mbox(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(5) == b"From "


def _messages(path: Path) -> Iterator[tuple[str, bytes]]:
    """Every message under ``path``: a Maildir, a folder of files, an mbox or one file."""
    if path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir():
        box = mailbox.Maildir(path, factory=None, create=False)
        for key in sorted(box.iterkeys()):
            yield f"{path}/{key}", box.get_bytes(key)
    elif path.is_dir():
        for child in sorted(p for p in path.iterdir() if p.is_file()):
            yield from _messages(child)
    else:
        if _is_mbox(path):
            mbox = mailbox.mbox(path, factory=None, create=False)
            for n, key in enumerate(mbox.iterkeys()):
                yield f"{path}#{n + 1}", mbox.get_bytes(key)
        else:
            yield str(path), path.read_bytes()


def _count(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        if path.is_dir() and (path / "cur").is_dir():
            total += len(mailbox.Maildir(path, factory=None, create=False))
        elif path.is_dir():
            total += _count([p for p in path.iterdir() if p.is_file()])
        elif path.is_file() and _is_mbox(path):
            total += len(mailbox.mbox(path, factory=None, create=False))
        elif path.is_file():
            total += 1
    return total


def cmd_feedback_import(args: argparse.Namespace) -> int:
    """Record every report found in the paths, as if it had come in on the listener.

    Idempotent: an event already recorded (same message, kind and recipient) is counted
    as a replay and changes nothing, so re-importing a mailbox is safe. Complaints and
    bounces move the dealer's state through the same ``Suspensions`` the gateway and the
    admin operations use (``gateway/cli/offline.py``), alerts included.
    """
    paths = [Path(p) for p in args.paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"mailgate: not found: {', '.join(missing)}", file=sys.stderr)
        return EXIT_FAIL

    async def work(ops: AdminOps) -> int:
        # Only now, once the store is known to exist: never a key in a stray directory.
        refs = RefCodec(load_or_create_key(settings_for(args).ref_key_file))
        ingest = FeedbackIngest(
            ops.storage, refs, ops.policies, ops.clock, Metrics(), ops.suspensions
        )
        progress = Progress("importing", _count(paths))
        tally: Counter[str] = Counter()
        for path in paths:
            for name, raw in _messages(path):
                result = await ingest.ingest(raw, Via("import", source=name))
                tally[result.kind.value] += 1
                for event in result.recorded:
                    tally[f"recorded {event.kind.value}"] += 1
                if result.refused and not result.recorded:
                    tally[f"ignored ({result.refused[0]})"] += 1
                progress.advance()
        progress.finish()
        kinds = {k.value for k in FeedbackKind}
        read = sum(tally[k] for k in kinds)
        details = ", ".join(f"{n} {k}" for k, n in sorted(tally.items()) if k not in kinds)
        data = {"read": read, "counts": dict(sorted(tally.items()))}
        emit(args, data, lambda _d: f"{read} messages read" + (f": {details}" if details else ""))
        return EXIT_OK

    return offline.run(args, work)


def register(subparsers: Any) -> None:
    """Add ``feedback parse`` and ``feedback import`` to the ``mailgate`` subcommands."""
    commands = _feedback_commands(subparsers)
    p = commands.add_parser("parse", help="say what report files are, recording nothing")
    p.add_argument("paths", nargs="+", metavar="PATH", help=".eml files")
    p.add_argument("--json", action="store_true", help="one JSON object per file and line")
    p.set_defaults(func=cmd_feedback_parse)
    p = commands.add_parser(
        "import", help="record the reports in .eml files, mbox files or Maildir folders"
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help=".eml or mbox files, Maildir folders")
    add_json(p, "the counts")
    p.set_defaults(func=cmd_feedback_import)
