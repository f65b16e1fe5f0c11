"""Feedback parser accuracy against real reports: the shared corpus and bench/data.

Every file is run through the same code as ``mailgate feedback parse --json``
(``gateway.cli.feedback.describe(classify_message(raw))``, plus the per-recipient kind of
the ``BounceReport``) and compared with the expectations each source's MANIFEST.md
describes. Per corpus it prints:

- recall: expected failed (or reported) recipients that we found, by address where the
  source records addresses, by position where it records only how many failed. A
  recipient the report writes only as a bare local part or screen name (AOL, Yale's
  directory) counts when it is the expected address's local part: it is reported
  unconfirmed, never hard, and ingest resolves it against the sent log;
- hard flags: how many of our hard flags fall on an address that did not fail, out of all
  our hard flags (precision of hard flags). An address did not fail when the source names
  the failed addresses and this is not one of them, when the source says the file is not
  a bounce, when it sits past the number of failed recipients the source counts, or, for
  sources that record no addresses, when the report mentions it only inside header
  fields (its own or the quoted original's ``To:``/``From:``/``Cc:``/``Message-ID``
  summary): nothing the report says about delivery names it;
- final/delay: recipients (or files) the source calls final failures or delays whose kind
  (``bounce`` / ``delay``) we read the same;
- hard/soft, feedback type, kind: as before (agreement of the hard flag, of the
  complaint's feedback type, of the file's kind: complaint / bounce or delay / other).

Targets (issue 18), on every bounce corpus: recall >= 98 %, final/delay >= 97 %, and no
hard flag on an address that did not fail. Issue 6's totals still apply: hard/soft >= 95 %,
feedback type >= 98 %.

How the expectations are read, per source:

- sisimai-set-of-emails: ``expected.json`` rows for ``maildir/bsd`` (``hardbounce``,
  ``feedback_type`` for ``reason=feedback``; ``vacation`` and ``delivered`` rows expect
  "not a bounce"); ``maildir/dos`` and ``maildir/mac`` through
  ``crlf-cr-equivalents.csv``; ``maildir/not`` must be "other". A row with a real 5.X.X
  status is a final failure; 4.X.X rows and Sisimai's pseudo codes 5.0.9XX say nothing
  about final vs delay (Sisimai calls delay warnings "expired" too) and are not counted.
- perl-mail-deliverystatus-bounceparser: ``is_bounce`` (a delay is not a bounce; the
  ``warning-*`` files with ``is_bounce = false`` are delays), ``addresses``, ``reports = 0``
  (no invented recipients), ``std_reason`` (hard exactly for user_unknown and
  domain_error). Upstream TODO/FIXME rows are skipped as noted there.
- perl-email-arf, parsedmarc, flanker, node-mailparser, ruby-mail-fixtures: the
  transcribed upstream assertions (feedback type, report kind, DSN status, final
  recipient, ``bounced``).
- php-bounce-handler has no oracle: its MANIFEST names the FBL files and the numbered
  bounces, and ``file-facts.json`` gives the literal ``Feedback-Type`` fields; those are
  the expectations used, marked "(facts)".
- cpython-test-email, python-mail-parser: ordinary mail, must be "other", except four
  files that are themselves bounces (listed in ``_GENUINE_REPORTS``).
- bench/data/flufl-bounce: flufl.bounce 6.0.0's ``DETECTORS`` table (addresses and
  ``is_temporary`` per file), see its MANIFEST.md.
- bench/data/baunsu (held out: never used to tune the parsers, reported on its own
  line): baunsu 0.2.3's tests (every ``bounce_*`` file bounced and hard, ``auto_*`` and
  ``ordinary_*`` not bounced), the failed addresses being the files' Final-Recipient.
- bench/data/bounced (held out, its own line like baunsu): bounced 0.3.0's
  ``test_bounces`` table (recipient and action of each DSN), ``non_bounces/`` not
  reports, the other files under ``bounces/`` reports whose addresses upstream does not
  assert (scored for kind and hard-flag precision only); see its MANIFEST.md.

Run from the repository root::

    .venv/bin/python bench/feedback_accuracy.py [--failures] [--json OUT]

The shared corpus is looked for beside the checkout (``../shared/corpus``, or two levels
up for a worktree); ``MAILGATE_CORPUS`` names another place.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.cli.feedback import describe
from gateway.feedback import mail as mailmod
from gateway.feedback.parse import classify_message


def _corpus() -> Path:
    named = os.environ.get("MAILGATE_CORPUS")
    if named:
        return Path(named)
    here = Path(__file__).resolve()
    for up in (2, 3):
        candidate = here.parents[up] / "shared" / "corpus"
        if candidate.is_dir():
            return candidate
    return here.parents[2] / "shared" / "corpus"


CORPUS = _corpus()
DATA = Path(__file__).resolve().parent / "data"
TOTAL_TARGETS = {"hard/soft": 0.95, "feedback type": 0.98}
CORPUS_TARGETS = {"recall": 0.98, "final/delay": 0.97}
METRICS = ("recall", "hard flags", "final/delay", "hard/soft", "feedback type", "kind")
BOUNCE_KINDS = ("bounce", "delay")
HELD_OUT = frozenset({"baunsu (held out)", "bounced (held out)"})


@dataclass
class Tally:
    """Agreement counts of one corpus."""

    name: str
    counts: dict[str, list[int]] = field(default_factory=dict)  # metric -> [agree, total]
    failures: list[str] = field(default_factory=list)
    files: int = 0
    hard_flags: int = 0
    wrong_hard: int = 0

    def check(self, metric: str, ok: bool, where: str, detail: str) -> None:
        agree_total = self.counts.setdefault(metric, [0, 0])
        agree_total[1] += 1
        if ok:
            agree_total[0] += 1
        else:
            self.failures.append(f"{metric:<13} {where}: {detail}")

    def hard(self, info: dict[str, Any], where: str, failed: Callable[[int, str], bool]) -> None:
        """Count our hard flags; ``failed(position, address)`` says the address failed."""
        for position, rcpt in enumerate(info["recipients"], start=1):
            if not rcpt["hard"]:
                continue
            self.hard_flags += 1
            if not failed(position, rcpt["address"]):
                self.wrong_hard += 1
                self.failures.append(
                    f"{'WRONG HARD':<13} {where}: {rcpt['address']} did not fail; {_short(info)}"
                )


_cache: dict[Path, dict[str, Any]] = {}


def run(path: Path) -> dict[str, Any]:
    """The ``feedback parse --json`` object for ``path``, with per-recipient kinds."""
    if path not in _cache:
        raw = path.read_bytes()
        result = classify_message(raw)
        name = str(path.relative_to(CORPUS if path.is_relative_to(CORPUS) else DATA))
        info = describe(name, result)
        seen_all = result.bounce.recipients if result.bounce else ()
        for rcpt, seen in zip(info["recipients"], seen_all, strict=False):
            rcpt["kind"] = seen.kind.value
            rcpt["original"] = seen.original_recipient
            rcpt["confirmed"] = seen.confirmed
            rcpt["local_part"] = seen.local_part_only
        info["_raw"] = raw
        _cache[path] = info
    return _cache[path]


def _by_address(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Our recipients by address, lower case; an RFC 3464 Original-Recipient names one too."""
    out: dict[str, dict[str, Any]] = {}
    for rcpt in info["recipients"]:
        for address in (rcpt["address"], rcpt.get("original")):
            if address:
                out.setdefault(address.lower(), rcpt)
    return out


