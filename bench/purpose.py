"""The purpose check on labelled mail: precision, recall, and false positives on real receipts.

    .venv/bin/python bench/purpose.py [--verbose] [--corpus ../shared/corpus]

Every message is submitted as the CRM that mislabels it would: ``X-Mailgate-Category:
transactional``. A promotional message the check reads as commercial is a true positive
(``promotional-content`` is raised), a transactional one it reads as commercial a false
positive. Sets:

* ``tests/data/purpose/dealer-mail.toml``: hand-written dealer mail, labelled by primary
  purpose, in a ``tune`` part (looked at while the phrase lists were adjusted) and a
  ``held-out`` part (written before, never looked at while tuning), reported apart;
* real transactional templates, when the corpus is there: 10 of the 11 Postmark templates
  (``postmark-templates/templates-inlined/basic-full``: receipt, invoice, dunning, password
  reset, welcome, trial notices, ...) with the subjects such mail carries, and Lee Munroe's
  "Simple Transactional Email". Postmark's ``example`` is left out: it is a showcase of
  every component (headings, buttons, a discount-code block), not a message with a purpose.

It also reports the inference for unlabelled mail (the same messages without the header):
how many transactional ones are read as transactional (the rest stay commercial, the safe
side) and whether any promotional one is read as transactional (must be none).

Figures (2 shared vCPUs; ``classify`` takes about 0.7 ms for a 26 kB receipt with text and
HTML parts, 5 ms for a 1 MB body, of which it reads the first 8,000 characters):

  flagged as commercial when labelled transactional
    set        promo  trans  TP  FP  FN  precision  recall  FP rate
    tune          10     10  10   0   0       1.00    1.00     0.00
    held-out       5      5   5   0   0       1.00    1.00     0.00
    corpus         0     11   0   0   0          -       -     0.00
  receipts (receipt, invoice, dunning, repair-order and parts totals): 0 of 8 flagged
  unlabelled: 0 promotional read as transactional; 24 of 26 transactional read as such

The held-out part is small (10 messages, written by the same hand as the tuning part), so
these figures bound the obvious failures rather than measure the rate on a CRM's real
traffic; the two unlabelled transactional messages left commercial are Postmark's welcome
and Lee Munroe's sample, whose openings show no transaction (the safe side).
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.mail.message import ParseLimits, parse
from gateway.pipeline.purpose import classify

ROOT = Path(__file__).resolve().parents[1]
LABELLED = ROOT / "tests" / "data" / "purpose" / "dealer-mail.toml"
DEFAULT_CORPUS = ROOT.parent.parent / "shared" / "corpus"
LIMITS = ParseLimits(max_header_bytes=102_400, max_mime_depth=100)

# The Postmark templates carry no subject: these are the ones such mail is sent with.
POSTMARK_SUBJECTS = {
    "receipt": ("Your receipt from [Product Name]", True),
    "invoice": ("Your [Product Name] invoice is available", True),
    "dunning": ("We couldn't process your payment", True),
    "password-reset": ("Reset your [Product Name] password", False),
    "password-reset-help": ("Password reset help", False),
    "welcome": ("Welcome to [Product Name], {{name}}!", False),
    "user-invitation": ("{{invite_sender_name}} invited you to [Product Name]", False),
    "comment-notification": ("New comment on {{project}}", False),
    "trial-expiring": ("Your [Product Name] trial ends in 3 days", False),
    "trial-expired": ("Your [Product Name] trial has expired", False),
}


@dataclass(frozen=True)
class Sample:
    name: str
    label: str  # promotional | transactional
    split: str  # tune | held-out | corpus
    subject: str
    text: str
    html: str
    receipt: bool


def raw_message(sample: Sample, category: str | None) -> bytes:
    head = (
        "From: Dealer <sales@dealer.example>\r\nTo: <customer@example.org>\r\n"
        f"Subject: {sample.subject}\r\nDate: Mon, 05 Jan 2026 09:00:00 +0000\r\n"
        "Message-ID: <bench@dealer.example>\r\nMIME-Version: 1.0\r\n"
    )
    if category:
        head += f"X-Mailgate-Category: {category}\r\n"
    text = sample.text.replace("\n", "\r\n")
    markup = sample.html.replace("\n", "\r\n")
    if text and markup:
        body = (
            'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            f"{text}\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n{markup}\r\n--b--\r\n"
        )
    else:
        kind, content = ("html", markup) if markup else ("plain", text)
        body = (
            f"Content-Type: text/{kind}; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
            f"\r\n{content}\r\n"
        )
    return (head + body).encode()


def labelled() -> list[Sample]:
    data = tomllib.loads(LABELLED.read_text(encoding="utf-8"))
    return [
        Sample(
            m["name"],
            m["label"],
            m["split"],
            m["subject"],
            m.get("text", ""),
            m.get("html", ""),
            m.get("receipt", False),
        )
        for m in data["message"]
    ]


def corpus(root: Path) -> list[Sample]:
    found: list[Sample] = []
    postmark = root / "postmark-templates" / "templates-inlined" / "basic-full"
    for name, (subject, receipt) in POSTMARK_SUBJECTS.items():
        folder = postmark / name
        if folder.is_dir():
            text = (folder / "content.txt").read_text(encoding="utf-8")
            markup = (folder / "content.html").read_text(encoding="utf-8")
            found.append(
                Sample(
                    f"postmark/{name}", "transactional", "corpus", subject, text, markup, receipt
                )
            )
    munroe = root / "leemunroe-responsive-html-email-template" / "email.html"
    if munroe.is_file():
        found.append(
            Sample(
                "leemunroe/email",
                "transactional",
                "corpus",
                "Simple Transactional Email",
                "",
                munroe.read_text(encoding="utf-8"),
                False,
            )
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="one line per message")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = parser.parse_args()
    samples = labelled() + corpus(args.corpus)
    flagged: dict[str, bool] = {}
    inferred: dict[str, str] = {}
    for sample in samples:
        purpose = classify(parse(raw_message(sample, "transactional"), LIMITS))
        flagged[sample.name] = purpose.category == "commercial"
        unlabelled = classify(parse(raw_message(sample, None), LIMITS))
        inferred[sample.name] = unlabelled.category
        if args.verbose:
            mark = "FLAG" if flagged[sample.name] else "ok  "
            print(
                f"{sample.split:9} {sample.label:13} {mark} offer={purpose.offer:<4g} "
                f"deal={purpose.transaction:<4g} unlabelled={unlabelled.category:13} "
                f"{sample.name}: {purpose.why or '-'} {list(purpose.signals)[:3]}"
            )
    print("flagged as commercial when labelled transactional")
    print("  set        promo  trans  TP  FP  FN  precision  recall  FP rate")
    for split in ("tune", "held-out", "corpus"):
        part = [s for s in samples if s.split == split]
        if not part:
            continue
        promo = [s for s in part if s.label == "promotional"]
        trans = [s for s in part if s.label == "transactional"]
        tp = sum(flagged[s.name] for s in promo)
        fp = sum(flagged[s.name] for s in trans)
        fn = len(promo) - tp
        precision = f"{tp / (tp + fp):.2f}" if tp + fp else "-"
        recall = f"{tp / len(promo):.2f}" if promo else "-"
        rate = f"{fp / len(trans):.2f}" if trans else "-"
        print(
            f"  {split:9} {len(promo):6} {len(trans):6} {tp:3} {fp:3} {fn:3} "
            f"{precision:>10} {recall:>7} {rate:>8}"
        )
    receipts = [s for s in samples if s.receipt]
    wrong = [s.name for s in receipts if flagged[s.name]]
    listed = f": {', '.join(wrong)}" if wrong else ""
    print(
        "  receipts (receipt, invoice, dunning, repair-order and parts totals): "
        f"{len(wrong)} of {len(receipts)} flagged{listed}"
    )
    promo_as_trans = [
        s.name for s in samples if s.label == "promotional" and inferred[s.name] != "commercial"
    ]
    trans = [s for s in samples if s.label == "transactional"]
    read = sum(inferred[s.name] == "transactional" for s in trans)
    print(
        f"  unlabelled: {len(promo_as_trans)} promotional read as transactional"
        f"{' (' + ', '.join(promo_as_trans) + ')' if promo_as_trans else ''}; "
        f"{read} of {len(trans)} transactional read as such"
    )


if __name__ == "__main__":
    main()
