"""Checks on the top-level header fields: who the message says it is from (pure).

RFC 5322 §3.6 requires exactly one From: field. Two of them make DKIM and DMARC
ambiguous (receivers may evaluate a different one than we signed for), none leaves the
recipient nothing to reply to; and a From: domain the dealer does not own would have us
sign and relay mail in someone else's name. The same goes for what readers are shown
instead of the address: a display name that is itself another domain's address
(``"sales@other.example" <sales@own.example>``, the commonest phishing disguise, since many
mail apps show only the name) and a ``Sender:`` naming another domain (RFC 5322 §3.6.2:
the agent responsible for sending, shown by Outlook as "… on behalf of …").
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from gateway.mail.message import ParsedMessage
from gateway.pipeline.base import CheckContext, Finding
from gateway.policy.model import DealerPolicy


def missing_from(msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext) -> Iterator[Finding]:
    """Find a message without a From: header (RFC 5322 §3.6: exactly one is required)."""
    if msg.from_header_count == 0:
        yield Finding("missing-from", "the message has no From: header")


def multiple_from(msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext) -> Iterator[Finding]:
    """Find a message with more than one From: header (RFC 5322 §3.6, DMARC ambiguity)."""
    if msg.from_header_count > 1:
        yield Finding(
            "multiple-from",
            f"the message has {msg.from_header_count} From: headers",
            data={"count": str(msg.from_header_count)},
        )


def from_domain_not_allowed(
    msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext
) -> Iterator[Finding]:
    """Find From: addresses whose domain is not one of the dealer's sending domains.

    A From: header with no address that can be read fails closed: its domain cannot be
    shown to belong to the dealer.
    """
    if msg.from_header_count == 0:
        return  # missing_from reports this
    if not msg.from_addrs:
        yield Finding(
            "from-domain-not-allowed",
            f"the From: header has no readable address, so it cannot be shown to be a "
            f"domain of {dealer.dealer_id}",
            data={"dealer": dealer.dealer_id, "domain": ""},
        )
        return
    seen: set[str] = set()
    for address in msg.from_addrs:
        domain = address.rpartition("@")[2]
        if domain in seen or dealer.owns_domain(domain):
            continue
        seen.add(domain)
        yield Finding(
            "from-domain-not-allowed",
            f"{domain} is not a domain of {dealer.dealer_id}",
            data={"dealer": dealer.dealer_id, "domain": domain, "address": address},
        )


# An address written into a display name: local@domain with a dot in the domain.
_ADDRESS_IN_NAME = re.compile(r"[A-Za-z0-9._%+'-]+@((?:[A-Za-z0-9-]+\.)+[A-Za-z0-9-]{2,})")


def display_name_address(
    msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext
) -> Iterator[Finding]:
    """Find a From: display name that shows an address of a domain the dealer does not own.

    A name holding the dealer's own address (``"sales@own.example" <sales@own.example>``,
    as some CRMs write it) is fine; only another domain's address misleads the reader.
    """
    seen: set[str] = set()
    for name in msg.from_names:
        for match in _ADDRESS_IN_NAME.finditer(name):
            domain = match.group(1).lower().rstrip(".")
            if domain in seen or dealer.owns_domain(domain):
                continue
            seen.add(domain)
            yield Finding(
                "display-name-address",
                f"the From: display name shows {match.group(0)}, an address of {domain}, "
                f"which is not a domain of {dealer.dealer_id}",
                data={"dealer": dealer.dealer_id, "domain": domain, "name": name[:200]},
            )


def sender_domain_not_allowed(
    msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext
) -> Iterator[Finding]:
    """Find Sender: addresses whose domain is not one of the dealer's sending domains."""
    seen: set[str] = set()
    for address in msg.sender_addrs:
        domain = address.rpartition("@")[2]
        if domain in seen or dealer.owns_domain(domain):
            continue
        seen.add(domain)
        yield Finding(
            "sender-domain-not-allowed",
            f"the Sender: header names {address}; {domain} is not a domain of {dealer.dealer_id}",
            data={"dealer": dealer.dealer_id, "domain": domain, "address": address},
        )
