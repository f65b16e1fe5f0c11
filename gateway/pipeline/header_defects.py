"""Check the top-level header section for missing, repeated and over-long fields (pure).

RFC 5322 §3.6 requires a Date: and allows at most one of each of Date:, From:, Sender:,
Reply-To:, To:, Cc:, Bcc:, Message-ID:, In-Reply-To:, References: and Subject:; §2.1.1
limits a line to 998 octets. Receivers disagree on which of two Subject: headers to show,
and many score such mail as spam. The From: cases are the ``missing-from`` and
``multiple-from`` checks in ``headers.py`` (they refuse the message by default), so this
check does not report them again. The gateway itself adds a missing Date: and folds long
lines (``intake``), so by default these findings only tag the message for the sender.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

from gateway.mail.message import ParsedMessage
from gateway.pipeline.base import CheckContext, Finding
from gateway.policy.model import DealerPolicy

MAX_LINE = 998  # RFC 5322 §2.1.1
# RFC 5322 §3.6 "max number of fields = 1", less From: (see headers.py).
_SINGLE = (
    "date", "sender", "reply-to", "to", "cc", "bcc", "message-id", "in-reply-to",
    "references", "subject",
)  # fmt: skip
_LONG_LINE = re.compile(rb"[^\r\n]{%d}" % (MAX_LINE + 1))
_END_OF_HEADER = re.compile(rb"\r?\n\r?\n")


def header_defect(msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext) -> Iterator[Finding]:
    """Find a missing Date:, repeated single-use headers and header lines over 998 octets."""
    if not msg.has_date:
        yield Finding("header-defect", "the message has no Date: header", data={"kind": "missing"})
    counts = Counter(name.lower() for name, _ in msg.headers)
    for name in _SINGLE:
        if counts[name] > 1:
            shown = next(n for n, _ in msg.headers if n.lower() == name)
            yield Finding(
                "header-defect",
                f"the message has {counts[name]} {shown}: headers",
                data={"kind": "repeated", "header": name, "count": str(counts[name])},
            )
    end = _END_OF_HEADER.search(msg.raw)
    block = msg.raw[: end.start()] if end is not None else msg.raw
    long_line = _LONG_LINE.search(block)
    if long_line is not None:
        line_start = block.rfind(b"\n", 0, long_line.start()) + 1
        # A folded line belongs to the field above it; name that field.
        field_start = line_start
        while field_start > 0 and block[field_start : field_start + 1] in (b" ", b"\t"):
            field_start = block.rfind(b"\n", 0, field_start - 1) + 1
        name = block[field_start:].split(b":", 1)[0][:40].decode("ascii", "replace")
        yield Finding(
            "header-defect",
            f"the {name}: header has a line longer than {MAX_LINE} characters",
            data={"kind": "too-long", "header": name.lower()},
        )
