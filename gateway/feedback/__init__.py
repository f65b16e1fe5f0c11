"""Feedback from mailbox providers: complaints (ARF and variants) and bounces (DSN and others).

The pure parsers live here and return the frozen records of ``reports``:

- ``parse.classify_message(raw) -> FeedbackResult``: complaint, bounce, delay or other;
- ``arf.parse_arf(raw) -> ComplaintReport | None``;
- ``dsn.parse_bounce(raw) -> BounceReport | None``.

``mail`` reads a report into bounded MIME entities, ``refs`` finds the tracking
references in it, ``classify`` decides hard or soft and why. None of them does I/O.
"""

from __future__ import annotations

from gateway.feedback.arf import parse_arf
from gateway.feedback.dsn import parse_bounce
from gateway.feedback.parse import classify_message
from gateway.feedback.reports import (
    BounceKind,
    BounceReason,
    BounceRecipient,
    BounceReport,
    ComplaintReport,
    FeedbackKind,
    FeedbackResult,
)

__all__ = [
    "BounceKind",
    "BounceReason",
    "BounceRecipient",
    "BounceReport",
    "ComplaintReport",
    "FeedbackKind",
    "FeedbackResult",
    "classify_message",
    "parse_arf",
    "parse_bounce",
]