def _find(info: dict[str, Any], address: str) -> dict[str, Any] | None:
    """Our recipient for the expected ``address``, or ``None`` when we did not find it.

    By address (Final- or Original-Recipient); or an unconfirmed recipient the report
    wrote as a bare local part or screen name equal to ``address``'s local part, which
    ``gateway.feedback.ingest`` resolves to the sent log's address (never hard on its own).
    A recipient that names nobody at all is not a find.
    """
    found = _by_address(info).get(address.lower())
    if found is not None:
        return found
    local = address.lower().rpartition("@")[0]
    for rcpt in info["recipients"]:
        if not rcpt.get("confirmed", True) and (rcpt.get("local_part") or "").lower() == local:
            mine: dict[str, Any] = rcpt
            return mine
    return None


def _short(info: dict[str, Any]) -> str:
    rcpts = ", ".join(
        f"{r['address']}:{'H' if r['hard'] else 's'}:{r['reason']}:{r['status']}"
        + (":d" if r.get("kind") == "delay" else "")
        for r in info["recipients"]
    )
    return f"got {info['kind']} {info['feedback_type'] or ''} [{rcpts}]"


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))["files"]
    return data


# Header fields that only summarise a message: an address named only there is not one
# the report says anything about (the original's recipients, its sender, the list).
_SUMMARY_FIELD = re.compile(
    r"^[ \t>]*(?:to|from|cc|bcc|reply-to|sender|return-path|message-id|in-reply-to|"
    r"references|delivered-to|x-original-to|resent-[a-z]+|errors-to|list-[a-z-]+|"
    r"x-[a-z0-9-]+|received|envelope-to|mail-followup-to)[ \t]*:",
    re.IGNORECASE,
)


