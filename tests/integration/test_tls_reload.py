"""A renewed submission certificate is taken up on SIGHUP, without a restart.

A real ``mailgate serve`` process with a certificate from a test CA (trustme). The files
are replaced the way a renewal hook replaces them (new content, renamed into place), the
process gets SIGHUP, and a CRM that verifies certificates connects again: it sees the
new certificate, while a session opened before the reload keeps working on the old one.
A new pair that does not load (a key that is not the certificate's) is refused: the
certificate in force stays, and the log and ``/metrics`` say so.
"""

from __future__ import annotations

import os
import signal
import ssl
import urllib.request
from pathlib import Path

import trustme

from tests.procs import GatewayProcess, node_config, procs, wait_for
from tests.smtpclient import RawSmtp

__all__ = ["procs"]  # fixture, imported for pytest

HOST = "mailgate.test"


def install(path: Path, content: bytes) -> None:
    """Replace ``path`` atomically, as certbot's and cert-manager's renewals do."""
    temp = path.with_name(f".{path.name}.new")
    temp.write_bytes(content)
    os.replace(temp, path)


def install_pair(
    directory: Path, cert: trustme.LeafCert, key: trustme.LeafCert | None = None
) -> None:
    install(directory / "tls.crt", b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    install(directory / "tls.key", (key or cert).private_key_pem.bytes())


def leaf(cert: trustme.LeafCert) -> bytes:
    """The DER of the certificate a server presents with this pair."""
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


async def verified_session(port: int, ca: trustme.CA) -> tuple[RawSmtp, bytes]:
    """A CRM that verifies the certificate: EHLO, STARTTLS, EHLO; and what it was shown."""
    client = await RawSmtp.connect("127.0.0.1", port)
    assert (await client.cmd("EHLO crm.test")).code == 250
    assert (await client.cmd("STARTTLS")).code == 220
    context = ssl.create_default_context()
    ca.configure_trust(context)
    await client.writer.start_tls(context, server_hostname=HOST)
    assert (await client.cmd("EHLO crm.test")).code == 250
    shown = client.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return client, shown


def sample(node_http: str, name: str) -> float:
    with urllib.request.urlopen(f"http://{node_http}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[-1])


async def test_sighup_gives_new_sessions_the_renewed_certificate(
    tmp_path: Path, procs: list[GatewayProcess]
) -> None:
    ca = trustme.CA()
    first, second = ca.issue_cert(HOST), ca.issue_cert(HOST)
    assert leaf(first) != leaf(second)
    tls = tmp_path / "tls"
    tls.mkdir()
    install_pair(tls, first)
    node = node_config(
        tmp_path,
        "node",
        sink_port=9,  # nothing is delivered in this test
        storage_url=f"sqlite:///{tmp_path / 'mailgate.db'}",
        settings={
            "server": {"hostname": HOST},
            "submission": {"tls_cert": str(tls / "tls.crt"), "tls_key": str(tls / "tls.key")},
        },
    )
    procs.append(node)
    await node.start()
    assert node.proc is not None
    http = node.config.read_text().split('[http]\nlisten = "')[1].split('"')[0]
    reloads = 'mailgate_tls_certificate_reloads_total{result="%s"}'

    before, shown = await verified_session(node.port, ca)
    assert shown == leaf(first)
    expiry = sample(http, "mailgate_tls_certificate_expiry_timestamp_seconds")

    # Renewed: new files, then SIGHUP (systemctl reload, kubectl exec ... kill -HUP 1).
    install_pair(tls, second)
    node.proc.send_signal(signal.SIGHUP)
    await wait_for(lambda: "TLS certificate reloaded" in node.output(), 10, "the reload", node)
    after, shown = await verified_session(node.port, ca)
    assert shown == leaf(second)
    # The session opened before the reload goes on, on the certificate it was given.
    assert (await before.cmd("NOOP")).code == 250
    assert before.writer.get_extra_info("ssl_object").getpeercert(binary_form=True) == leaf(first)
    assert sample(http, reloads % "ok") == 1 and sample(http, reloads % "failed") == 0

    # A bad pair (the third certificate with the second's key) is refused; the second stays.
    third = ca.issue_cert(HOST)
    install_pair(tls, third, key=second)
    node.proc.send_signal(signal.SIGHUP)
    await wait_for(lambda: "TLS certificate not reloaded" in node.output(), 10, "the refusal", node)
    assert "ERROR gateway.smtp: TLS certificate not reloaded" in node.output()
    still, shown = await verified_session(node.port, ca)
    assert shown == leaf(second)
    assert sample(http, reloads % "failed") == 1 and sample(http, reloads % "ok") == 1
    assert sample(http, "mailgate_tls_certificate_expiry_timestamp_seconds") >= expiry
    for client in (before, after, still):
        await client.close()
    assert node.terminate() == 0
