"""``mailgate feedback parse``: say what received report files are, recording nothing.

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
import sys
from pathlib import Path
from typing import Any

from gateway.errors import FeedbackParseError
from gateway.feedback.parse import classify_message
from gateway.feedback.reports import FeedbackResult

EXIT_OK, EXIT_FAIL = 0, 1


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
            print(f"{name}: cannot read: {exc.strerror or exc}", file=sys.stderr)
            status = EXIT_FAIL
            continue
        try:
            info = describe(name, classify_message(raw))
        except FeedbackParseError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
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


def register(subparsers: Any) -> None:
    """Add ``feedback parse`` to the ``mailgate`` subcommands."""
    commands = _feedback_commands(subparsers)
    p = commands.add_parser("parse", help="say what report files are, recording nothing")
    p.add_argument("paths", nargs="+", metavar="PATH", help=".eml files")
    p.add_argument("--json", action="store_true", help="one JSON object per file and line")
    p.set_defaults(func=cmd_feedback_parse)
