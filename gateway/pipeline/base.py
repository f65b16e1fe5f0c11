"""The contract every check follows: ``Check``, ``Finding`` and ``CheckContext`` (pure).

A check looks at one parsed message with the dealer's policy and the context intake
gathered, and yields findings. It never chooses an SMTP reply, never changes the message
and keeps no state: ``decide()`` alone turns findings into an action.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING

from gateway.consent.rules import ConsentRecord
from gateway.duplicates.fingerprints import DuplicateState
from gateway.mail.message import ParsedMessage
from gateway.policy.model import DealerPolicy
from gateway.types import Envelope

if TYPE_CHECKING:
    from gateway.pipeline.purpose import Purpose

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Finding:
    """Something a check noticed.

    ``code`` is a key of ``gateway.findings.CATALOGUE``; ``detail`` is a sentence for the
    dealer naming the specifics; ``recipient`` is set when the finding concerns one
    recipient only; ``data`` carries machine-readable specifics for logs and the API.
    ``repair`` names the safe repair in ``gateway.intake.repair`` that restores what the sender
    meant, when the check saw that one applies; ``None`` when there is none.
    """

    code: str
    detail: str
    recipient: str | None = None
    data: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    repair: str | None = None


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What a check may know beyond the message and the policy, fetched before the run."""

    envelope: Envelope
    now: datetime
    # The recipients' recent sends and this message's fingerprint (None: not gathered,
    # and the duplicate checks find nothing).
    duplicates: DuplicateState | None = None
    # Each envelope recipient's consent record (as submitted -> record) when the dealer's
    # rules enforce consent; None: not gathered, and the consent checks find nothing.
    consent: Mapping[str, ConsentRecord] | None = None
    # The gateway adds its own one-click unsubscribe (RFC 8058) to commercial copies
    # (``unsubscribe.base_url`` is set), so a template without one is not missing one.
    adds_unsubscribe: bool = False
    # The message's primary purpose as intake read it once (``pipeline/purpose.py``); None:
    # not read, and the checks that need it read it themselves.
    purpose: Purpose | None = None


Check = Callable[[ParsedMessage, DealerPolicy, CheckContext], Iterable[Finding]]