def _named_outside_headers(info: dict[str, Any], address: str) -> bool:
    """True when the report's own text or DSN fields name ``address`` (not only headers)."""
    wanted = address.lower()
    mail = mailmod.read(info["_raw"])
    for part in mail.parts[1:] if len(mail.parts) > 1 else mail.parts:
        # A delivery-status part counts wherever it is (a bounce forwarded as an
        # attachment); other enclosed parts are the returned original.
        dsn = part.content_type in ("message/delivery-status", "message/global-delivery-status")
        if (part.in_enclosed or part.encloses) and not dsn:
            continue
        if part.content_type in ("text/rfc822-headers", "message/rfc822-headers"):
            continue
        for line in part.text().splitlines():
            if wanted in line.lower() and not _SUMMARY_FIELD.match(line):
                return True
    top = mail.top
    # X-Failed-Recipients (Exim) names the failed addresses in the report's own header.
    return any(wanted in v.lower() for v in top.header_all("x-failed-recipients"))


def _evidence(info: dict[str, Any]) -> Callable[[int, str], bool]:
    return lambda _position, address: _named_outside_headers(info, address)


def _in(addresses: list[str] | set[str]) -> Callable[[int, str], bool]:
    wanted = {a.lower() for a in addresses}
    return lambda _position, address: address.lower() in wanted


def _never(_position: int, _address: str) -> bool:
    return False


def _final_delay(tally: Tally, info: dict[str, Any], want: str, where: str) -> None:
    """Per file: ``want`` is ``bounce`` (a final failure) or ``delay``."""
    tally.check("final/delay", info["kind"] == want, where, f"want {want}; {_short(info)}")


# -- sources ------------------------------------------------------------------------------


# Sisimai's own codes for reports that carry no status (5.0.9XX): they say nothing about
# whether the report was a final failure or a delay warning.
_PSEUDO_STATUS = re.compile(r"5\.0\.9\d\d$")


# Files where Sisimai's table counts fewer failed recipients than the report names, read
# by hand: each extra address has its own refusal in the notice.
_SISIMAI_MORE_RECIPIENTS = {
    # qmail notice: <mailboxfull@...> "552 5.2.2 ... Mailbox full" and <userunknown@...>
    # "550 5.1.1 ... User unknown", each with its own "Remote host said"; one table row.
    "lhost-qmail-25.eml": 2,
}


