"""``ServerCertificate``: a reload swaps in a pair that loads, and only such a pair."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trustme

from gateway.metrics import Metrics
from gateway.smtp.tls import ServerCertificate

CA = trustme.CA()


def write(directory: Path, cert: trustme.LeafCert, key: trustme.LeafCert | None = None) -> None:
    (directory / "tls.crt").write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    (directory / "tls.key").write_bytes((key or cert).private_key_pem.bytes())


def reloads(metrics: Metrics, result: str) -> float | None:
    return metrics.registry.get_sample_value(
        "mailgate_tls_certificate_reloads_total", {"result": result}
    )


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[ServerCertificate, Metrics]:
    write(tmp_path, CA.issue_cert("mailgate.test"))
    metrics = Metrics()
    return ServerCertificate(tmp_path / "tls.crt", tmp_path / "tls.key", metrics), metrics


def test_the_counters_start_at_zero_and_the_expiry_is_exported(
    certificate: tuple[ServerCertificate, Metrics],
) -> None:
    cert, metrics = certificate
    assert reloads(metrics, "ok") == reloads(metrics, "failed") == 0
    expiry = metrics.registry.get_sample_value("mailgate_tls_certificate_expiry_timestamp_seconds")
    assert expiry == cert.not_after.timestamp()


def test_a_pair_that_loads_replaces_the_context(
    tmp_path: Path, certificate: tuple[ServerCertificate, Metrics]
) -> None:
    cert, metrics = certificate
    old = cert.context
    write(tmp_path, CA.issue_cert("mailgate.test"))
    assert cert.reload() is True
    assert cert.context is not old  # a new context: sessions holding the old keep it
    assert reloads(metrics, "ok") == 1 and reloads(metrics, "failed") == 0


@pytest.mark.parametrize("damage", ["key of another certificate", "truncated", "missing key"])
def test_a_pair_that_does_not_load_keeps_the_one_in_force(
    tmp_path: Path,
    certificate: tuple[ServerCertificate, Metrics],
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    cert, metrics = certificate
    old, old_expiry = cert.context, cert.not_after
    if damage == "key of another certificate":
        write(tmp_path, CA.issue_cert("mailgate.test"), key=CA.issue_cert("other.test"))
    elif damage == "truncated":  # a renewal caught halfway through writing
        text = (tmp_path / "tls.crt").read_bytes()
        (tmp_path / "tls.crt").write_bytes(text[: len(text) // 2])
    else:
        (tmp_path / "tls.key").unlink()
    with caplog.at_level(logging.ERROR, logger="gateway.smtp"):
        assert cert.reload() is False
    assert cert.context is old and cert.not_after == old_expiry
    assert reloads(metrics, "failed") == 1 and reloads(metrics, "ok") == 0
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert "TLS certificate not reloaded, the one in force" in record.getMessage()
    assert str(tmp_path / "tls.crt") in record.getMessage()
