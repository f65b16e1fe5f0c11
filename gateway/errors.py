"""The one exception tree of the gateway.

::

    GatewayError
    ├── ConfigError            process settings (mailgate.toml, environment) are invalid
    │   └── DataDirInUse       another live process owns the data directory
    ├── PolicyError            a policy set does not validate; carries every problem found
    ├── StorageError           the store could not do what was asked (treat as temporary)
    │   └── StorageUnavailable the store cannot be reached at all
    ├── SpoolFullError         the queue is above its high-water mark or the disk below its floor
    ├── SigningError           a message could not be DKIM-signed (never relay it unsigned)
    ├── DeliveryError
    │   ├── TemporaryDeliveryError   retry later
    │   └── PermanentDeliveryError   give up and report
    └── FeedbackParseError     a report parser met a bug (junk input is ``None``, not this)

Edges translate: the SMTP front turns these into replies (``smtp/replies.py``), the
delivery client is the only place aiosmtplib exceptions become outcomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """Process settings are invalid; the message names the file, key and problem."""


class DataDirInUse(ConfigError):
    """Another live process owns the data directory (``gateway.datadir.DataDirLock``)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation problem: where it is and what is wrong."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.message}"


class PolicyError(GatewayError):
    """A policy set does not validate. ``problems`` lists every problem, not just the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class StorageError(GatewayError):
    """The store failed an operation; callers answer with a temporary failure."""


class StorageUnavailable(StorageError):
    """The store cannot be reached (database down, file locked past the busy timeout)."""


class SpoolFullError(GatewayError):
    """The queue is above its high-water mark or free disk is below its floor."""


class SigningError(GatewayError):
    """DKIM signing failed; the message must not be relayed unsigned."""


class DeliveryError(GatewayError):
    """Delivery to the upstream failed."""


class TemporaryDeliveryError(DeliveryError):
    """A failure worth retrying later."""


class PermanentDeliveryError(DeliveryError):
    """A failure that retrying will not fix."""


class FeedbackParseError(GatewayError):
    """A report parser hit an internal bug. Junk input returns ``None`` instead."""