def _sisimai_file(tally: Tally, path: Path, rows: list[dict[str, Any]], where: str) -> None:
    info = run(path)
    got = info["recipients"]
    tally.files += 1
    failed_rows = [r for r in rows if r["reason"] not in ("feedback", "vacation", "delivered")]
    count = max(len(failed_rows), _SISIMAI_MORE_RECIPIENTS.get(Path(where).name, 0))
    tally.hard(info, where, lambda pos, addr: pos <= count and _evidence(info)(pos, addr))
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
            tally.check("recall", len(got) >= index, label, _short(info))
            continue
        if row["reason"] in ("vacation", "delivered"):
            tally.check("hard/soft", info["kind"] == "other", label, f"want other; {_short(info)}")
            tally.check("kind", info["kind"] == "other", label, _short(info))
            continue
        found = info["kind"] in BOUNCE_KINDS and len(got) >= index
        tally.check("recall", found, label, _short(info))
        hard = bool(got[index - 1]["hard"]) if found else None
        tally.check(
            "hard/soft",
            hard is row["hardbounce"],
            label,
            f"want {'hard' if row['hardbounce'] else 'soft'}; {_short(info)}",
        )
        if row["status"].startswith("5.") and not _PSEUDO_STATUS.match(row["status"]):
            kind = got[index - 1].get("kind") if found else None
            tally.check("final/delay", kind == "bounce", label, f"want final; {_short(info)}")
    if rows and rows[0]["reason"] not in ("feedback", "vacation", "delivered"):
        tally.check("kind", info["kind"] in BOUNCE_KINDS, where, _short(info))


def sisimai() -> Iterator[Tally]:
    root = CORPUS / "sisimai-set-of-emails"
    expected = _load(root / "expected.json")
    bsd = Tally("sisimai-set-of-emails (bsd)")
    for name, entry in sorted(expected.items()):
        _sisimai_file(bsd, root / "maildir" / "bsd" / name, entry["recipients"], name)
    for path in sorted((root / "maildir" / "not").glob("*.eml")):
        bsd.files += 1
        info = run(path)
        bsd.check("kind", info["kind"] == "other", f"not/{path.name}", _short(info))
        bsd.hard(info, f"not/{path.name}", _evidence(info))
    yield bsd
    eol = Tally("sisimai-set-of-emails (dos/mac)")
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
    tally = Tally("perl-mail-deliverystatus-bounceparser")
    for name, entry in sorted(_load(root / "expected.json").items()):
        path = root / name
        if not path.is_file():
            continue
        tally.files += 1
        info = run(path)
        got = list(_by_address(info))
        if "reports" in entry and name not in _PERL_SKIP_REPORTS:
            tally.check("recall", not got, name, f"want no recipients; {_short(info)}")
            tally.hard(info, name, _never)
        elif entry.get("is_bounce") is False and not Path(name).name.startswith("warning"):
            tally.hard(info, name, _never)
        elif entry.get("addresses"):
            tally.hard(info, name, _in(entry["addresses"]))
        else:
            tally.hard(info, name, _evidence(info))
        if "is_bounce" in entry and "reports" not in entry and name not in _PERL_SKIP_REPORTS:
            tally.check(
                "kind",
                (info["kind"] == "bounce") is entry["is_bounce"],
                name,
                f"want is_bounce={entry['is_bounce']}; {_short(info)}",
            )
            if entry["is_bounce"]:
                _final_delay(tally, info, "bounce", name)
            elif Path(name).name.startswith("warning"):
                _final_delay(tally, info, "delay", name)
        for address in entry.get("addresses", []):
            found = _find(info, address) is not None
            tally.check("recall", found, name, f"want {address}; {_short(info)}")
        if "min_addresses" in entry:
            tally.check("recall", len(got) >= entry["min_addresses"], name, _short(info))
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
    tally = Tally("perl-email-arf")
    for name, entry in sorted(_load(root / "expected.json").items()):
        tally.files += 1
        path = root / name
        info = run(path)
        tally.hard(info, name, _never)
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
        tally.hard(info, name, _never)
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
    expected = _load(root / "expected.json")
    for name, entry in sorted(expected.items()):
        path = root / name
        if not path.is_file() or path.suffix != ".eml":
            continue
        tally.files += 1
        info = run(path)  # every file: none may raise
        if entry.get("kind") == "ARF":
            tally.hard(info, name, _never)
            tally.check("kind", info["kind"] == "complaint", name, _short(info))
            tally.check("feedback type", info["feedback_type"] == "abuse", name, _short(info))
        elif entry.get("is_bounce") is True or entry.get("is_delivery_notification") is True:
            tally.hard(info, name, _evidence(info))
            tally.check("kind", info["kind"] in BOUNCE_KINDS, name, _short(info))
            tally.check("recall", bool(info["recipients"]), name, _short(info))
            if entry.get("is_bounce") is True:
                _final_delay(tally, info, "bounce", name)
            if entry.get("status"):
                statuses = [r["status"] for r in info["recipients"]]
                tally.check("kind", entry["status"] in statuses, name, f"status {statuses}")
        elif entry.get("is_bounce") is False:
            tally.hard(info, name, _never)
            tally.check("kind", info["kind"] == "other", name, _short(info))
        else:
            tally.hard(info, name, _evidence(info))
    for sub in ("bounce", "complaints"):
        for path in sorted((root / "tests/fixtures/messages" / sub).glob("*.eml")):
            rel = str(path.relative_to(root))
            if rel in expected:
                continue
            info = run(path)
            want = "complaint" if sub == "complaints" else "bounce/delay"
            ok = (
                info["kind"] == "complaint" if sub == "complaints" else info["kind"] in BOUNCE_KINDS
            )
            tally.files += 1
            tally.hard(info, rel, _evidence(info))
            tally.check("kind", ok, rel, f"(folder) want {want}; {_short(info)}")
    yield tally


