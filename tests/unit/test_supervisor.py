"""The supervisor's pure parts: worker node ids and each worker's share of the totals."""

from __future__ import annotations

from gateway.cli.supervisor import default_processes, worker_node, worker_settings
from gateway.settings import Settings


def test_each_slot_has_a_stable_node_id_of_its_own() -> None:
    assert worker_node("gw1", 0) == "gw1-w0"
    assert worker_node("gw1", 3) == "gw1-w3"


def test_totals_are_shared_and_per_address_limits_kept() -> None:
    settings = Settings.model_validate(
        {
            "submission": {
                "max_connections": 201,
                "data_memory": "1GiB",
                "max_connections_per_ip": 50,
            },
            "delivery": {"workers": 10},
        }
    )
    third = worker_settings(settings, "gw1", 2, 3)
    assert third.server.node_id == "gw1-w2"
    assert third.submission.max_connections == 67
    assert third.submission.data_memory == -(-(1024**3) // 3)
    assert third.submission.max_connections_per_ip == 50
    assert third.delivery.workers == 4  # rounded up: 12 in all, never fewer than asked
    one = worker_settings(settings, "gw1", 0, 16)
    assert one.delivery.workers == 1 and one.submission.max_connections == 13


def test_default_is_one_per_core() -> None:
    assert default_processes() >= 1
