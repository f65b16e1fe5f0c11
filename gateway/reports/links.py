"""The signed link a contact follows to stop (or restart) a dealer's reports (pure).

``/u/reports/<dealer>?to=<address>&t=<token>`` on the public listener, beside the
customers' one-click links (``/u/<token>``). The token is a 128-bit tag
(``gateway/tokens.py``) of the dealer id and the lower-cased address under the status-page
key (``status.key``), with its own context, so it is unguessable, works on every node
that shares the key, and cannot be turned into a link for another contact or dealer, nor
into a status-page link.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from gateway.tokens import Signer, encode_fields, hex_decode

_TOKEN_BYTES = 16
_CONTEXT = b"report-optout\x00"


@dataclass(frozen=True, slots=True)
class ReportLinks:
    """Makes and checks contacts' unsubscribe links."""

    key: bytes
    base_url: str  # e.g. "https://mailgate.example.net" (no trailing slash)

    def _signer(self) -> Signer:
        return Signer(self.key, size=_TOKEN_BYTES, context=_CONTEXT)

    def token(self, dealer_id: str, address: str) -> str:
        """The contact's token, in hex."""
        return self._signer().tag(encode_fields(dealer_id, address.lower())).hex()

    def path(self, dealer_id: str) -> str:
        """The route's path for ``dealer_id``."""
        return f"/u/reports/{quote(dealer_id, safe='')}"

    def url(self, dealer_id: str, address: str) -> str:
        """The full link for one contact."""
        token = self.token(dealer_id, address)
        return (
            f"{self.base_url.rstrip('/')}{self.path(dealer_id)}"
            f"?to={quote(address.lower(), safe='@')}&t={token}"
        )

    def valid(self, dealer_id: str, address: str, token: str) -> bool:
        """True when ``token`` is this contact's (constant time)."""
        return self._signer().verify(encode_fields(dealer_id, address.lower()), hex_decode(token))
