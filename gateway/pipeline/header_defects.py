"""Check the top-level header section for repeated single-use fields (pure).

RFC 5322 §3.6 allows at most one of each of Date:, From:, Sender:, Reply-To:, To:, Cc:,
Bcc:, Message-ID:, In-Reply-To:, References: and Subject:. Receivers disagree on which of
two Subject: headers to show, and many score such mail as spam. The From: cases are the
``missing-from`` and ``multiple-from`` checks in ``headers.py`` (they refuse the message by
default), so this check does not report them again.

A defect the gateway fixes itself is not a finding: intake adds a missing Date: (and
Message-ID:, RFC 6409 §8.3) and folds header lines over 998 octets (RFC 5322 §2.1.1;
one that cannot be folded is refused, ``554 5.6.0``), so the message that leaves has
neither defect and nobody is told of one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from gateway.mail.message import ParsedMessage
from gateway.pipeline.base import CheckContext, Finding
from gateway.policy.model import DealerPolicy

# RFC 5322 §3.6 "max number of fields = 1", less From: (see headers.py).
_SINGLE = (
    "date", "sender", "reply-to", "to", "cc", "bcc", "message-id", "in-reply-to",
    "references", "subject",
)  # fmt: skip


def header_defect(msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext) -> Iterator[Finding]:
    """Find single-use headers that appear more than once."""
    counts = Counter(name.lower() for name, _ in msg.headers)
    for name in _SINGLE:
        if counts[name] > 1:
            shown = next(n for n, _ in msg.headers if n.lower() == name)
            yield Finding(
                "header-defect",
                f"the message has {counts[name]} {shown}: headers",
                data={"kind": "repeated", "header": name, "count": str(counts[name])},
            )