def node_mailparser() -> Iterator[Tally]:
    tally = Tally("node-mailparser")
    node = CORPUS / "node-mailparser"
    for name, entry in sorted(_load(node / "expected.json").items()):
        path = node / name
        tally.files += 1
        info = run(path)
        if entry.get("kind") == "DSN":
            tally.hard(info, name, _evidence(info))
            tally.check("kind", info["kind"] == "bounce", name, _short(info))
            _final_delay(tally, info, "bounce", name)
            statuses = [r["status"] for r in info["recipients"]]
            tally.check("recall", "5.1.1" in statuses, name, _short(info))
        else:
            tally.hard(info, name, _never)
            tally.check("kind", info["kind"] == "other", name, f"want other; {_short(info)}")
    yield tally


def ruby_mail() -> Iterator[Tally]:
    tally = Tally("ruby-mail-fixtures")
    ruby = CORPUS / "ruby-mail-fixtures"
    for name, entry in sorted(_load(ruby / "expected.json").items()):
        path = ruby / name
        if not path.is_file():
            continue
        tally.files += 1
        info = run(path)
        if entry.get("kind") != "DSN":
            tally.hard(info, name, _never)
            continue
        want = "bounce" if entry["bounced"] else "delay"
        tally.check("kind", info["kind"] == want, name, f"want {want}; {_short(info)}")
        _final_delay(tally, info, want, name)
        if "final_recipient" in entry:
            address = entry["final_recipient"].partition(";")[2].strip().lower()
            tally.hard(info, name, _in([address]))
            got = _by_address(info)
            tally.check("recall", address in got, name, _short(info))
            status = got[address]["status"] if address in got else None
            tally.check("kind", status == entry["error_status"], name, f"status {status}")
        else:
            tally.hard(info, name, _evidence(info))
            tally.check("recall", bool(info["recipients"]), name, _short(info))
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
            tally.hard(info, name, _never)
            tally.check(
                "feedback type",
                info["kind"] == "complaint" and info["feedback_type"] == want,
                name,
                f"want {want}; {_short(info)}",
            )
        elif stem.isdigit() or stem in ("5.1.1", "hotmailbounce") or stem.startswith("exchange"):
            tally.hard(info, name, _evidence(info))
            tally.check("kind", info["kind"] in BOUNCE_KINDS, name, f"want bounce; {_short(info)}")
            tally.check("recall", bool(info["recipients"]), name, _short(info))
        elif stem.startswith("vac") or stem == "unsubscribe":
            tally.hard(info, name, _never)
            tally.check("kind", info["kind"] == "other", name, f"want other; {_short(info)}")
        else:
            tally.hard(info, name, _evidence(info))
    yield tally


