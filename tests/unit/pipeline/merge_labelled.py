"""The labelled set for unfilled-merge-field and its precision and recall.

Three sources, each split into a part the detector was tuned on and a part kept out:

* ``tests/data/merge_fields/{tune,holdout}.toml``: message parts shaped like CRM mail, in
  the merge syntaxes vendors document, and filled text that looks like a field but is not
  (CSS, MSO comments, prices and notes in brackets, hashtags, percentages, URL escapes,
  entities, quoted ``<<attachment>>`` lines).
* Real templates from the shared corpus (Postmark's transactional set, Lee Munroe's
  responsive template), their placeholders rewritten into each CRM syntax: unfilled, and
  filled with values. Held out: invoice, trial-expiring, user-invitation, the inlined
  Lee Munroe page.
* Every real message in the shared corpus (filled mail: no finding is right). Held out:
  the sisimai and php-bounce-handler sets.

A labelled case with fields is scored twice: as written (a finding is right) and with each
field replaced by a value (no finding is right). Run this module to print the scores::

    .venv/bin/python -m tests.unit.pipeline.merge_labelled
"""

from __future__ import annotations

import html
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

from gateway.findings import CATALOGUE
from gateway.mail.message import MessageRejected, ParseLimits, parse
from gateway.pipeline.base import CheckContext
from gateway.pipeline.merge_fields import html_placeholders, placeholders, unfilled_merge_field
from gateway.policy.model import CheckRule, DealerPolicy
from gateway.types import DealerId, Envelope

