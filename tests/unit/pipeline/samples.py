"""Sample messages for the inspection checks: one behaviour per file, parsed once."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path

from gateway import pipeline
from gateway.mail.message import ParsedMessage, ParseLimits, parse
from gateway.pipeline.base import CheckContext, Finding
from gateway.policy.model import DealerPolicy

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "messages" / "inspection"
LIMITS = ParseLimits(max_header_bytes=102_400, max_mime_depth=100)
# One table row: (sample file, codes that must appear, codes that must not).
Row = tuple[str, set[str], set[str]]


@cache
def sample(name: str) -> ParsedMessage:
    return parse((SAMPLES / name).read_bytes(), LIMITS)


def findings(name: str, dealer: DealerPolicy, ctx: CheckContext) -> tuple[Finding, ...]:
    return pipeline.run(sample(name), dealer, ctx)


def check_row(row: Row, dealer: DealerPolicy, ctx: CheckContext) -> tuple[Finding, ...]:
    name, must, must_not = row
    found = findings(name, dealer, ctx)
    codes = {f.code for f in found}
    assert must <= codes, f"{name}: missing {must - codes}, got {sorted(codes)}"
    assert not (must_not & codes), f"{name}: unexpected {must_not & codes}"
    return found


def ids(rows: Iterable[Row]) -> list[str]:
    return [row[0].removesuffix(".eml") for row in rows]