# Files of these corpora that are themselves delivery reports (read by hand): not ordinary.
_GENUINE_REPORTS = {
    "cpython-test-email/data/msg_16.txt",  # "Delivery Notification: Delivery has failed"
    "cpython-test-email/data/msg_25.txt",  # multipart/report DSN, too many hops
    "cpython-test-email/data/msg_43.txt",  # multipart/report DSN, banned attachment
    "python-mail-parser/tests/mails/mail_malformed_2",  # MailSite DSN, mailbox full
}


def _ordinary(root_name: str, label: str) -> Iterator[Tally]:
    tally = Tally(label)
    root = CORPUS / root_name
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix in (".json", ".md", ".csv") or "LICENSE" in path.name:
            continue
        if path.name == "NOTICE.txt":
            continue
        rel = str(path.relative_to(CORPUS))
        tally.files += 1
        info = run(path)
        genuine = rel in _GENUINE_REPORTS
        want = "bounce" if genuine else "other"
        ok = info["kind"] in BOUNCE_KINDS if genuine else info["kind"] == "other"
        tally.check("kind", ok, rel, f"want {want}; {_short(info)}")
        tally.hard(info, rel, _evidence(info) if genuine else _never)
    yield tally


def cpython() -> Iterator[Tally]:
    yield from _ordinary("cpython-test-email", "cpython-test-email")


def mail_parser() -> Iterator[Tally]:
    yield from _ordinary("python-mail-parser", "python-mail-parser")


def _listed(root: Path, label: str, *, upstream_hard: bool) -> Iterator[Tally]:
    """A bench/data collection: ``expected.json`` with kind, addresses, temporary."""
    tally = Tally(label)
    for name, entry in sorted(_load(root / "expected.json").items()):
        path = root / ("data" if (root / "data").is_dir() else "") / name
        if not path.is_file():
            path = root / name
        tally.files += 1
        info = run(path)
        if entry["kind"] == "other":
            tally.hard(info, name, _never)
            tally.check("kind", info["kind"] == "other", name, f"want other; {_short(info)}")
            continue
        if entry["kind"] in ("report", "unasserted"):
            # Upstream names no failed address: a hard flag needs the report's own words.
            tally.hard(info, name, _evidence(info))
            if entry["kind"] == "report":
                ok = info["kind"] in BOUNCE_KINDS
                tally.check("kind", ok, name, f"want a report; {_short(info)}")
            continue
        addresses = entry.get("addresses", [])
        tally.hard(info, name, _in(addresses))
        tally.check("kind", info["kind"] in BOUNCE_KINDS, name, f"want a report; {_short(info)}")
        want_kind = "delay" if entry.get("temporary") else "bounce"
        for address in addresses:
            found = _find(info, address)
            tally.check("recall", found is not None, name, f"want {address}; {_short(info)}")
            tally.check(
                "final/delay",
                found is not None and found.get("kind") == want_kind,
                name,
                f"want {want_kind} for {address}; {_short(info)}",
            )
            if upstream_hard and "upstream_hard" in entry:
                hard = found is not None and bool(found["hard"])
                tally.check("hard/soft", hard is entry["upstream_hard"], name, _short(info))
        if not addresses:
            _final_delay(tally, info, want_kind, name)
    yield tally


def flufl() -> Iterator[Tally]:
    yield from _listed(DATA / "flufl-bounce", "flufl-bounce", upstream_hard=False)


