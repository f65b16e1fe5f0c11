"""The signing seam: the last change to a message before it is spooled.

``Signer.sign`` receives the exact bytes that will be relayed (line endings already
CRLF, headers final) and returns them with signatures prepended. Signing that fails
raises ``SigningError``; the message is then refused with ``451 4.3.0``, never relayed
unsigned.
"""

from __future__ import annotations

from typing import Protocol

from gateway.policy.model import DealerPolicy


class Signer(Protocol):
    """Adds signatures to a finished message."""

    def sign(self, data: bytes, dealer: DealerPolicy) -> bytes:
        """Return ``data`` with signature headers prepended; raise ``SigningError``."""
        ...


class PassThroughSigner:
    """Used for dealers without DKIM settings: the message is relayed as it is."""

    def sign(self, data: bytes, dealer: DealerPolicy) -> bytes:
        """Return ``data`` unchanged."""
        return data
