r"""E-mail addresses: the envelope rules of the listeners and the one normal form (pure).

aiosmtpd 1.4.6 hands the handler addresses it has already unquoted: ``<"x\\rRSET"@d>``
arrives as ``x\\rRSET@d``, NUL passes, source routes are stripped and ``"a@b"`` with no
domain passes. The routing domain therefore comes from this one parser only, never from
``email.utils.parseaddr`` (CVE-2023-27043), and anything that could inject a command
downstream or route mail somewhere unexpected is refused here.

The normal form
---------------
``normalise`` is the only place an address is folded. Every comparison, store key and
lookup of an address (suppression lists, consent records, duplicate keys, feedback
matching, the inbound listener's report addresses) goes through it, so an address typed
into a CSV file, given at RCPT TO and named in a complaint report meets itself. It folds:

* surrounding white space and angle brackets (``<a@b>`` as written in a path, RFC 5321
  §4.1.2, or in a list);
* the domain's letter case and a trailing root dot: RFC 5321 §2.4, "mailbox domains
  follow normal DNS rules and are hence not case sensitive" (RFC 4343), and
  ``example.com.`` is the same name as ``example.com``;
* the local part's letter case, unless ``fold_local_part=False``. RFC 5321 §2.4 says the
  local part "MUST BE treated as case sensitive" by the host that delivers it, so the
  address the gateway *relays* keeps its case (the submission listener asks for that).
  For *identity* the same section adds that "exploiting the case sensitivity of mailbox
  local-parts impedes interoperability and is discouraged", and no large mailbox provider
  does: an opt-out from ``John@`` that failed to stop mail to ``john@`` would be the worse
  error, so keys fold it. ``str.lower``, not ``casefold``: the stored suppression and
  consent keys were written with it, and casefold would also turn ``ß`` into ``ss``.

Not folded: internationalised domains are not converted between U-labels and A-labels
(``xn--``). The listeners refuse non-ASCII domains (no SMTPUTF8), so every address the
gateway relays already carries A-labels, and the standard library's ``idna`` codec is
IDNA 2003, whose mapping differs from IDNA 2008 (RFC 5891) for ``ß``, ``ς`` and the
joiners: converting with it could file an address under a name no relayed mail has.
``parse`` refuses such an address instead. A ``+tag`` sub-address (RFC 5233) is part of
the local part here; only the duplicate checks may ignore it, by policy.
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


def normalise(address: str, *, fold_local_part: bool = True) -> str:
    """The normal form of ``address`` (see the module docstring for what is folded).

    Pure string folding, no validation: ``check`` or ``parse`` say whether the address is
    acceptable. Text without an ``@`` is folded whole, like a domain; the null sender
    (``""`` or ``<>``) stays empty.
    """
    text = address.strip().strip("<>").strip()
    local, at, domain = text.rpartition("@")
    if not at:
        return text.lower()
    return f"{local.lower() if fold_local_part else local}@{domain.lower().rstrip('.')}"


def parse(text: str) -> str | None:
    """The normalised address written in ``text`` (a CSV cell, an API field, an argument).

    ``None`` when ``text`` holds no address the submission listener would accept
    (``check``), so what an operator lists is always something mail can be sent to.
    """
    candidate = text.strip().strip("<>").strip()
    return normalise(candidate) if check(candidate) is None else None


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
