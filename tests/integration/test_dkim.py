"""DKIM end to end: CRM client -> gateway (signs) -> sink, verified by independent code.

Each message that reaches the sink is verified twice, with the public keys served by a
DNS server on loopback (tests/dnsserver.py), never from files and never the internet:

* by OpenDKIM (``opendkim-testmsg``, Debian ``opendkim-tools``), run in its own network
  namespace where that DNS server answers on 127.0.0.1:53 (see tests/opendkim.py);
* by dkimpy's verifier, asking the same server through dnspython (RSA signatures;
  dkimpy verifies Ed25519 only with PyNaCl, which the project does not install).

A message with several signatures is verified one signature at a time (the others
removed), so a good signature cannot hide a bad one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dkim
import dns.exception
import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from gateway.cli.main import main as mailgate
from gateway.dkim.keys import generate_key, public_record, write_private_key
from gateway.settings import Settings
from tests import opendkim
from tests.dnsserver import DnsServer
from tests.integration.conftest import Harness, dot_stuff, make_settings, message

MakeHarness = Callable[..., Awaitable[Harness]]
DOMAIN = "example-motors.test"
OPERATOR = "mailgate.test"

# Generated once per module: RSA key generation dominates otherwise.
KEYS = {
    f"mg1._domainkey.{DOMAIN}": generate_key("rsa"),
    f"ed1._domainkey.{DOMAIN}": generate_key("ed25519"),
    f"op1._domainkey.{OPERATOR}": generate_key("rsa"),
}
NO_OPENDKIM = opendkim.unavailable()


def install(policies: Path, selector: str, domain: str, algorithm: str = "rsa-sha256") -> None:
    """Write the key for ``selector._domainkey.domain`` and add its [[dkim]] entry."""
    key_file = f"keys/{domain}.{selector}.pem"
    write_private_key(policies / key_file, KEYS[f"{selector}._domainkey.{domain}"])
    dealer = policies / "dealers" / "example-motors.toml"
    dealer.write_text(
        dealer.read_text()
        + f'\n[[dkim]]\ndomain = "{domain}"\nselector = "{selector}"\n'
        + f'key_file = "{key_file}"\nalgorithm = "{algorithm}"\n'
    )


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    """The harness's settings, with an RSA key for the example dealer."""

    def factory(sink_port: int | None, **sections: dict[str, Any]) -> Settings:
        settings = make_settings(tmp_path, sink_port, **sections)
        install(settings.server.policies_dir, "mg1", DOMAIN)
        return settings

    return factory


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        for name, key in KEYS.items():
            server.add_txt(name, public_record(key))
        yield server


def published(server: DnsServer) -> dict[str, list[str]]:
    """The server's records in tests/opendkim.py's zone format."""
    return {
        f"{name.to_text()} {rdtype.name}": list(rdatas)
        for (name, rdtype), rdatas in server.records.items()
    }