DATA = Path(__file__).resolve().parents[2] / "data" / "merge_fields"
CORPUS = Path(__file__).resolve().parents[4] / "shared" / "corpus"
POSTMARK = CORPUS / "postmark-templates" / "templates-inlined" / "basic-full"
LEEMUNROE = CORPUS / "leemunroe-responsive-html-email-template"
LIMITS = ParseLimits(max_header_bytes=102_400, max_mime_depth=100)
HELD_OUT_TEMPLATES = frozenset({"invoice", "trial-expiring", "user-invitation", "email-inlined"})
HELD_OUT_CORPUS = ("sisimai-set-of-emails/", "php-bounce-handler/")
NOT_MESSAGES = {
    "flanker/tests/fixtures/mailbox_valid.txt": "a list of test addresses, not a message",
}
NOT_MAIL = {".json", ".md", ".csv", ".dat", ".html", ".py", ".gif", ".jpg", ".png", ".pdf",
            ".tiff", ".zip", ".gitattributes", ".wav", ".rst"}  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One labelled message: its parts, and the placeholders it holds (none: filled)."""

    id: str
    split: str  # "tune" or "holdout"
    subject: str
    text: str | None
    html: str | None
    fields: tuple[str, ...]

    def filled(self) -> Case:
        """The same message with every field replaced by a value."""

        def fill(part: str | None) -> str | None:
            if part is None:
                return None
            for field in sorted(self.fields, key=len, reverse=True):
                part = part.replace(field, value_for(field))
            return part

        return Case(
            f"{self.id} (filled)",
            self.split,
            fill(self.subject) or "",
            fill(self.text),
            fill(self.html),
            (),
        )


def value_for(field: str) -> str:
    lowered = field.lower()
    if any(word in lowered for word in ("url", "link", "unsub", "archive", "remove", "web")):
        return "https://example-motors.test/go"
    return "Sam Smith"


def labelled_cases() -> Iterator[Case]:
    for split in ("tune", "holdout"):
        with (DATA / f"{split}.toml").open("rb") as handle:
            for row in tomllib.load(handle)["case"]:
                part, text = row["part"], row["text"]
                yield Case(
                    row["id"],
                    split,
                    text if part == "subject" else "Your appointment",
                    text if part == "text" else None,
                    text if part == "html" else None,
                    tuple(row["fields"]),
                )


# -- real templates rewritten into each syntax ------------------------------------------------

# Blanks Postmark left for whoever adopts a template (not per-recipient fields): a dealer
# writes its own names in before the template is used, and so does this set. Left in, they
# are unfilled placeholders too, and the check reports them.
BLANKS = {
    "[Product Name]": "Example Motors",
    "[Company Name, LLC]": "Example Motors LLC",
    "[Sender Name]": "Sam at Example Motors",
    "[email address]": "service@example-motors.test",
    "[Credit Card Statement Name]": "EXAMPLE MOTORS",
}
SECTION = re.compile(r"\{\{[#/^][^}]*\}\}")
FIELD = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")


def _camel(name: str) -> str:
    return "".join(word.capitalize() for word in name.split("_"))


def _title(name: str) -> str:
    return " ".join(word.capitalize() for word in name.split("_"))


# syntax -> (field name, "text" or "html") -> placeholder as the CRM would leave it
SYNTAXES: dict[str, Callable[[str, str], str]] = {
    "mustache": lambda n, k: f"{{{{{n}}}}}",
    "mailchimp": lambda n, k: f"*|{n.upper()}|*",
    "salesforce": lambda n, k: f"{{!Contact.{_camel(n)}}}",
    "hubspot": lambda n, k: f"{{{{ contact.{n.replace('_', '')} }}}}",
    "marketo": lambda n, k: f"{{{{lead.{_title(n)}}}}}",
    "zoho": lambda n, k: f"${{Contacts.{_title(n)}}}",
    "activecampaign": lambda n, k: f"%{n.replace('_', '').upper()}%",
    "constant-contact": lambda n, k: f"[[{n.replace('_', '').upper()}]]",
    "getresponse": lambda n, k: f"[[{n}]]",
    "sendgrid-legacy": lambda n, k: f"-{n}-",
    "liquid": lambda n, k: f'{{{{ {n} | default: "" }}}}',
    "angle": lambda n, k: f"&lt;&lt;{_title(n)}&gt;&gt;" if k == "html" else f"<<{_title(n)}>>",
    "hash": lambda n, k: f"#{_camel(n)}#",
    "word": lambda n, k: f"«{_camel(n)}»",
    "keap": lambda n, k: f"~Contact.{_camel(n)}~",
    "aweber": lambda n, k: f"{{!{n}}}",
    "mautic": lambda n, k: f"{{contactfield={n}}}",
    "campaign-monitor": lambda n, k: f"[{n.replace('_', '')},fallback=]",
    "erb": lambda n, k: f"<%= {n} %>",
    "notify": lambda n, k: f"(({n}))",
    "brackets": lambda n, k: f"[{n.replace('_', ' ').upper()}]",
    "dollar": lambda n, k: f"${_camel(n)}$",
    "ampscript": lambda n, k: f"%%{_camel(n)}%%",
}


def _rewrite(template: str, syntax: str, kind: str) -> tuple[str, list[str]]:
    fields: list[str] = []
    for blank, value in BLANKS.items():
        template = template.replace(blank, value)

    def placeholder(match: re.Match[str]) -> str:
        field = SYNTAXES[syntax](match.group(1), kind)
        fields.append(field)
        return field

    return FIELD.sub(placeholder, SECTION.sub("", template)), fields


def _corpus_templates() -> Iterator[tuple[str, str, str]]:
    if POSTMARK.is_dir():
        for path in sorted(POSTMARK.iterdir()):
            if (path / "content.html").is_file():
                yield (
                    path.name,
                    (path / "content.txt").read_text(),
                    (path / "content.html").read_text(),
                )
    for page in ("email", "email-inlined"):
        path = LEEMUNROE / f"{page}.html"
        if path.is_file():
            doc = path.read_text().replace("Hi there", "Hi {{first_name}}")
            doc = doc.replace('href="http://htmlemail.io/blog"', 'href="{{unsubscribe_url}}"')
            yield page, "Hi {{first_name}},\nThanks.\n", doc


def template_cases() -> Iterator[Case]:
    for name, text, doc in _corpus_templates():
        split = "holdout" if name in HELD_OUT_TEMPLATES else "tune"
        for syntax in SYNTAXES:
            new_text, text_fields = _rewrite(text, syntax, "text")
            new_html, html_fields = _rewrite(doc, syntax, "html")
            yield Case(
                f"{name}/{syntax}",
                split,
                "Your account",
                new_text,
                new_html,
                tuple(dict.fromkeys(text_fields + html_fields)),
            )


def corpus_messages() -> Iterator[tuple[str, str, bytes]]:
    """(relative path, split, bytes) of every real message in the shared corpus."""
    if not CORPUS.is_dir():
        return
    for path in sorted(CORPUS.rglob("*")):
        name = path.relative_to(CORPUS).as_posix()
        if (
            not path.is_file()
            or path.suffix in NOT_MAIL
            or path.name.startswith(("LICENSE", "MIT-", "MANIFEST"))
            or name.startswith(("postmark-templates/", "leemunroe-"))
            or name in NOT_MESSAGES
        ):
            continue
        yield name, "holdout" if name.startswith(HELD_OUT_CORPUS) else "tune", path.read_bytes()


# -- scoring ----------------------------------------------------------------------------------


def _policy() -> tuple[DealerPolicy, CheckContext]:
    dealer = DealerPolicy(
        dealer_id=DealerId("example-motors"),
        name="Example Motors",
        auth_users=frozenset({"example-crm"}),
        from_domains=frozenset({"example-motors.test"}),
        contacts=(),
        checks=MappingProxyType({c: CheckRule(k.default_action) for c, k in CATALOGUE.items()}),
    )
    now = datetime(2026, 6, 1, tzinfo=UTC)
    envelope = Envelope(dealer.dealer_id, "sales@example-motors.test", ("buyer@customer.test",),
                        "127.0.0.1", "example-crm", "crm", now)  # fmt: skip
    return dealer, CheckContext(envelope=envelope, now=now)


DEALER, CTX = _policy()


def message(case: Case) -> bytes:
    head = (
        "From: Example Motors <sales@example-motors.test>\r\nTo: buyer@customer.test\r\n"
        f"Subject: {case.subject}\r\nDate: Mon, 1 Jun 2026 10:00:00 +0000\r\n"
        "Message-ID: <t@example-motors.test>\r\nMIME-Version: 1.0\r\n"
    )
    parts = [(kind, body) for kind, body in (("plain", case.text), ("html", case.html)) if body]
    if not parts:
        parts = [("plain", "Hello")]
    body = "".join(
        f"--b\r\nContent-Type: text/{kind}; charset=utf-8\r\nContent-Transfer-Encoding: 8bit"
        f"\r\n\r\n{content}\r\n"
        for kind, content in parts
    )
    return (
        head + 'Content-Type: multipart/alternative; boundary="b"\r\n\r\n' + body + "--b--\r\n"
    ).encode()


def flagged(raw: bytes) -> bool | None:
    """Whether the check finds a placeholder; ``None`` when the message is refused whole."""
    try:
        msg = parse(raw, LIMITS)
    except MessageRejected:
        return None
    return any(True for _ in unfilled_merge_field(msg, DEALER, CTX))


def found_fields(case: Case) -> set[str]:
    fields = placeholders(case.subject) + placeholders(case.text or "")
    fields += html_placeholders(case.html or "")
    return {html.unescape(field) for field in fields}


@dataclass
class Score:
    """Counts for one split of one source."""

    tp: int = 0
    fn: int = 0
    fp: int = 0
    tn: int = 0
    fields: int = 0
    fields_found: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    def line(self, label: str) -> str:
        field_recall = self.fields_found / self.fields if self.fields else 1.0
        return (
            f"{label:<26} unfilled {self.tp + self.fn:4}  filled {self.fp + self.tn:5}  "
            f"TP {self.tp:4} FN {self.fn:3} FP {self.fp:3} TN {self.tn:5}  "
            f"precision {self.precision:.3f}  recall {self.recall:.3f}  "
            f"fields found {field_recall:.3f}"
        )


@dataclass
class Report:
    """Scores per source and split, and every wrong answer."""

    scores: dict[tuple[str, str], Score]
    misses: list[str]  # unfilled cases with no finding
    false_alarms: list[str]  # filled cases with a finding
    missed_fields: list[str]


def score(sources: tuple[str, ...] = ("labelled", "templates", "corpus")) -> Report:
    report = Report({}, [], [], [])

    def tally(source: str, case: Case) -> None:
        entry = report.scores.setdefault((source, case.split), Score())
        for variant in (case, case.filled()) if case.fields else (case,):
            hit = flagged(message(variant))
            if variant.fields:
                entry.tp += bool(hit)
                entry.fn += not hit
                if not hit:
                    report.misses.append(f"{source}/{variant.split}: {variant.id}")
                found = found_fields(variant)
                for field in variant.fields:
                    entry.fields += 1
                    if html.unescape(field) in found:
                        entry.fields_found += 1
                    else:
                        where = f"{source}/{variant.split}: {variant.id}"
                        report.missed_fields.append(f"{where}: {field}")
            else:
                entry.fp += bool(hit)
                entry.tn += not hit
                if hit:
                    report.false_alarms.append(f"{source}/{variant.split}: {variant.id}")

    if "labelled" in sources:
        for case in labelled_cases():
            tally("labelled", case)
    if "templates" in sources:
        for case in template_cases():
            tally("templates", case)
    if "corpus" in sources:
        for name, split, raw in corpus_messages():
            entry = report.scores.setdefault(("corpus", split), Score())
            hit = flagged(raw)
            if hit is None:
                continue
            entry.fp += hit
            entry.tn += not hit
            if hit:
                report.false_alarms.append(f"corpus/{split}: {name}")
    return report


def main() -> None:
    report = score()
    totals = {"tune": Score(), "holdout": Score()}
    for (source, split), entry in sorted(report.scores.items()):
        print(entry.line(f"{source} / {split}"))
        total = totals[split]
        for name in ("tp", "fn", "fp", "tn", "fields", "fields_found"):
            setattr(total, name, getattr(total, name) + getattr(entry, name))
    for split, total in totals.items():
        print(total.line(f"ALL / {split}"))
    for title, rows in (
        ("missed (unfilled, no finding)", report.misses),
        ("false alarms (filled, finding)", report.false_alarms),
        ("fields not reported", report.missed_fields),
    ):
        print(f"\n{title}: {len(rows)}")
        for row in rows[:200]:
            print("  " + row)


if __name__ == "__main__":
    main()
