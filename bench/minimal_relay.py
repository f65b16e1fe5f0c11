"""The floor for this stack: a minimal durable relay made of the gateway's own parts.

aiosmtpd receives (EHLO, STARTTLS, EHLO, AUTH PLAIN with one fixed password, then any
number of messages per connection), each message is written to a temporary file, fsynced,
renamed into the spool directory and the directory fsynced before the 250; a pool of
aiosmtplib connections (``--workers``, the gateway's default of 10) relays spooled files to
``--upstream`` and unlinks them. No checks, no database, no signing: whatever the gateway
costs beyond this is the price of what it does.

Run as its own process::

    python bench/minimal_relay.py --listen 127.0.0.1:2700 --spool /tmp/spool \
        --upstream 127.0.0.1:2600 --password secret
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import ipaddress
import itertools
import json
import logging
import os
import signal
import ssl
import time
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger("bench.minimal_relay")

HOSTNAME = "relay.bench.test"


def self_signed_context(directory: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed P-256 certificate (as the gateway's)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(HOSTNAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "relay.crt", directory / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context


class Spool:
    """Durable files: ``tmp/`` while being written, ``new/`` once fsynced and renamed."""

    def __init__(self, root: Path) -> None:
        self.tmp = root / "tmp"
        self.new = root / "new"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.new.mkdir(parents=True, exist_ok=True)
        self._seq = itertools.count()

    def next_name(self) -> str:
        """A name unique within this process."""
        return f"{time.time_ns()}.{os.getpid()}.{next(self._seq)}"

    def store(self, name: str, envelope: dict[str, Any], content: bytes) -> Path:
        """Write, fsync, rename into ``new/`` and fsync the directory (blocking)."""
        tmp_path = self.tmp / name
        final = self.new / name
        head = json.dumps(envelope).encode() + b"\n"
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, head + content)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp_path, final)
        dir_fd = os.open(self.new, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return final

    @staticmethod
    def load(path: Path) -> tuple[str, list[str], bytes]:
        """Read a spooled file back: (sender, recipients, content)."""
        raw = path.read_bytes()
        head, _, content = raw.partition(b"\n")
        envelope = json.loads(head)
        return envelope["from"], envelope["to"], content


class Receiver:
    """aiosmtpd handler: spool durably, hand the file to the delivery pool, answer 250."""

    def __init__(self, spool: Spool, queue: asyncio.Queue[Path], password: bytes) -> None:
        self._spool = spool
        self._queue = queue
        self._password = password

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """Accept any user name with the one fixed password."""
        ok = isinstance(data, LoginPassword) and data.password == self._password
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Spool the message (fsync off the event loop), queue it, answer 250."""
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        name = self._spool.next_name()
        meta = {"from": envelope.mail_from or "", "to": list(envelope.rcpt_tos)}
        try:
            path = await asyncio.to_thread(self._spool.store, name, meta, content)
        except OSError as exc:
            log.error("spool write failed: %s", exc)
            return "451 4.3.0 Spool write failed"
        self._queue.put_nowait(path)
        return f"250 2.0.0 OK queued as {name}"


async def deliver(
    worker: int,
    queue: asyncio.Queue[Path],
    spool: Spool,
    host: str,
    port: int,
    reuse: int,
    idle: float,
) -> None:
    """One delivery connection: relay spooled files, reconnecting every ``reuse`` messages."""
    client: aiosmtplib.SMTP | None = None
    sent = 0
    while True:
        try:
            path = await asyncio.wait_for(queue.get(), idle)
        except TimeoutError:
            if client is not None:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                    await client.quit()
                client = None
            continue
        try:
            if client is None or sent >= reuse:
                if client is not None:
                    with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                        await client.quit()
                client = aiosmtplib.SMTP(
                    hostname=host,
                    port=port,
                    local_hostname=HOSTNAME,
                    start_tls=False,
                    use_tls=False,
                    timeout=60,
                )
                await client.connect()
                sent = 0
            sender, recipients, content = spool.load(path)
            await client.sendmail(sender, recipients, content)
            sent += 1
            path.unlink()
        except (aiosmtplib.SMTPException, OSError) as exc:
            log.warning("worker %d: delivery of %s failed (%s); retrying in 1 s", worker, path, exc)
            client = None
            await asyncio.sleep(1)
            queue.put_nowait(path)


async def serve(args: argparse.Namespace) -> None:
    """Run the listener and the delivery pool until SIGTERM/SIGINT or ``--max-seconds``."""
    spool = Spool(args.spool)
    queue: asyncio.Queue[Path] = asyncio.Queue()
    for leftover in sorted(spool.new.iterdir()):
        queue.put_nowait(leftover)
    receiver = Receiver(spool, queue, args.password.encode())
    tls = self_signed_context(args.spool / "tls")
    host, _, port = args.listen.rpartition(":")
    up_host, _, up_port = args.upstream.rpartition(":")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            receiver,
            hostname=HOSTNAME,
            ident="bench minimal relay",
            decode_data=False,
            enable_SMTPUTF8=False,
            data_size_limit=25 * 1000**2,
            tls_context=tls,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=receiver.authenticate,
            timeout=60,
        ),
        host=host,
        port=int(port),
        reuse_address=True,
    )
    workers = [
        asyncio.create_task(deliver(i, queue, spool, up_host, int(up_port), args.reuse, args.idle))
        for i in range(args.workers)
    ]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    server.close()
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)


def main() -> None:
    """Parse arguments and run the relay."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--listen", required=True, help="host:port to accept submissions on")
    parser.add_argument("--spool", type=Path, required=True, help="spool directory")
    parser.add_argument("--upstream", required=True, help="host:port to relay to (plain SMTP)")
    parser.add_argument("--password", required=True, help="the AUTH PLAIN password")
    parser.add_argument("--workers", type=int, default=10, help="delivery connections")
    parser.add_argument("--reuse", type=int, default=100, help="messages per connection")
    parser.add_argument("--idle", type=float, default=30.0, help="idle connection timeout")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="stop after this")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
