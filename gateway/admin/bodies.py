"""The JSON request bodies the admin API accepts (pydantic models).

Unknown keys are errors, as everywhere at our edges; the OpenAPI description takes the
request schemas from these models (``admin/endpoints.py``), so what is documented is what
is validated.
"""

from __future__ import annotations

import builtins
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from gateway.admin.ops import MAX_IMPORT, MAX_LIMIT


class Body(BaseModel):
    """The base of every body: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ReasonBody(Body):
    """A change that needs a reason; ``by`` names the operator (default: the token)."""

    reason: str = Field(min_length=1, max_length=500)
    by: str = Field(default="", max_length=100)


class DealerChangeBody(ReasonBody):
    """Suspend or resume a dealer.

    ``reason`` is what the dealer is shown (the SMTP reply to its CRM, its status page, the
    alert e-mail): write it for the dealer. ``note`` is internal: it stays in the history
    and the logs and is shown to operators only.
    """

    note: str = Field(default="", max_length=1000)


class SuspendBody(DealerChangeBody):
    """Suspend a dealer, optionally for a time (``for``: e.g. ``72h``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    duration: str | None = Field(default=None, alias="for", max_length=20)


class SuppressBody(Body):
    """Add addresses to one list (a dealer id, or ``*`` for the global list)."""

    list: str = Field(min_length=1, max_length=100)
    addresses: builtins.list[str] = Field(min_length=1, max_length=MAX_LIMIT)
    reason: str = Field(min_length=1, max_length=500)
    by: str = Field(default="", max_length=100)
    expires_at: datetime | None = None


class LiftBody(Body):
    """Lift one address's active entry on one list."""

    list: str = Field(min_length=1, max_length=100)
    address: str = Field(min_length=1, max_length=320)
    reason: str = Field(min_length=1, max_length=500)
    by: str = Field(default="", max_length=100)


class ImportEntry(Body):
    """One row of an import."""

    address: str = Field(max_length=320)
    reason: str = Field(default="", max_length=500)


class ImportBody(Body):
    """Entries to add to one list (up to 10,000 per request)."""

    list: str = Field(min_length=1, max_length=100)
    reason: str = Field(default="imported", min_length=1, max_length=500)
    source: str = Field(default="", max_length=200)
    entries: builtins.list[ImportEntry] = Field(max_length=MAX_IMPORT)


class ConsentEventBody(Body):
    """One interaction or opt-in, as a row of ``mailgate consent import`` (same fields)."""

    address: str = Field(min_length=3, max_length=320)
    event: str = Field(min_length=1, max_length=40)
    date: str = Field(min_length=10, max_length=40)
    last_payment: str = Field(default="", max_length=40)
    reference: str = Field(default="", max_length=200)
    source: str = Field(default="", max_length=200)
    proof: str = Field(default="", max_length=500)
    topic: str = Field(default="", max_length=40)
    channel: str = Field(default="email", max_length=20)
