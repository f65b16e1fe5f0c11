"""DKIM signing benchmark: dkimpy's built-in RSA against the gateway's signer, same run.

For one message of ``--size`` bytes (headers as intake leaves them, a multipart body), it
times, interleaved so that both see the same machine state:

* ``dkimpy``: ``dkim.DKIM(msg).sign(...)`` with the same selector, canonicalisation and
  header list as the gateway (dkimpy parses the PEM and does RSA in pure Python);
* ``gateway rsa``: ``DkimSigner.sign`` for a dealer with one RSA-2048 key, the code path
  intake runs per recipient copy (key parsed once and cached, RSA in OpenSSL);
* ``gateway rsa+ed25519``: the same with a second, Ed25519, signature.

Before timing, it checks that dkimpy and the gateway produce the identical RSA signature
field for the same ``t=`` (PKCS#1 v1.5 is deterministic), and that the gateway's signature
verifies with dkimpy's verifier. The run fails (exit 1) if the gateway's RSA median is
above ``--target-ms``.

Run from the repository root::

    .venv/bin/python bench/sign.py --iterations 500 --size 10240
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from unittest import mock

import dkim
from cryptography.hazmat.primitives import serialization

from gateway.clock import FakeClock
from gateway.dkim.keys import generate_key, public_record, write_private_key
from gateway.dkim.signing import DkimSigner, signed_header_names
from gateway.policy.model import DealerPolicy, DkimSettings, PolicySet
from gateway.policy.store import PolicyStore
from gateway.types import DealerId

DOMAIN = "example-motors.test"
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def make_message(size: int) -> bytes:
    """A message of exactly ``size`` bytes: trace and tracking headers, text + HTML."""
    head = (
        b"X-Mailgate-Ref: v1.0123456789abcdef.example-motors.0123456789abcdef\r\n"
        b"Received: from crm.test ([127.0.0.1]) by mailgate.test (Mailgate) with ESMTPSA "
        b"id 01JH00000000000000000000; Mon, 05 Jan 2026 09:00:00 +0000\r\n"
        b"From: Example Motors <sales@example-motors.test>\r\nTo: <customer@example.org>\r\n"
        b"Subject: Spring offers on every model\r\nDate: Mon, 05 Jan 2026 09:00:00 +0000\r\n"
        b"Message-ID: <bench@example-motors.test>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
    )
    text = b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    html = b"--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    end = b"--b1--\r\n"
    line = b"<p>Visit us this weekend for a test drive of the new models.</p>  \r\n"
    body = text + b"Visit us this weekend for a test drive.\r\n" + html
    filler = size - len(head) - len(body) - len(end)
    body += (line * (filler // len(line) + 1))[: max(0, filler - 2)] + b"\r\n"
    data = head + body + end
    return data[:size] if len(data) > size else data


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def summary(name: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    median = statistics.median(ms)
    p90 = ms[int(len(ms) * 0.9) - 1]
    return f"{name:<22} {median:8.3f} {p90:8.3f} {min(ms):8.3f} {1000 / median:10.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--target-ms", type=float, default=1.5)
    args = parser.parse_args()

    message = make_message(args.size)
    work = Path(tempfile.mkdtemp(prefix="mailgate-bench-sign-"))
    rsa_key, ed_key = generate_key("rsa"), generate_key("ed25519")
    write_private_key(work / "mg1.pem", rsa_key)
    write_private_key(work / "ed1.pem", ed_key)
    rsa_id = DkimSettings(DOMAIN, "mg1", work / "mg1.pem")
    ed_id = DkimSettings(DOMAIN, "ed1", work / "ed1.pem", "ed25519-sha256")

    def dealer(*ids: DkimSettings) -> DealerPolicy:
        return DealerPolicy(DealerId("bench"), "Bench", frozenset(), frozenset({DOMAIN}), (),
                            {}, dkim=ids)  # fmt: skip

    rsa_dealer, double_dealer = dealer(rsa_id), dealer(rsa_id, ed_id)
    policies = PolicySet(defaults={}, dealers={DealerId("bench"): rsa_dealer}, source_dir=work)
    signer = DkimSigner(PolicyStore(work, initial=policies), FakeClock(NOW))
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    headers, _ = dkim.rfc822_parse(message)
    include = list(signed_header_names(name for name, _ in headers))

    def dkimpy_sign() -> bytes:
        field: bytes = dkim.DKIM(message).sign(
            b"mg1", DOMAIN.encode(), pem, canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
        )  # fmt: skip
        return field

    # Same t= for both, then the whole field must match, b= included.
    with mock.patch.object(dkim.time, "time", lambda: NOW.timestamp()):
        reference = dkimpy_sign()
    ours = signer.sign(message, rsa_dealer)
    field = ours[: len(ours) - len(message)]
    if field != reference:
        print("FAIL: the gateway's RSA signature differs from dkimpy's", file=sys.stderr)
        print(reference.decode(), field.decode(), sep="\n", file=sys.stderr)
        return 2
    record = public_record(rsa_key).encode()
    if not dkim.verify(ours, dnsfunc=lambda _name, timeout=5: record):
        print("FAIL: the gateway's signature does not verify", file=sys.stderr)
        return 2

    runs: dict[str, list[float]] = {"dkimpy": [], "gateway rsa": [], "gateway rsa+ed25519": []}
    for _ in range(5):  # warm-up: imports, key cache, allocator
        dkimpy_sign(), signer.sign(message, rsa_dealer), signer.sign(message, double_dealer)
    for _ in range(args.iterations):
        runs["dkimpy"].append(timed(dkimpy_sign))
        runs["gateway rsa"].append(timed(lambda: signer.sign(message, rsa_dealer)))
        runs["gateway rsa+ed25519"].append(timed(lambda: signer.sign(message, double_dealer)))

    versions = f"Python {platform.python_version()}, dkimpy {version('dkimpy')}, " + (
        f"cryptography {version('cryptography')}, {platform.machine()}"
    )
    print(f"message {len(message)} bytes, {args.iterations} iterations; {versions}")
    print("RSA b= identical to dkimpy's: yes; verifies with dkimpy: yes")
    print(f"{'signer':<22} {'median':>8} {'p90':>8} {'min':>8} {'per second':>10}  (ms)")
    for name, samples in runs.items():
        print(summary(name, samples))
    fast = statistics.median(runs["gateway rsa"]) * 1000
    slow = statistics.median(runs["dkimpy"]) * 1000
    print(f"speed-up {slow / fast:.1f}x; target median < {args.target_ms} ms: "
          f"{'met' if fast < args.target_ms else 'MISSED'}")  # fmt: skip
    return 0 if fast < args.target_ms else 1


if __name__ == "__main__":
    sys.exit(main())
