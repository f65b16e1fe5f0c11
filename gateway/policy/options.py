"""The typed options of the checks (pure): one frozen record per check that takes any.

A record is the schema of its check's options in ``[checks]``: its fields are the only
option names the policy files may set for that code, their annotations say the type
(``bool``, ``int``, ``float``, ``str``, a ``Literal`` of words, or ``timedelta`` written
as a duration such as ``"72h"``), ``limits(minimum=, maximum=, pattern=)`` in a field's
metadata adds what the loader enforces (for a duration, in seconds), and the defaults are
what a check uses when no policy file names the option (``policies/defaults.toml`` names
every one, with its meaning).

``policy.loader`` validates every layer's options against these records (an unknown
option, a wrong type or a value out of range is a problem naming the file and key) and
builds one record per check and dealer at load time, so a check reads a typed field,
``dealer.options(GmailClippingOptions).max_bytes``, and never parses text on the hot
path. A check without options has the empty ``CheckOptions``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import ClassVar, Literal

__all__ = [
    "NO_OPTIONS",
    "OPTIONS",
    "BrokenHtmlOptions",
    "CheckOptions",
    "DangerousAttachmentOptions",
    "DuplicateMessageOptions",
    "FrequencyCapOptions",
    "GmailClippingOptions",
    "NearDuplicateOptions",
    "Severity",
    "limits",
]

_72_HOURS = timedelta(hours=72)


def limits(
    *, minimum: float | None = None, maximum: float | None = None, pattern: bool = False
) -> Mapping[str, object]:
    """Field metadata: the limits the loader checks (``pattern``: a regular expression)."""
    return MappingProxyType({"minimum": minimum, "maximum": maximum, "pattern": pattern})


# broken-html's grades, least severe first (pipeline/html.py ranks problems by them).
Severity = Literal["minor", "major", "critical"]


@dataclass(frozen=True, slots=True)
class CheckOptions:
    """Base of the option records; as it is, the options of a check that takes none."""

    code: ClassVar[str] = ""


NO_OPTIONS = CheckOptions()


@dataclass(frozen=True, slots=True)
class DuplicateMessageOptions(CheckOptions):
    """``duplicate-message``: the window (also the near-duplicate one) and who is one person."""

    code: ClassVar[str] = "duplicate-message"
    window: timedelta = field(default=_72_HOURS, metadata=limits(minimum=1))
    ignore_pattern: str = field(default="", metadata=limits(pattern=True))
    fold_local_part: bool = True
    strip_plus_tag: bool = True


@dataclass(frozen=True, slots=True)
class NearDuplicateOptions(CheckOptions):
    """``near-duplicate-message``: the share of wording that makes two messages alike."""

    code: ClassVar[str] = "near-duplicate-message"
    threshold: float = field(default=0.6, metadata=limits(minimum=0.0, maximum=1.0))


@dataclass(frozen=True, slots=True)
class FrequencyCapOptions(CheckOptions):
    """``frequency-cap``: commercial messages per recipient per day and week (0: no cap)."""

    code: ClassVar[str] = "frequency-cap"
    per_day: int = field(default=0, metadata=limits(minimum=0))
    per_week: int = field(default=0, metadata=limits(minimum=0))
    default_category: Literal["commercial", "transactional"] = "commercial"


@dataclass(frozen=True, slots=True)
class DangerousAttachmentOptions(CheckOptions):
    """``dangerous-attachment``: how far zip archives are opened in memory.

    ``max_depth`` archives inside archives are followed; ``max_entries`` entries are read
    across all of them; ``max_bytes`` is the most uncompressed bytes they may declare;
    an entry whose uncompressed/compressed ratio is above ``max_ratio`` is a zip bomb;
    ``max_scan_bytes`` is the most that is really decompressed per attachment to look inside.
    """

    code: ClassVar[str] = "dangerous-attachment"
    max_depth: int = field(default=3, metadata=limits(minimum=0))
    max_entries: int = field(default=1000, metadata=limits(minimum=1))
    max_bytes: int = field(default=100 * 1024 * 1024, metadata=limits(minimum=1))
    max_ratio: int = field(default=100, metadata=limits(minimum=1))
    max_scan_bytes: int = field(default=8 * 1024 * 1024, metadata=limits(minimum=1))


@dataclass(frozen=True, slots=True)
class BrokenHtmlOptions(CheckOptions):
    """``broken-html``: the least severe grade of problem reported."""

    code: ClassVar[str] = "broken-html"
    min_severity: Severity = "major"


@dataclass(frozen=True, slots=True)
class GmailClippingOptions(CheckOptions):
    """``gmail-clipping``: the HTML size above which Gmail clips the message."""

    code: ClassVar[str] = "gmail-clipping"
    max_bytes: int = field(default=102 * 1024, metadata=limits(minimum=1))


OPTIONS: Mapping[str, type[CheckOptions]] = MappingProxyType(
    {
        kind.code: kind
        for kind in (
            DuplicateMessageOptions,
            NearDuplicateOptions,
            FrequencyCapOptions,
            DangerousAttachmentOptions,
            BrokenHtmlOptions,
            GmailClippingOptions,
        )
    }
)
