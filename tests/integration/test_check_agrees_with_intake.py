"""``mailgate check`` says what intake does: every corpus file through both, verdicts compared.

The check side is the CLI entry (``gateway.cli.main``, all files in one invocation, JSON
Lines). The gateway side is ``Intake`` over a real SQLite store, signing with the real
signer, and what it did is read back from what it leaves behind: the reply, the stored
copy (state, findings, ``X-Mailgate-Findings``) and its metrics (the action it recorded
and one count per finding). The dealer accepts (and records) a foreign From: domain
instead of refusing it, so that the other checks decide the verdict of each file.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.cli.check import check_message
from gateway.cli.main import main
from gateway.clock import SystemClock
from gateway.dkim.signing import DkimSigner
from gateway.intake.service import Intake, submission_limits
from gateway.metrics import Metrics
from gateway.policy.store import PolicyStore
from gateway.settings import load_settings
from gateway.storage.base import open_storage
from gateway.tracking import RefCodec
from gateway.types import Action, DealerId, Envelope, MessageId, MessageState
from tests.shipped import copy_shipped

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("MAILGATE_CORPUS") or REPO.parent / "shared" / "corpus")
DEALER = DealerId("corpus-motors")
DEALER_FILE = """\
dealer_id = "corpus-motors"
name = "Corpus Motors"
auth_users = ["corpus-crm"]
from_domains = ["corpus-motors.test"]
contacts = ["gm@corpus-motors.test"]

[checks]
from-domain-not-allowed = { action = "accept" }
"""

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not present")


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.rglob("*") if p.is_file())


def tag_header(data: bytes) -> str | None:
    """The unfolded ``X-Mailgate-Findings`` value of a stored copy, or ``None``."""
    head = data.split(b"\r\n\r\n", 1)[0]
    for field in re.split(rb"\r\n(?![ \t])", head):
        name, _, value = field.partition(b":")
        if name.lower() == b"x-mailgate-findings":
            return re.sub(rb"\r\n([ \t])", rb"\1", value).decode().strip()
    return None


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name in ("mailgate_messages_received_total", "mailgate_findings_total")
    }


def delta(
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    after: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    name: str,
    label: str,
) -> Counter[str]:
    """How much each ``label`` value of metric ``name`` grew."""
    grown: Counter[str] = Counter()
    for key, value in after.items():
        if key[0] == name and value > before.get(key, 0.0):
            grown[dict(key[1])[label]] += int(value - before.get(key, 0.0))
    return grown


async def test_check_and_intake_agree_on_every_corpus_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = corpus_files()
    assert len(files) > 1000  # the whole corpus, not a sample
    policies = copy_shipped(tmp_path / "policies")
    (policies / "dealers" / "corpus-motors.toml").write_text(DEALER_FILE)

    # What `mailgate check` says, for every file in one run.
    argv = ["check", *map(str, files), "--json", "--policies", str(policies), "--dealer", DEALER]
    main(argv)
    said = {}
    for line in capsys.readouterr().out.splitlines():
        report = json.loads(line)
        said[report["file"]] = report
    assert len(said) == len(files)

    # What the gateway does: one Intake over one SQLite store for all files.
    settings = load_settings(None)
    # Only so that a loaded machine cannot turn a slow file into a 451; the budget is no
    # part of what is decided.
    submission = settings.submission.model_copy(update={"check_time_budget": timedelta(minutes=2)})
    storage = await open_storage(f"sqlite:///{tmp_path / 'mailgate.db'}")
    registry = CollectorRegistry()
    store = PolicyStore(policies)
    clock = SystemClock()
    intake = Intake(
        storage=storage,
        policies=store,
        refs=RefCodec(b"corpus-test-reference-key-0123456789"),
        signer=DkimSigner(store, clock),
        clock=clock,
        metrics=Metrics(registry),
        settings=submission,
        hostname=settings.server.hostname,
    )
    dealer = store.current.dealer(DEALER)
    assert dealer is not None
    limits = submission_limits(submission)
    mismatches: list[str] = []
    counted: Counter[str] = Counter()
    try:
        for n, path in enumerate(files):
            expected = said[str(path)]
            env = Envelope(
                dealer_id=DEALER,
                mail_from="crm@corpus-motors.test",
                # One recipient per file: no file is a duplicate of another's send.
                rcpt_tos=(f"customer{n}@customer.test",),
                peer="127.0.0.1",
                auth_user="corpus-crm",
                helo="crm.corpus-motors.test",
                received_at=datetime.now(UTC),
            )
            before = samples(registry)
            reply = await intake.accept(env, path.read_bytes())
            after = samples(registry)
            actions = delta(before, after, "mailgate_messages_received_total", "action")
            codes = delta(before, after, "mailgate_findings_total", "code")
            action = next(iter(actions), "")  # empty: refused before or outside policy
            problems: list[str] = []
            if reply.code >= 400:
                action = "reject" if reply.code >= 500 else "tempfail"
                if expected.get("reply") != reply.line():
                    problems.append(f"reply {reply.line()!r} != {expected.get('reply')!r}")
            else:
                submission_id = reply.text.split()[2]
                stored = await storage.get(MessageId(f"{submission_id}.1"))
                assert stored is not None, reply
                if stored.state is MessageState.HELD:
                    action = "hold"
                check_codes = list(dict.fromkeys(f["code"] for f in expected["findings"]))
                if list(stored.findings) != check_codes:
                    problems.append(f"stored findings {stored.findings} != {check_codes}")
                tags = list(dict.fromkeys(f["code"] for f in expected["findings"]
                                          if f["action"] == "tag"))  # fmt: skip
                if tag_header(stored.data) != (", ".join(tags) if tags else None):
                    problems.append(f"tags {tags} != {tag_header(stored.data)!r}")
                if action == "repair":
                    # The stored copy is the repaired message: nothing in it is left to repair.
                    again = check_message(stored.data, now=env.received_at, limits=limits,
                                          dealer=dealer)  # fmt: skip
                    left = [i.finding.code for i in again.items if i.action is Action.REPAIR]
                    if left:
                        problems.append(f"the stored copy still needs repairs: {left}")
            if action != expected["verdict"]:
                problems.append(f"action {action!r} != {expected['verdict']!r}")
            # Every finding the gateway counted, once each, is one the check reported
            # (a refusal outside policy records none: its reply was compared instead).
            if (reply.code < 400 or actions) and codes != Counter(
                f["code"] for f in expected["findings"]
            ):
                problems.append(f"findings {dict(codes)} != {expected['findings']}")
            if problems:
                mismatches.append(f"{path.relative_to(CORPUS)}: {'; '.join(problems)}")
            counted[action] += 1
    finally:
        await storage.close()
    assert not mismatches, "\n".join(mismatches[:20])
    # The corpus exercises every outcome that needs no stored state.
    assert {"accept", "tag", "repair", "hold", "reject"} <= set(counted), counted
