"""The one exception tree of the gateway: what it raises on purpose, and where.

::

    GatewayError
    ├── ConfigError            process settings (mailgate.toml, environment, token files) invalid
    │   └── DataDirInUse       another live process owns the data directory
    ├── PolicyError            a policy set does not validate; carries every problem found
    ├── PolicyEditError        a policy file cannot be rewritten safely (dkim/keys.py)
    ├── StorageError           the store could not do what was asked (treat as temporary)
    │   └── StorageUnavailable the store cannot be reached at all
    ├── SigningError           a message could not be DKIM-signed (never relay it unsigned)
    ├── MessageRejected        a message breaks a structural limit; refused whole (mail/message.py)
    ├── StructureLimit         the MIME scanner met such a limit (mail/mimetree.py)
    ├── CheckCrashed           a check raised: 451 naming it, never "continue" (intake/prepare.py)
    ├── DnsError               no usable DNS answer: existence unknown (dns/resolver.py)
    │   ├── DnsTimeout         no answer within the lifetime
    │   └── DnsFailure         SERVFAIL, REFUSED, no reachable server, a malformed answer
    ├── FeedbackParseError     a report parser met a bug (junk input is ``None``, not this)
    ├── CsvFormatError         an import file's header cannot be used (mail/addresslists.py)
    ├── AdminError             an admin operation refused; its HTTP status (admin/ops.py)
    │   ├── InvalidRequest     400: the input is wrong, the message says how
    │   ├── NotFound           404
    │   └── Conflict           409: the state does not allow it now
    └── ApiError               the command-line client's request failed (cli/client.py)

Edges translate: the SMTP front turns these into replies (``replies.py``), the admin API
into HTTP statuses, ``mailgate`` into an exit code and one line; the delivery client is
the only place aiosmtplib exceptions become outcomes (``RcptOutcome``: a failed delivery
is a result to record, never an exception).

Outside the tree, on purpose:

* ``ValueError`` for a bad argument or value, from pure functions and constructors
  (``parse_duration``, ``Signer``, a queue id), and two subclasses their callers turn into
  a reply or a row problem: ``mail.rewrite.LineTooLong`` and ``consent.csvformat.RowError``.
* Parsers return ``None`` for input that is not what they read (a report that is not a
  report, a token that is not ours); they raise only on a bug.
* Exceptions that unwind inside one module and never leave it: the SPF evaluator's
  ``_PermError``/``_TempError``, the PostgreSQL store's ``_ClaimLost``/``_StateMoved``,
  the CLI's ``_Refused``, the delivery client's ``_TlsUnavailable``, the admin API's
  ``_Unsupported`` and the archive walk's ``_Stop``/``_Truncated``.
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


class SigningError(GatewayError):
    """DKIM signing failed; the message must not be relayed unsigned."""


class FeedbackParseError(GatewayError):
    """A report parser hit an internal bug. Junk input returns ``None`` instead."""
