from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType

import pytest

from gateway.findings import CATALOGUE
from gateway.pipeline.base import CheckContext
from gateway.policy.model import CheckRule, DealerPolicy
from gateway.types import DealerId, Envelope

NOW = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def dealer() -> DealerPolicy:
    return DealerPolicy(
        dealer_id=DealerId("example-motors"),
        name="Example Motors",
        auth_users=frozenset({"example-crm"}),
        from_domains=frozenset({"example-motors.test"}),
        contacts=("ops@example-motors.test",),
        checks=MappingProxyType(
            {code: CheckRule(kind.default_action) for code, kind in CATALOGUE.items()}
        ),
    )


@pytest.fixture
def ctx() -> CheckContext:
    envelope = Envelope(
        dealer_id=DealerId("example-motors"),
        mail_from="sales@example-motors.test",
        rcpt_tos=("buyer@customer.test",),
        peer="192.0.2.10",
        auth_user="example-crm",
        helo="crm.example-motors.test",
        received_at=NOW,
    )
    return CheckContext(envelope=envelope, now=NOW)
