"""The signed link a contact follows to stop (or restart) a dealer's reports (pure).

``/reports/<dealer>/unsubscribe?to=<address>&t=<token>``: the token is an HMAC-SHA256 of
the dealer id and the lower-cased address under the status-page key (``status.key``), with
its own label, so it is unguessable, works on every node that shares the key, and cannot be
turned into a link for another contact or dealer, nor into a status-page link.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import quote

_TOKEN_CHARS = 32


@dataclass(frozen=True, slots=True)
class ReportLinks:
    """Makes and checks contacts' unsubscribe links."""

    key: bytes
    base_url: str  # e.g. "https://mailgate.example.net" (no trailing slash)

    def token(self, dealer_id: str, address: str) -> str:
        """The contact's token: hex HMAC-SHA256, 128 bits."""
        message = b"report-optout\x00" + dealer_id.encode() + b"\x00" + address.lower().encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:_TOKEN_CHARS]

    def path(self, dealer_id: str) -> str:
        """The route's path for ``dealer_id``."""
        return f"/reports/{quote(dealer_id, safe='')}/unsubscribe"

    def url(self, dealer_id: str, address: str) -> str:
        """The full link for one contact."""
        token = self.token(dealer_id, address)
        return (
            f"{self.base_url.rstrip('/')}{self.path(dealer_id)}"
            f"?to={quote(address.lower(), safe='@')}&t={token}"
        )

    def valid(self, dealer_id: str, address: str, token: str) -> bool:
        """True when ``token`` is this contact's (constant time)."""
        return hmac.compare_digest(self.token(dealer_id, address), token)
