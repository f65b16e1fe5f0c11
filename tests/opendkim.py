"""Verify DKIM signatures with OpenDKIM (``opendkim-testmsg``), keys served by loopback DNS.

libopendkim resolves keys with the C library's resolver, which reads ``/etc/resolv.conf``
and only ever asks port 53. So each verification runs in its own user, network and mount
namespace (``unshare -rnm``, no privileges needed): there, this module's ``__main__`` brings
up the namespace's own loopback interface, bind-mounts a ``resolv.conf`` naming 127.0.0.1
over ``/etc/resolv.conf``, serves the keys with ``tests.dnsserver`` on 127.0.0.1:53, and runs
``opendkim-testmsg`` with the message on its standard input. Nothing outside the namespace
sees any of it, and the machine's resolver is never consulted.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Debian installs it in /usr/sbin, which is not on every user's PATH.
TESTMSG = shutil.which("opendkim-testmsg") or shutil.which("opendkim-testmsg", path="/usr/sbin")
_QUERIES = "dns-queries: "


def unavailable() -> str | None:
    """Why OpenDKIM verification cannot run here, or ``None`` if it can."""
    if TESTMSG is None:
        return "opendkim-testmsg is not installed (Debian package opendkim-tools)"
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "unshare/mount (util-linux) are not installed"
    probe = subprocess.run(
        ["unshare", "-rnm", "true"], capture_output=True, text=True, timeout=10, check=False
    )
    if probe.returncode != 0:
        return f"cannot create user/network namespaces: {probe.stderr.strip()}"
    return None


@dataclass(frozen=True, slots=True)
class Result:
    """What ``opendkim-testmsg`` made of a message."""

    status: int  # 0: a signature verified
    output: str  # what it printed (nothing when it verified)
    queries: tuple[str, ...]  # the names it looked up, e.g. "mg1._domainkey.x.test. TXT"

    @property
    def ok(self) -> bool:
        return self.status == 0 and not self.output


def verify(message: bytes, zone: Mapping[str, Sequence[str]]) -> Result:
    """Run ``opendkim-testmsg`` on ``message`` with DNS answering from ``zone``.

    ``zone`` maps ``"name TYPE"`` to rdata texts (see ``tests.dnsserver``).
    """
    with tempfile.TemporaryDirectory() as tmp:
        zone_file = Path(tmp) / "zone.json"
        zone_file.write_text(json.dumps(dict(zone)))
        done = subprocess.run(
            ["unshare", "-rnm", sys.executable, "-m", "tests.opendkim", str(zone_file), tmp],
            input=message,
            capture_output=True,
            cwd=REPO,
            timeout=60,
            check=False,
        )
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    lines = output.splitlines()
    queries: tuple[str, ...] = ()
    if lines and lines[-1].startswith(_QUERIES):
        queries = tuple(json.loads(lines.pop()[len(_QUERIES) :]))
    return Result(done.returncode, "\n".join(lines).strip(), queries)


def txt_zone(records: Mapping[str, str]) -> dict[str, list[str]]:
    """``{"sel._domainkey.dom": "v=DKIM1; ..."}`` as a zone of TXT records (255-split)."""
    zone: dict[str, list[str]] = {}
    for name, value in records.items():
        chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
        zone[f"{name} TXT"] = [" ".join(f'"{c}"' for c in chunks)]
    return zone


# --- inside the namespace ---


def _loopback_up() -> None:
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH22x", b"lo", flags | iff_up))


def _inside(zone_file: Path, tmp: Path) -> int:
    from tests.dnsserver import DnsServer

    _loopback_up()
    resolv = tmp / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
    subprocess.run(["mount", "--bind", str(resolv), "/etc/resolv.conf"], check=True)
    server = DnsServer(port=53)
    server.load(json.loads(zone_file.read_text()))
    with server:
        assert TESTMSG is not None
        done = subprocess.run(
            [TESTMSG, "-t", str(tmp)], stdin=sys.stdin.buffer, capture_output=True, check=False
        )
    sys.stdout.buffer.write(done.stdout)
    sys.stderr.buffer.write(done.stderr)
    sys.stderr.flush()
    asked = [f"{name} {rdtype}" for name, rdtype, _proto in server.queries]
    print("\n" + _QUERIES + json.dumps(asked), file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(_inside(Path(sys.argv[1]), Path(sys.argv[2])))
