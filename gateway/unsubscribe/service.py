"""One-click unsubscribe (RFC 8058, RFC 2369): what a click or a mailto does (I/O).

The links, their tokens and the header fields are ``gateway.unsubscribe.links`` (pure);
this module applies a valid token to the store.

A POST to the link suppresses the recipient for the dealer at once, through the feedback
store: an ``unsubscribe`` event plus a suppression in one transaction, idempotent on the
event's replay key (message, kind, recipient). So a second click changes nothing, and a
replayed token does not undo an operator's later ``mailgate suppress remove``.

A GET shows a page with a button that POSTs (RFC 8058 §3.2: the GET must not unsubscribe,
because mail scanners fetch every link). The mailto (RFC 2369) goes to the inbound report
address with the token in the subject; the inbound listener applies it the same way.
"""

from __future__ import annotations

import email.policy
import logging
import re
from email.parser import BytesHeaderParser

from gateway.clock import Clock
from gateway.reputation.records import UNSUBSCRIBE_REASON, EventKind, FeedbackEvent, Suppression
from gateway.storage.base import Storage
from gateway.unsubscribe.links import Unsubscribe, UnsubscribeLinks

__all__ = ["REASON", "Unsubscribes", "token_in_message"]

log = logging.getLogger("gateway.feedback")

REASON = UNSUBSCRIBE_REASON  # the same reason the feedback loop's opt-outs record


_SUBJECT_TOKEN = re.compile(r"\bunsubscribe\s+([a-z2-7]{24,1024})\b", re.IGNORECASE)


def token_in_message(raw: bytes) -> str | None:
    """The one-click token in the subject of a mail sent to our mailto, or ``None``.

    Mail clients send the mailto's ``subject=`` as it is (``unsubscribe TOKEN``), some
    with ``Re:`` or other text around it; the token is verified by the caller.
    """
    headers = BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
    try:
        subject = str(headers.get("Subject", ""))
    except (ValueError, LookupError):  # an undecodable encoded-word
        return None
    found = _SUBJECT_TOKEN.search(subject)
    return found.group(1).lower() if found else None


class Unsubscribes:
    """Applies a one-click unsubscribe to the store."""

    def __init__(self, links: UnsubscribeLinks, storage: Storage, clock: Clock) -> None:
        self._links = links
        self._storage = storage
        self._clock = clock

    def verify(self, token: str) -> Unsubscribe | None:
        """What ``token`` asks for, or ``None`` for a forged or malformed one."""
        return self._links.verify(token)

    async def unsubscribe(self, request: Unsubscribe, source: str) -> bool:
        """Suppress the recipient for the dealer; ``False`` when this token was used already.

        Raises ``StorageError`` when the store fails (the caller answers 503, and the
        receiver's retry or the person's next click tries again).
        """
        now = self._clock.now()
        event = FeedbackEvent(
            dealer_id=request.dealer_id,
            kind=EventKind.UNSUBSCRIBE,
            message_id=request.message_id,
            recipient=request.recipient,
            at=now,
            detail="one-click",
            source=source,
        )
        entry = Suppression(request.dealer_id, request.recipient, REASON, request.message_id, now)
        recorded = await self._storage.record_feedback(event, entry)
        log.info("unsubscribe %s dealer=%s message=%s via %s", "recorded" if recorded else
                 "already recorded", request.dealer_id, request.message_id, source)  # fmt: skip
        return recorded
