"""One entry point for received feedback: complaint, bounce, delay or other (pure).

This module owns ``classify_message(raw) -> FeedbackResult``, the call the feedback
listener, ``mailgate feedback parse`` and the accuracy bench make. It reads the message
once and asks the parsers in order of authority: a feedback report first (a complaint
often encloses a message that itself looks like a bounce), then a bounce or delay report.
Anything else, auto-replies included, is ``OTHER``.

Junk never raises. An exception from inside the parsers is a bug and surfaces as
``FeedbackParseError`` (STYLE.md §5 rule 7), with the original exception chained.
"""

from __future__ import annotations

from gateway.errors import FeedbackParseError
from gateway.feedback import arf, dsn
from gateway.feedback import mail as mailmod
from gateway.feedback.reports import FeedbackKind, FeedbackResult


def classify_message(raw: bytes) -> FeedbackResult:
    """Tell what ``raw`` is and return the parsed report, if any."""
    try:
        mail = mailmod.read(raw)
        complaint = arf.complaint_from(mail)
        if complaint is not None:
            return FeedbackResult(FeedbackKind.COMPLAINT, complaint=complaint)
        bounce = dsn.bounce_from(mail)
        if bounce is not None:
            return FeedbackResult(bounce.kind, bounce=bounce)
        return FeedbackResult(FeedbackKind.OTHER)
    except Exception as exc:
        raise FeedbackParseError(f"feedback parser bug: {type(exc).__name__}: {exc}") from exc
