r"""Envelope address rules for the submission listener (pure).

aiosmtpd 1.4.6 hands the handler addresses it has already unquoted: ``<"x\\rRSET"@d>``
arrives as ``x\\rRSET@d``, NUL passes, source routes are stripped and ``"a@b"`` with no
domain passes. The routing domain therefore comes from this one parser only, never from
``email.utils.parseaddr`` (CVE-2023-27043), and anything that could inject a command
downstream or route mail somewhere unexpected is refused here.
"""

from __future__ import annotations

import enum
import re

# RFC 5321 §4.5.3.1: local part 64 octets, domain 255, path 256 (including the brackets).
MAX_LOCAL = 64
MAX_DOMAIN = 255
MAX_PATH = 254

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f<>()\[\]\\,;:\"]")


class AddressProblem(enum.Enum):
    """Why an envelope address is refused."""

    SYNTAX = "syntax"  # malformed, control characters, over-long
    ROUTING = "routing"  # %, !, @ in the local part, or other relay tricks (RFC 5321 §3.6)
    INTERNAL = "internal"  # IP literal or a local host name (B6)


_LOCAL_HOSTS = frozenset({"localhost", "localhost.localdomain", "local", "localdomain"})


def split(address: str) -> tuple[str, str]:
    """Split ``local@domain`` at the last ``@``; the domain is lower-cased."""
    local, _, domain = address.rpartition("@")
    return local, domain.lower()


def domain_of(address: str) -> str:
    """The lower-cased domain of an address (empty for the null sender)."""
    return split(address)[1]


def is_valid_domain(domain: str) -> bool:
    """True for a syntactically valid DNS domain name with at least two labels."""
    if not domain or len(domain) > MAX_DOMAIN or domain.endswith("."):
        return False
    labels = domain.split(".")
    return len(labels) >= 2 and all(_LABEL.match(label) for label in labels)


def check(address: str) -> AddressProblem | None:
    """Return why ``address`` must be refused, or ``None`` when it is acceptable.

    Accepts plain ``local@domain`` with a DNS domain. Refuses control characters, spaces,
    NUL and CR/LF anywhere (they could inject commands in the relay's next hop), the
    routing characters ``% ! @`` in the local part (open-relay forms B1-B4), IP literals
    and local host names (B6), and anything over the RFC 5321 length limits.
    """
    if not address or len(address) > MAX_PATH or "@" not in address:
        return AddressProblem.SYNTAX
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in address):
        return AddressProblem.SYNTAX
    local, domain = split(address)
    if not local or len(local.encode()) > MAX_LOCAL:
        return AddressProblem.SYNTAX
    if "@" in local or "%" in local or "!" in local:
        return AddressProblem.ROUTING
    if domain.startswith("["):
        return AddressProblem.INTERNAL
    if domain in _LOCAL_HOSTS or domain.endswith(".localhost"):
        return AddressProblem.INTERNAL
    if _FORBIDDEN.search(local) or local.startswith(".") or local.endswith(".") or ".." in local:
        return AddressProblem.SYNTAX
    if not is_valid_domain(domain):
        return AddressProblem.SYNTAX
    return None
