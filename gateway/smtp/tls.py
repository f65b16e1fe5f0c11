"""TLS for the submission listener: the configured certificate, or a self-signed one.

A first run on a fresh machine has no certificate; rather than offer no STARTTLS (and so
no AUTH), the gateway generates a self-signed certificate in the data directory and says
so loudly. Production deployments configure a real one.

Certificates are renewed while the gateway runs (Let's Encrypt every 60 to 90 days,
cert-manager rewriting a mounted Secret), so ``ServerCertificate`` re-reads the pair on
request (SIGHUP): each new SMTP session takes the context in force when it connects, so
sessions that connect after a reload present the new certificate and sessions already
open keep the one they started with. A new pair that does not load (a missing file, a key
that does not match the certificate, a half-written file) is refused whole: the old
context stays in force, and the refusal is logged and counted.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.metrics import Metrics

log = logging.getLogger("gateway.smtp")


def ensure_self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """Return (cert, key) paths in ``directory``, creating a self-signed pair if missing."""
    cert_path = directory / "tls" / "selfsigned.crt"
    key_path = directory / "tls" / "selfsigned.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    now = dt.datetime.now(dt.UTC)
    alt_names: list[x509.GeneralName] = [
        x509.DNSName(hostname),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp_key = key_path.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    os.replace(tmp_key, key_path)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.warning(
        "NO TLS CERTIFICATE CONFIGURED: generated a self-signed certificate at %s. "
        "CRMs that verify certificates will refuse it; set submission.tls_cert and "
        "submission.tls_key for production.",
        cert_path,
    )
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side context with modern defaults (TLS 1.2 or later)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def _not_after(cert: Path) -> dt.datetime:
    """The expiry of the first (the leaf) certificate in the PEM file ``cert``."""
    return x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc


class ServerCertificate:
    """The submission certificate in force: ``context`` for each new session.

    Built from ``cert`` and ``key`` (raising ``OSError`` or ``ssl.SSLError`` when they do
    not load: a gateway does not start without its certificate); ``reload()`` re-reads
    them and swaps the context only when the new pair loads.
    """

    def __init__(self, cert: Path, key: Path, metrics: Metrics | None = None) -> None:
        self.cert = cert
        self.key = key
        self._metrics = metrics
        self.context = server_context(cert, key)
        self.not_after = _not_after(cert)
        if metrics is not None:
            metrics.tls_certificate_expiry.set(self.not_after.timestamp())

    def reload(self) -> bool:
        """Re-read the pair; ``False`` (the old one stays in force) when it does not load.

        A new context, never the old one changed in place: ``load_cert_chain`` on a live
        context that then fails on the key would leave it with the new certificate and
        the old key, and every handshake after that would fail.
        """
        try:
            context = server_context(self.cert, self.key)
            not_after = _not_after(self.cert)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.error(
                "TLS certificate not reloaded, the one in force (expires %s) stays: %s, %s: %s",
                self.not_after.date().isoformat(),
                self.cert,
                self.key,
                exc,
            )
            self._count("failed")
            return False
        self.context = context
        self.not_after = not_after
        if self._metrics is not None:
            self._metrics.tls_certificate_expiry.set(not_after.timestamp())
        log.info(
            "TLS certificate reloaded from %s (expires %s); new sessions use it",
            self.cert,
            not_after.date().isoformat(),
        )
        self._count("ok")
        return True

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.tls_certificate_reloads.labels(result).inc()