def loopback_txt(server: DnsServer) -> Callable[..., bytes | None]:
    """dkimpy's ``dnsfunc``, answered by the loopback server."""
    resolver = server.resolver()

    def get_txt(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode("ascii"), "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.exception.Timeout):
            return None
        return b"".join(b"".join(r.strings) for r in answer)

    return get_txt


_SIGNATURE = re.compile(rb"^DKIM-Signature:.*?\r\n(?![ \t])", re.S | re.M | re.I)


def signatures(data: bytes) -> list[bytes]:
    head = data.partition(b"\r\n\r\n")[0] + b"\r\n"
    return _SIGNATURE.findall(head)


def tag(signature: bytes, name: bytes) -> bytes:
    value = re.sub(rb"\s+", b"", signature.split(b":", 1)[1])
    found = re.search(rb"(?:^|;)" + name + rb"=([^;]*)", value)
    assert found is not None, signature
    return found.group(1)


def only(data: bytes, signature: bytes) -> bytes:
    """``data`` with every DKIM-Signature but ``signature`` removed."""
    for other in signatures(data):
        if other != signature:
            data = data.replace(other, b"", 1)
    return data


def verify_each(data: bytes, server: DnsServer) -> list[tuple[str, str]]:
    """Verify every signature of ``data`` on its own; return their (d=, s=)."""
    found = signatures(data)
    assert found, "the message arrived unsigned"
    zone = published(server)
    for index, signature in enumerate(found):
        where = f"{tag(signature, b's').decode()}._domainkey.{tag(signature, b'd').decode()}."
        single = only(data, signature)
        result = opendkim.verify(single, zone)
        assert result.ok, f"OpenDKIM rejected {where}: {result.output}"
        assert f"{where} TXT" in result.queries, result.queries
        tampered = single.replace(b"\r\n\r\n", b"\r\n\r\nP.S. ", 1)
        assert not opendkim.verify(tampered, zone).ok, f"{where}: a changed body verified"
        if tag(signature, b"a") == b"rsa-sha256":
            assert dkim.DKIM(data).verify(idx=index, dnsfunc=loopback_txt(server)), where
    return [(tag(s, b"d").decode(), tag(s, b"s").decode()) for s in found]


async def submit(h: Harness, payload: bytes, rcpt: str = "customer@example.org") -> str:
    client = await h.client()
    try:
        assert (await client.cmd(f"MAIL FROM:<sales@{DOMAIN}>")).code == 250
        assert (await client.cmd(f"RCPT TO:<{rcpt}>")).code == 250
        return str(await client.data(payload))
    finally:
        await client.close()


async def deliver(h: Harness, payload: bytes, rcpt: str = "customer@example.org") -> bytes:
    before = len(h.sink.messages)
    reply = await submit(h, payload, rcpt)
    assert reply.startswith("250 "), reply
    await h.wait_delivered(before + 1)
    return h.sink.messages[before].data


async def reload(h: Harness) -> None:
    result = await asyncio.to_thread(h.gateway.policies.reload)
    assert result.ok, result.problems


def distinct(n: int) -> tuple[bytes, str]:
    """Message ``n`` of a series, to its own recipient (repeats would count as duplicates)."""
    body = f"Hello,\r\n\r\nMessage {n} of the series: your test drive is booked.\r\n"
    return dot_stuff(message(subject=f"Your test drive, part {n}", body=body)), (
        f"customer{n}@example.org"
    )


needs_opendkim = pytest.mark.skipif(NO_OPENDKIM is not None, reason=str(NO_OPENDKIM))

ATTACHMENT = (
    b"From: Example Motors <sales@example-motors.test>\r\nTo: <customer@example.org>\r\n"
    b"Subject: Your test drive\r\nDate: Mon, 05 Jan 2026 09:00:00 +0000\r\n"
    b"Message-ID: <att@example-motors.test>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="mix"\r\n\r\n'
    b"--mix\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    b"\r\nYour quote is attached. \xe2\x82\xac 24\xc2\xa0990.\r\n"
    b"--mix\r\nContent-Type: application/pdf; name=quote.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=quote.pdf\r\n"
    b"\r\n" + b"JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K\r\n" * 40
    + b"--mix--\r\n"
)  # fmt: skip
PAYLOADS = {
    "8bit": dot_stuff(message(body="Bonjour Zoë, votre essai est prêt. Ça roule ?\r\n")),
    "long-lines": dot_stuff(
        message(
            subject="Your test drive " + "and more " * 150,
            extra="Content-Transfer-Encoding: 8bit\r\n",
            body="<p>" + "Spring offers on every model. " * 150 + "</p>\r\n.dot\r\n",
        )
    ),
    "lf-only": message(body="Hello,\n\nYour test drive is booked.\n").replace(b"\r\n", b"\n")
    + b"\r\n.\r\n",
    "attachment": dot_stuff(ATTACHMENT),
}


@needs_opendkim
@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
async def test_what_arrives_verifies_independently(
    make_harness: MakeHarness, dns_server: DnsServer, payload: bytes
) -> None:
    h = await make_harness()
    data = await deliver(h, payload)
    assert data.startswith(b"DKIM-Signature: ")
    assert verify_each(data, dns_server) == [(DOMAIN, "mg1")]
    assert b"\r\n" in data and not re.search(rb"\r(?!\n)|(?<!\r)\n", data)
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


@needs_opendkim
async def test_rsa_ed25519_and_operator_signatures(
    make_harness: MakeHarness, dns_server: DnsServer
) -> None:
    h = await make_harness()
    # Added while running: a reload picks up the new identities and their keys.
    install(h.gateway.policies.directory, "ed1", DOMAIN, "ed25519-sha256")
    install(h.gateway.policies.directory, "op1", OPERATOR)
    await reload(h)
    data = await deliver(h, dot_stuff(message()))
    assert verify_each(data, dns_server) == [(DOMAIN, "mg1"), (DOMAIN, "ed1"), (OPERATOR, "op1")]
    assert [tag(s, b"a") for s in signatures(data)] == [
        b"rsa-sha256",
        b"ed25519-sha256",
        b"rsa-sha256",
    ]


async def test_dealer_without_dkim_is_relayed_unsigned(make_harness: MakeHarness) -> None:
    h = await make_harness()
    client = await h.client("rival-crm")
    try:
        assert (await client.cmd("MAIL FROM:<sales@rival-motors.test>")).code == 250
        assert (await client.cmd("RCPT TO:<customer@example.org>")).code == 250
        reply = await client.data(dot_stuff(message(sender="sales@rival-motors.test")))
        assert reply.code == 250, reply
    finally:
        await client.close()
    await h.wait_delivered(1)
    assert signatures(h.sink.messages[0].data) == []


async def test_unreadable_key_at_sign_time_is_451_and_nothing_is_queued(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    sample = h.gateway.metrics.registry.get_sample_value
    failures = ("mailgate_dkim_signing_failures_total", {"dealer": "example-motors"})
    assert sample(*failures) == 0  # present from the start: a rule sees the first one
    (h.gateway.policies.directory / f"keys/{DOMAIN}.mg1.pem").unlink()
    reply = await submit(h, dot_stuff(message()))
    assert reply.startswith("451 4.3.0 "), reply
    assert sample(*failures) == 1
    assert await h.gateway.storage.list_messages() == []
    await asyncio.sleep(0.3)
    assert h.sink.messages == []


@needs_opendkim
async def test_rotation_signs_with_both_then_only_the_new(
    make_harness: MakeHarness, dns_server: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    h = await make_harness()
    policies = h.gateway.policies.directory
    args = ["dkim", "rotate", "--dealer", "example-motors", "--policies", str(policies)]
    assert mailgate([*args, "--transition", "3s"]) == 0
    started = datetime.now(UTC)
    out = capsys.readouterr().out
    assert "mg2._domainkey.example-motors.test. 3600 IN TXT" in out
    new_key = load_pem_private_key((policies / f"keys/{DOMAIN}.mg2.pem").read_bytes(), None)
    record = public_record(new_key)  # type: ignore[arg-type]
    assert f"value: {record}" in out
    dns_server.add_txt(f"mg2._domainkey.{DOMAIN}", record)
    await reload(h)

    during = await deliver(h, *distinct(1))
    assert datetime.now(UTC) < started + timedelta(seconds=3), "the machine is too slow"
    assert verify_each(during, dns_server) == [(DOMAIN, "mg1"), (DOMAIN, "mg2")]

    # No edit and no reload: retire_at passing is enough.
    await asyncio.sleep(
        max(0.0, (started + timedelta(seconds=3.2) - datetime.now(UTC)).total_seconds())
    )
    after = await deliver(h, *distinct(2))
    assert verify_each(after, dns_server) == [(DOMAIN, "mg2")]

    assert mailgate([*args, "--finish"]) == 0
    assert "removed 'mg1'" in capsys.readouterr().out
    await reload(h)
    (policies / f"keys/{DOMAIN}.mg1.pem").unlink()  # the old key is no longer needed
    finished = await deliver(h, *distinct(3))
    assert verify_each(finished, dns_server) == [(DOMAIN, "mg2")]


def test_keygen_writes_an_owner_only_key_and_prints_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = make_settings(tmp_path, None).server.policies_dir
    code = mailgate(
        ["dkim", "keygen", "--dealer", "example-motors", "--policies", str(policies),
         "--type", "ed25519", "--add"]
    )  # fmt: skip
    assert code == 0
    path = policies / f"keys/{DOMAIN}.mg1.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    key = load_pem_private_key(path.read_bytes(), None)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    out = capsys.readouterr().out
    assert f"mg1._domainkey.{DOMAIN}" in out and "k=ed25519" in out
    assert public_record(key) in out  # type: ignore[arg-type]
    assert len(raw) == 32
    assert 'algorithm = "ed25519-sha256"' in (policies / "dealers/example-motors.toml").read_text()
    # A second run never overwrites: the next free selector is used.
    assert (
        mailgate(["dkim", "keygen", "--dealer", "example-motors", "--policies", str(policies)]) == 0
    )
    assert (policies / f"keys/{DOMAIN}.mg2.pem").exists()
