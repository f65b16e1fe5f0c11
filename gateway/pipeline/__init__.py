"""The checks a submitted message goes through, in one explicit order (pure).

``CHECKS`` is a literal tuple, cheapest and most decisive first; nothing is discovered by
scanning modules or names. ``run`` has no exception handling on purpose: a check that
raises must not be skipped ("continue" would let unchecked mail through).
``gateway.intake.prepare`` runs the checks one at a time with ``run_check`` and names a
failing one with ``check_name``; intake then answers 451.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.mail.message import ParsedMessage
from gateway.pipeline.attachments import (
    dangerous_attachment,
    stray_attachment,
    uninspectable_attachment,
)
from gateway.pipeline.base import Check, CheckContext, Finding
from gateway.pipeline.consent import consent_window_expired, missing_postal_address, no_opt_in
from gateway.pipeline.decide import Verdict, decide
from gateway.pipeline.duplicates import duplicate_message, frequency_cap, near_duplicate_message
from gateway.pipeline.encoding import encoding
from gateway.pipeline.header_defects import header_defect
from gateway.pipeline.headers import from_domain_not_allowed, missing_from, multiple_from
from gateway.pipeline.html import broken_html, gmail_clipping, html_without_text
from gateway.pipeline.links import link_defect
from gateway.pipeline.merge_fields import unfilled_merge_field
from gateway.pipeline.unsubscribed import unsubscribed
from gateway.policy.model import DealerPolicy

__all__ = [
    "CHECKS",
    "Check",
    "CheckContext",
    "Finding",
    "Verdict",
    "check_name",
    "decide",
    "run",
    "run_check",
]

CHECKS: tuple[Check, ...] = (
    missing_from,
    multiple_from,
    from_domain_not_allowed,
    # Inspection: cheap header and attachment tests first (dangerous content is the most
    # decisive), then the ones that read the whole body, HTML parsing last.
    header_defect,
    dangerous_attachment,
    uninspectable_attachment,
    stray_attachment,
    html_without_text,
    gmail_clipping,
    encoding,
    unfilled_merge_field,
    link_defect,
    broken_html,
    # Consent (per recipient, except the postal address): before the duplicate checks, so
    # that a recipient who may not be mailed at all is reported as such, not as a repeat.
    missing_postal_address,
    unsubscribed,  # an explicit withdrawal outranks any consent window
    no_opt_in,
    consent_window_expired,
    # Per recipient, against the recipient's history: exact first (cheapest, and it
    # names the very message already sent), then near copies, then the caps.
    duplicate_message,
    near_duplicate_message,
    frequency_cap,
)


def run_check(
    check: Check, msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext
) -> tuple[Finding, ...]:
    """Run one check to completion (a lazy check raises here, not later)."""
    return tuple(check(msg, dealer, ctx))


def run(
    msg: ParsedMessage,
    dealer: DealerPolicy,
    ctx: CheckContext,
    checks: Sequence[Check] = CHECKS,
) -> tuple[Finding, ...]:
    """Run ``checks`` in order and return every finding."""
    return tuple(finding for check in checks for finding in run_check(check, msg, dealer, ctx))


def check_name(check: Check) -> str:
    """Return the name to show for ``check`` in logs and 451 replies."""
    return getattr(check, "__name__", None) or repr(check)
