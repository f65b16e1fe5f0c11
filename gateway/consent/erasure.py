"""Erasure on request (GDPR Art. 17) that keeps the person suppressed: the keyed hash (pure).

After ``mailgate consent erase ADDRESS --dealer ID`` nothing in the store names the person
for that dealer (``Storage.erase_consent``), yet mail to them must still be refused: an
erasure request usually comes with an objection (Art. 21(3)), and a CRM that still holds
the address would otherwise mail it again. What stays is ``erased:<key>``, where ``key``
is HMAC-SHA256 of the dealer and the normalised address under a key derived from the
gateway's reference key (``ref.key`` in the data directory), truncated to 128 bits: the
RCPT lookup computes it for the address it is given (``Suspensions.suppression``), but the
store alone cannot be read back into addresses (a plain hash of an address can be
reversed by trying likely addresses; a keyed one cannot without the key).
"""

from __future__ import annotations

from gateway.consent.rules import normalise_address
from gateway.tokens import Signer, derive_key, encode_fields

__all__ = ["ERASED_PREFIX", "Erasures"]

ERASED_PREFIX = "erased:"
_KEY_BYTES = 16


class Erasures:
    """Makes the keyed hash of one dealer's address (pure)."""

    def __init__(self, secret: bytes) -> None:
        self._signer = Signer(derive_key(secret, b"mailgate consent erasure"), size=_KEY_BYTES)

    def key(self, dealer_id: str, address: str) -> str:
        """The hex key that stands for ``address`` of ``dealer_id`` once it is erased."""
        return self._signer.tag(encode_fields(dealer_id, normalise_address(address))).hex()

    def suppressed_as(self, dealer_id: str, address: str) -> str:
        """The pseudo-address the person's suppression entries carry: ``erased:<key>``."""
        return ERASED_PREFIX + self.key(dealer_id, address)
