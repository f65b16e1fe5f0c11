"""TLS for the submission listener: the configured certificate, or a self-signed one.

A first run on a fresh machine has no certificate; rather than offer no STARTTLS (and so
no AUTH), the gateway generates a self-signed certificate in the data directory and says
so loudly. Production deployments configure a real one.
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
