"""What intake does to a message (``gateway.intake.prepare``) per message, on one core.

``prepare`` is everything short of signing and storing: line endings, one parse, every
check, decide, the header rewrite and the per-recipient copy. Two messages: a typical
dealer email (about 30 KB of table-layout HTML with a text part, built from a real inlined
template) and one with a 1 MB HTML body. Reports the median and 95th percentile time per
message. Target: under 5 ms for the typical email.

    .venv/bin/python bench/checks.py [--rounds N]

The template comes from the shared corpus (``../shared/corpus`` beside the checkout, or
``$MAILGATE_CORPUS``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

from gateway.findings import CATALOGUE
from gateway.intake.prepare import Limits, Stamp, prepare
from gateway.mail.message import ParseLimits
from gateway.pipeline.html import analyse, strip_invisible
from gateway.policy.model import CheckRule, DealerPolicy
from gateway.tracking import RefCodec, new_submission_id
from gateway.types import Action, DealerId, Envelope

CORPUS = Path(
    os.environ.get("MAILGATE_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus")
)
TEMPLATE = CORPUS / "postmark-templates" / "templates-inlined" / "basic-full" / "receipt"
# The [submission] defaults (gateway/settings.py).
LIMITS = Limits(ParseLimits(max_header_bytes=102_400, max_mime_depth=50), max_hops=50)
STAMP = Stamp("mailgate.test", RefCodec(b"bench-reference-key-0123456789"))
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def dealer() -> DealerPolicy:
    return DealerPolicy(
        dealer_id=DealerId("example-motors"),
        name="Example Motors",
        auth_users=frozenset({"example-crm"}),
        from_domains=frozenset({"example-motors.test"}),
        contacts=(),
        checks=MappingProxyType({c: CheckRule(k.default_action) for c, k in CATALOGUE.items()}),
    )


def message(text: str, html: str) -> bytes:
    return (
        "From: Example Motors <sales@example-motors.test>\r\nTo: buyer@customer.test\r\n"
        "Subject: Your service appointment\r\nDate: Mon, 1 Jun 2026 10:00:00 +0000\r\n"
        "Message-ID: <bench@example-motors.test>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{text}\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--b--\r\n"
    ).encode()


def typical() -> bytes:
    """A filled receipt template padded with service rows to about 30 KB."""
    html = (TEMPLATE / "content.html").read_text()
    text = (TEMPLATE / "content.txt").read_text()
    rows = "".join(
        f'<tr><td width="80%" class="purchase_item"><span class="f-fallback">Service item {i}'
        f'</span></td><td class="align-right" width="20%"><span class="f-fallback">$4{i}.00'
        "</span></td></tr>\n"
        for i in range(40)
    )
    html = html.replace("{{#each receipt_details}}", rows)
    for token in ("{{description}}", "{{amount}}", "{{/each}}"):
        html = html.replace(token, "")
    html = html.replace("{{", "").replace("}}", "")
    text = text.replace("{{", "").replace("}}", "")
    return message(text, html)


def big() -> bytes:
    """About 1 MB of table-layout HTML."""
    row = (
        '<tr><td class="cell" style="padding:4px">Stock #{i} 2024 Civic EX, 12,000 miles, '
        '<a href="https://example-motors.test/stock/{i}">details</a></td><td>$21,{i:03d}</td></tr>\n'
    )
    body = "".join(row.format(i=i % 1000) for i in range(7800))
    html = f"<!DOCTYPE html><html><body><table>{body}</table></body></html>"
    return message("Our full inventory list is in the HTML version.", html)


def bench(raw: bytes, rounds: int) -> list[float]:
    policy = dealer()
    envelope = Envelope(policy.dealer_id, "sales@example-motors.test", ("buyer@customer.test",),
                        "127.0.0.1", "example-crm", "crm", NOW)  # fmt: skip
    times = []
    for _ in range(rounds):
        analyse.cache_clear()  # each message is new to the gateway
        strip_invisible.cache_clear()
        submission_id = new_submission_id(NOW)
        started = time.perf_counter()
        prepared = prepare(raw, envelope, policy, limits=LIMITS, stamp=STAMP, now=NOW,
                           submission_id=submission_id)  # fmt: skip
        times.append(time.perf_counter() - started)
        # The benchmark must measure the path that stores a copy, not a refusal.
        assert prepared.action <= Action.TAG and len(prepared.messages) == 1, prepared
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    for label, raw, rounds in (
        ("typical", typical(), args.rounds),
        ("1 MB HTML", big(), max(5, args.rounds // 20)),
    ):
        times = sorted(bench(raw, rounds))
        median = statistics.median(times) * 1000
        p95 = times[int(len(times) * 0.95) - 1] * 1000
        print(f"{label:<10} {len(raw) / 1024:7.1f} KB  median {median:7.2f} ms  p95 {p95:7.2f} ms"
              f"  ({rounds} runs)")  # fmt: skip


if __name__ == "__main__":
    main()
