"""The unsubscribed check: no commercial mail to a recipient who unsubscribed (pure).

An unsubscribe (RFC 8058 one-click, the mailto of RFC 2369, a provider's opt-out report)
withdraws the dealer's marketing, not its receipts or appointment confirmations. Whether a
message is commercial is known only from its ``X-Mailgate-Category`` header, after the last
RCPT, so the handler lets such recipients through RCPT (``Envelope.unsubscribed``) and this
check reports each one at DATA when the message is commercial; ``decide()`` then leaves out
or refuses just that recipient.
"""

from __future__ import annotations

from collections.abc import Iterator

from gateway.mail.message import ParsedMessage
from gateway.pipeline.base import CheckContext, Finding
from gateway.policy.model import DealerPolicy
from gateway.unsubscribe.links import is_commercial


def unsubscribed(msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext) -> Iterator[Finding]:
    """Find envelope recipients who unsubscribed, when the message is commercial."""
    if not ctx.envelope.unsubscribed or not is_commercial(msg, dealer):
        return
    for rcpt in ctx.envelope.rcpt_tos:
        if rcpt in ctx.envelope.unsubscribed:
            yield Finding(
                "unsubscribed",
                f"{rcpt} unsubscribed from the commercial mail of {dealer.dealer_id}",
                recipient=rcpt,
            )
