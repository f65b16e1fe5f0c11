"""Feedback parser accuracy against the real reports in the shared corpus.

Every file is run through the same code as ``mailgate feedback parse --json``
(``gateway.cli.feedback.describe(classify_message(raw))``) and compared with the
expectations each source's MANIFEST.md describes. Per source it prints:

- hard/soft: expected recipient rows where our hard flag agrees (a recipient we did not
  find counts as a disagreement; an expected non-bounce counts as agreement when we say
  the message is not a bounce);
- recipient: expected failed or reported recipients that we found (by position when the
  source records no addresses, by address otherwise);
- feedback type: expected complaints whose feedback type we read the same;
- kind: files whose kind (complaint / bounce or delay / other) agrees, where stated.

Targets (issue 6): hard/soft >= 95%, recipient found >= 95%, feedback type >= 98%.

How the expectations are read, per source:

- sisimai-set-of-emails: ``expected.json`` rows for ``maildir/bsd`` (``hardbounce``,
  ``feedback_type`` for ``reason=feedback``; ``vacation`` and ``delivered`` rows expect
  "not a bounce"); ``maildir/dos`` and ``maildir/mac`` through
  ``crlf-cr-equivalents.csv``; ``maildir/not`` must be "other".
- perl-mail-deliverystatus-bounceparser: ``is_bounce`` (a delay is not a bounce),
  ``addresses``, ``reports = 0`` (no invented recipients), ``std_reason`` (hard exactly for
  user_unknown and domain_error). Upstream TODO/FIXME rows are skipped as noted there.
- perl-email-arf, parsedmarc, flanker, node-mailparser, ruby-mail-fixtures: the
  transcribed upstream assertions (feedback type, report kind, DSN status).
- php-bounce-handler has no oracle: its MANIFEST names the FBL files and the numbered
  bounces, and ``file-facts.json`` gives the literal ``Feedback-Type`` fields; those are
  the expectations used, marked "(facts)".
- cpython-test-email, python-mail-parser: ordinary mail, must be "other", except four
  files that are themselves bounces (listed in ``_GENUINE_REPORTS``).

Run from the repository root::

    .venv/bin/python bench/feedback_accuracy.py [--failures] [--json OUT]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.cli.feedback import describe
from gateway.feedback.parse import classify_message

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
TARGETS = {"hard/soft": 0.95, "recipient": 0.95, "feedback type": 0.98}
METRICS = ("hard/soft", "recipient", "feedback type", "kind")
BOUNCE_KINDS = ("bounce", "delay")


@dataclass
class Tally:
    """Agreement counts of one source."""

    name: str
    counts: dict[str, list[int]] = field(default_factory=dict)  # metric -> [agree, total]
    failures: list[str] = field(default_factory=list)
    files: int = 0

    def check(self, metric: str, ok: bool, where: str, detail: str) -> None:
        agree_total = self.counts.setdefault(metric, [0, 0])
        agree_total[1] += 1
        if ok:
            agree_total[0] += 1
        else:
            self.failures.append(f"{metric:<13} {where}: {detail}")


_cache: dict[Path, dict[str, Any]] = {}


def run(path: Path) -> dict[str, Any]:
    """The ``feedback parse --json`` object for ``path``."""
    if path not in _cache:
        _cache[path] = describe(str(path.relative_to(CORPUS)), classify_message(path.read_bytes()))
    return _cache[path]


def _short(info: dict[str, Any]) -> str:
    rcpts = ", ".join(
        f"{r['address']}:{'H' if r['hard'] else 's'}:{r['reason']}:{r['status']}"
        for r in info["recipients"]
    )
    return f"got {info['kind']} {info['feedback_type'] or ''} [{rcpts}]"


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))["files"]
    return data


# -- sources ------------------------------------------------------------------------------


def _sisimai_file(tally: Tally, path: Path, rows: list[dict[str, Any]], where: str) -> None:
    info = run(path)
    got = info["recipients"]
    tally.files += 1
    for row in rows:
        index = int(row["index"])
        label = f"{where}#{index} ({row['reason']}, {row['status']})"
        if row["reason"] == "feedback":
            tally.check(
                "feedback type",
                info["kind"] == "complaint" and info["feedback_type"] == row["feedback_type"],
                label,
                f"want {row['feedback_type']}; {_short(info)}",
            )
            tally.check("recipient", len(got) >= index, label, _short(info))
            continue
        if row["reason"] in ("vacation", "delivered"):
            tally.check("hard/soft", info["kind"] == "other", label, f"want other; {_short(info)}")
            tally.check("kind", info["kind"] == "other", label, _short(info))
            continue
        found = info["kind"] in BOUNCE_KINDS and len(got) >= index
        tally.check("recipient", found, label, _short(info))
        hard = bool(got[index - 1]["hard"]) if found else None
        tally.check(
            "hard/soft",
            hard is row["hardbounce"],
            label,
            f"want {'hard' if row['hardbounce'] else 'soft'}; {_short(info)}",
        )
    if rows and rows[0]["reason"] not in ("feedback", "vacation", "delivered"):
        tally.check("kind", info["kind"] in BOUNCE_KINDS, where, _short(info))


def sisimai() -> Iterator[Tally]:
    root = CORPUS / "sisimai-set-of-emails"
    expected = _load(root / "expected.json")
    bsd = Tally("sisimai (bsd, LF)")
    for name, entry in sorted(expected.items()):
        _sisimai_file(bsd, root / "maildir" / "bsd" / name, entry["recipients"], name)
    for path in sorted((root / "maildir" / "not").glob("*.eml")):
        bsd.files += 1
        info = run(path)
        bsd.check("kind", info["kind"] == "other", f"not/{path.name}", _short(info))
    yield bsd
    eol = Tally("sisimai (dos/mac, CRLF/CR)")
    with (root / "crlf-cr-equivalents.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            same = Path(row["identical_after_newline_normalisation_to"]).name
            if row["has_expected_entry"] == "yes" and same in expected:
                rows = expected[same]["recipients"]
                _sisimai_file(eol, root / row["file"], rows, row["file"])
    yield eol


_PERL_HARD = {"user_unknown": True, "domain_error": True}
_PERL_SKIP_REPORTS = {"t/corpus/warning-5.msg"}  # upstream FIXME: should produce a report


def bounceparser() -> Iterator[Tally]:
    root = CORPUS / "perl-mail-deliverystatus-bounceparser"
    tally = Tally("perl Mail-DeliveryStatus-BounceParser")
    for name, entry in sorted(_load(root / "expected.json").items()):
        path = root / name
        if not path.is_file():
            continue
        tally.files += 1
        info = run(path)
        got = [r["address"].lower() for r in info["recipients"]]
        if "reports" in entry and name not in _PERL_SKIP_REPORTS:
            tally.check("recipient", not got, name, f"want no recipients; {_short(info)}")
        elif "is_bounce" in entry and name not in _PERL_SKIP_REPORTS:
            tally.check(
                "kind",
                (info["kind"] == "bounce") is entry["is_bounce"],
                name,
                f"want is_bounce={entry['is_bounce']}; {_short(info)}",
            )
        for address in entry.get("addresses", []):
            tally.check(
                "recipient", address.lower() in got, name, f"want {address}; {_short(info)}"
            )
        if "min_addresses" in entry:
            tally.check("recipient", len(got) >= entry["min_addresses"], name, _short(info))
        reason = entry.get("std_reason")
        if reason and "note" not in entry:
            want = _PERL_HARD.get(reason, False)
            hard = any(r["hard"] for r in info["recipients"])
            tally.check(
                "hard/soft",
                info["kind"] == "bounce" and hard is want,
                name,
                f"want {reason} ({'hard' if want else 'soft'}); {_short(info)}",
            )
    yield tally


def email_arf() -> Iterator[Tally]:
    root = CORPUS / "perl-email-arf"
    tally = Tally("perl Email-ARF")
    for name, entry in sorted(_load(root / "expected.json").items()):
        tally.files += 1
        path = root / name
        info = run(path)
        tally.check(
            "feedback type",
            info["feedback_type"] == entry["feedback_type"],
            name,
            f"want {entry['feedback_type']}; {_short(info)}",
        )
        report = classify_message(path.read_bytes()).complaint
        fields_ok = report is not None and report.user_agent == entry["user_agent"]
        fields_ok = fields_ok and report is not None and report.subject == entry["original_subject"]
        if "source_ip" in entry:
            fields_ok = fields_ok and report is not None and report.source_ip == entry["source_ip"]
        tally.check("kind", fields_ok, name, "user agent / subject / source IP differ")
    yield tally


def parsedmarc() -> Iterator[Tally]:
    root = CORPUS / "parsedmarc"
    tally = Tally("parsedmarc")
    for name, entry in sorted(_load(root / "expected.json").items()):
        tally.files += 1
        path = root / name
        info = run(path)
        if entry["report_type"] == "failure":
            tally.check("kind", info["kind"] == "complaint", name, _short(info))
            want = entry.get("feedback_type", "auth-failure")
            tally.check(
                "feedback type", info["feedback_type"] == want, name, f"want {want}; {_short(info)}"
            )
            if "source_ip" in entry:
                report = classify_message(path.read_bytes()).complaint
                ip = report.source_ip if report is not None else None
                tally.check("kind", ip == entry["source_ip"], name, f"source IP {ip}")
        else:
            tally.check("kind", info["kind"] == "other", name, f"want other; {_short(info)}")
    yield tally


def flanker() -> Iterator[Tally]:
    root = CORPUS / "flanker"
    tally = Tally("flanker")
    for name, entry in sorted(_load(root / "expected.json").items()):
        path = root / name
        if not path.is_file() or path.suffix != ".eml":
            continue
        tally.files += 1
        info = run(path)  # every file: none may raise
        if entry.get("kind") == "ARF":
            tally.check("kind", info["kind"] == "complaint", name, _short(info))
            tally.check("feedback type", info["feedback_type"] == "abuse", name, _short(info))
        elif entry.get("is_bounce") is True or entry.get("is_delivery_notification") is True:
            tally.check("kind", info["kind"] in BOUNCE_KINDS, name, _short(info))
            tally.check("recipient", bool(info["recipients"]), name, _short(info))
            if entry.get("status"):
                statuses = [r["status"] for r in info["recipients"]]
                tally.check("kind", entry["status"] in statuses, name, f"status {statuses}")
        elif entry.get("is_bounce") is False:
            tally.check("kind", info["kind"] == "other", name, _short(info))
    for sub in ("bounce", "complaints"):
        for path in sorted((root / "tests/fixtures/messages" / sub).glob("*.eml")):
            rel = str(path.relative_to(root))
            if rel in _load(root / "expected.json"):
                continue
            info = run(path)
            want = "complaint" if sub == "complaints" else "bounce/delay"
            ok = (
                info["kind"] == "complaint" if sub == "complaints" else info["kind"] in BOUNCE_KINDS
            )
            tally.files += 1
            tally.check("kind", ok, rel, f"(folder) want {want}; {_short(info)}")
    yield tally


def node_ruby() -> Iterator[Tally]:
    tally = Tally("node-mailparser + ruby-mail-fixtures")
    node = CORPUS / "node-mailparser"
    for name, entry in sorted(_load(node / "expected.json").items()):
        path = node / name
        tally.files += 1
        info = run(path)
        if entry.get("kind") == "DSN":
            tally.check("kind", info["kind"] == "bounce", name, _short(info))
            statuses = [r["status"] for r in info["recipients"]]
            tally.check("recipient", "5.1.1" in statuses, name, _short(info))
        else:
            tally.check("kind", info["kind"] == "other", name, f"want other; {_short(info)}")
    ruby = CORPUS / "ruby-mail-fixtures"
    for name, entry in sorted(_load(ruby / "expected.json").items()):
        path = ruby / name
        if not path.is_file():
            continue
        tally.files += 1
        info = run(path)
        if entry.get("kind") != "DSN":
            continue
        want = "bounce" if entry["bounced"] else "delay"
        tally.check("kind", info["kind"] == want, name, f"want {want}; {_short(info)}")
        if "final_recipient" in entry:
            address = entry["final_recipient"].partition(";")[2].strip().lower()
            got = {r["address"].lower(): r for r in info["recipients"]}
            tally.check("recipient", address in got, name, _short(info))
            status = got[address]["status"] if address in got else None
            tally.check("kind", status == entry["error_status"], name, f"status {status}")
        else:
            tally.check("recipient", bool(info["recipients"]), name, _short(info))
    yield tally


_PHP_COMPLAINTS = {"eml/fbl-hotmail.txt": "abuse", "eml/arf6.txt": "abuse"}


def php() -> Iterator[Tally]:
    root = CORPUS / "php-bounce-handler"
    tally = Tally("php-bounce-handler (facts)")
    facts = _load(root / "file-facts.json")
    for name, fact in sorted(facts.items()):
        path = root / name
        tally.files += 1
        info = run(path)
        stem = Path(name).stem
        feedback = (fact.get("feedback_type_field") or "").strip().lower() or _PHP_COMPLAINTS.get(
            name
        )
        if feedback or stem.startswith("fbl-"):
            want = feedback or "abuse"
            tally.check(
                "feedback type",
                info["kind"] == "complaint" and info["feedback_type"] == want,
                name,
                f"want {want}; {_short(info)}",
            )
        elif stem.isdigit() or stem in ("5.1.1", "hotmailbounce") or stem.startswith("exchange"):
            tally.check("kind", info["kind"] in BOUNCE_KINDS, name, f"want bounce; {_short(info)}")
            tally.check("recipient", bool(info["recipients"]), name, _short(info))
        elif stem.startswith("vac") or stem == "unsubscribe":
            tally.check("kind", info["kind"] == "other", name, f"want other; {_short(info)}")
    yield tally


# Files of these corpora that are themselves delivery reports (read by hand): not ordinary.
_GENUINE_REPORTS = {
    "cpython-test-email/data/msg_16.txt",  # "Delivery Notification: Delivery has failed"
    "cpython-test-email/data/msg_25.txt",  # multipart/report DSN, too many hops
    "cpython-test-email/data/msg_43.txt",  # multipart/report DSN, banned attachment
    "python-mail-parser/tests/mails/mail_malformed_2",  # MailSite DSN, mailbox full
}


def ordinary() -> Iterator[Tally]:
    tally = Tally("ordinary mail (cpython, mail-parser)")
    roots = [CORPUS / "cpython-test-email", CORPUS / "python-mail-parser"]
    for root in roots:
        for path in sorted(root.rglob("*")):
            if (
                not path.is_file()
                or path.suffix in (".json", ".md", ".csv")
                or "LICENSE" in path.name
            ):
                continue
            rel = str(path.relative_to(CORPUS))
            tally.files += 1
            info = run(path)
            want = "bounce" if rel in _GENUINE_REPORTS else "other"
            ok = info["kind"] in BOUNCE_KINDS if want == "bounce" else info["kind"] == "other"
            tally.check("kind", ok, rel, f"want {want}; {_short(info)}")
    yield tally


SOURCES: tuple[Callable[[], Iterator[Tally]], ...] = (
    sisimai,
    bounceparser,
    php,
    email_arf,
    parsedmarc,
    flanker,
    node_ruby,
    ordinary,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--failures", action="store_true", help="list every disagreement")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if not CORPUS.is_dir():
        print(f"corpus not found at {CORPUS}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    tallies = [tally for source in SOURCES for tally in source()]
    elapsed = time.perf_counter() - started

    header = f"{'source':<40} {'files':>5}  " + "  ".join(f"{m:>17}" for m in METRICS)
    print(header)
    print("-" * len(header))
    totals: dict[str, list[int]] = {}
    for tally in tallies:
        cells = []
        for metric in METRICS:
            agree, total = tally.counts.get(metric, [0, 0])
            if metric != "kind":
                sum_ = totals.setdefault(metric, [0, 0])
                sum_[0] += agree
                sum_[1] += total
            cells.append(
                f"{agree:>4}/{total:<4} {100 * agree / total:5.1f}%" if total else " " * 17
            )
        print(f"{tally.name:<40} {tally.files:>5}  " + "  ".join(f"{c:>17}" for c in cells))
    print("-" * len(header))
    ok = True
    for metric, target in TARGETS.items():
        agree, total = totals.get(metric, [0, 0])
        share = agree / total if total else 0.0
        ok = ok and share >= target
        verdict = "ok" if share >= target else "BELOW TARGET"
        figure = f"{agree}/{total} = {100 * share:.1f}%"
        print(f"{metric:<14} {figure}  (target {100 * target:.0f}%) {verdict}")
    print(f"{len(_cache)} files in {elapsed:.1f}s")
    if args.failures:
        for tally in tallies:
            for line in tally.failures:
                print(f"[{tally.name}] {line}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {t.name: {m: t.counts.get(m, [0, 0]) for m in METRICS} for t in tallies}, indent=1
            ),
            encoding="utf-8",
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