def baunsu() -> Iterator[Tally]:
    yield from _listed(DATA / "baunsu", "baunsu (held out)", upstream_hard=True)


def bounced() -> Iterator[Tally]:
    yield from _listed(DATA / "bounced", "bounced (held out)", upstream_hard=False)


SOURCES: tuple[Callable[[], Iterator[Tally]], ...] = (
    sisimai,
    bounceparser,
    php,
    flanker,
    parsedmarc,
    email_arf,
    mail_parser,
    node_mailparser,
    ruby_mail,
    cpython,
    flufl,
    baunsu,
    bounced,
)


def _cell(agree: int, total: int) -> str:
    return f"{agree:>4}/{total:<4} {100 * agree / total:5.1f}%" if total else " " * 16


def _row(tally: Tally) -> str:
    cells = []
    for metric in METRICS:
        if metric == "hard flags":
            cells.append(f"{tally.wrong_hard:>4} wrong/{tally.hard_flags:<5}")
            continue
        agree, total = tally.counts.get(metric, [0, 0])
        cells.append(_cell(agree, total))
    return f"{tally.name:<38} {tally.files:>5}  " + "  ".join(f"{c:>16}" for c in cells)


def _meets(tally: Tally) -> list[str]:
    """The per-corpus targets this corpus misses (none for a corpus with no bounces)."""
    missed = []
    for metric, target in CORPUS_TARGETS.items():
        agree, total = tally.counts.get(metric, [0, 0])
        if total and agree / total < target:
            missed.append(f"{metric} {100 * agree / total:.1f}% < {100 * target:.0f}%")
    if tally.wrong_hard:
        missed.append(f"{tally.wrong_hard} hard flag(s) on an address that did not fail")
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--failures", action="store_true", help="list every disagreement")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if not CORPUS.is_dir():
        print(f"corpus not found at {CORPUS} (set MAILGATE_CORPUS)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    tallies = [tally for source in SOURCES for tally in source()]
    elapsed = time.perf_counter() - started

    header = f"{'corpus':<38} {'files':>5}  " + "  ".join(f"{m:>16}" for m in METRICS)
    print(header)
    print("-" * len(header))
    totals: dict[str, list[int]] = {}
    for tally in tallies:
        if tally.name in HELD_OUT:
            continue
        print(_row(tally))
        for metric in METRICS:
            agree, total = tally.counts.get(metric, [0, 0])
            sum_ = totals.setdefault(metric, [0, 0])
            sum_[0] += agree
            sum_[1] += total
    print("-" * len(header))
    for tally in tallies:
        if tally.name in HELD_OUT:
            print(_row(tally) + "   (held out: never used for tuning)")
    print("-" * len(header))
    ok = True
    for tally in tallies:
        missed = _meets(tally)
        if missed:
            ok = False
            print(f"BELOW TARGET {tally.name}: {'; '.join(missed)}")
    for metric, target in TOTAL_TARGETS.items():
        agree, total = totals.get(metric, [0, 0])
        share = agree / total if total else 0.0
        ok = ok and share >= target
        verdict = "ok" if share >= target else "BELOW TARGET"
        figure = f"{agree}/{total} = {100 * share:.1f}%"
        print(f"{metric:<14} {figure}  (target {100 * target:.0f}%) {verdict}")
    targets = ", ".join(f"{m} >= {100 * t:.0f}%" for m, t in CORPUS_TARGETS.items())
    print(f"per corpus: {targets}, 0 wrong hard flags: {'ok' if ok else 'NOT MET'}")
    print(f"{len(_cache)} files in {elapsed:.1f}s")
    if args.failures:
        for tally in tallies:
            for line in tally.failures:
                print(f"[{tally.name}] {line}")
    if args.json is not None:
        figures = {
            t.name: {
                **{m: t.counts.get(m, [0, 0]) for m in METRICS if m != "hard flags"},
                "hard flags": [t.wrong_hard, t.hard_flags],
                "files": t.files,
            }
            for t in tallies
        }
        args.json.write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
