"""A small authoritative DNS server for tests: UDP and TCP on one loopback port.

It answers from a dict of ``(name, type) -> [rdata text]`` and nothing else: no recursion,
no internet. Names that have no records at all get NXDOMAIN; a name with records of other
types gets an empty NOERROR answer (NODATA). UDP answers that do not fit the client's
buffer (512 octets, or its EDNS size) come back truncated, so clients retry over TCP as
real ones do with long DKIM records.

In a test::

    with DnsServer() as dns_server:
        dns_server.add_txt("mg1._domainkey.example.test", "v=DKIM1; k=rsa; p=...")
        answer = dns_server.resolver().resolve("mg1._domainkey.example.test", "TXT")

As a process (e.g. inside a network namespace for tools that read resolv.conf)::

    python -m tests.dnsserver --port 53 --zone zone.json   # {"name TYPE": ["rdata", ...]}
"""

from __future__ import annotations

import argparse
import json
import socketserver
import struct
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

__all__ = ["DnsServer"]

Records = dict[tuple[dns.name.Name, dns.rdatatype.RdataType], list[str]]


@dataclass
class DnsServer:
    """Serves ``records`` on ``host``, UDP and TCP on the same port (0: any free one)."""

    host: str = "127.0.0.1"
    port: int = 0
    ttl: int = 300
    records: Records = field(default_factory=dict)
    queries: list[tuple[str, str, str]] = field(default_factory=list)  # (name, type, proto)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _servers: list[socketserver.BaseServer] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    # --- records ---

    def add(self, name: str, rdtype: str, *rdatas: str) -> None:
        """Add records in zone-file text form, e.g. ``add("x.test", "MX", "10 mx.x.test.")``."""
        key = (dns.name.from_text(name), dns.rdatatype.from_text(rdtype))
        for text in rdatas:
            dns.rdata.from_text(dns.rdataclass.IN, key[1], text)  # fail early on typos
        with self._lock:
            self.records.setdefault(key, []).extend(rdatas)

    def add_txt(self, name: str, value: str) -> None:
        """Add one TXT record holding ``value``, split into 255-octet strings."""
        chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
        self.add(name, "TXT", " ".join(_quoted(c) for c in chunks))

    def remove(self, name: str, rdtype: str | None = None) -> None:
        """Remove all records of ``name`` (of one type, if given)."""
        owner = dns.name.from_text(name)
        with self._lock:
            for key in list(self.records):
                if key[0] == owner and (
                    rdtype is None or key[1] == dns.rdatatype.from_text(rdtype)
                ):
                    del self.records[key]

    def load(self, zone: Mapping[str, Sequence[str]]) -> None:
        """Add ``{"name TYPE": [rdata, ...]}`` entries (the ``--zone`` file format)."""
        for key, rdatas in zone.items():
            name, _, rdtype = key.rpartition(" ")
            self.add(name, rdtype, *rdatas)

    # --- serving ---

    def start(self) -> DnsServer:
        """Bind UDP and TCP and serve in background threads."""
        for _attempt in range(20):
            udp = _UdpServer((self.host, self.port), _UdpHandler, self)
            try:
                tcp = _TcpServer((self.host, udp.server_address[1]), _TcpHandler, self)
            except OSError:
                udp.server_close()
                if self.port:
                    raise
                continue
            break
        else:
            raise OSError("no port free for both UDP and TCP")
        self.port = int(udp.server_address[1])
        self._servers = [udp, tcp]
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving and close the sockets."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def resolver(self, timeout: float = 2.0) -> dns.resolver.Resolver:
        """A dnspython resolver that asks this server only."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.host]
        resolver.port = self.port
        resolver.lifetime = timeout
        resolver.timeout = timeout
        return resolver

    # --- answering ---

    def answer(self, wire: bytes, proto: str, max_size: int | None) -> bytes | None:
        """The response to one query in wire format, or ``None`` for garbage."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        response.flags &= ~dns.flags.RA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        self.queries.append(
            (question.name.to_text(), dns.rdatatype.to_text(question.rdtype), proto)
        )
        with self._lock:
            exists = any(key[0] == question.name for key in self.records)
            rdatas = list(self.records.get((question.name, question.rdtype), ()))
        if rdatas:
            response.answer.append(
                dns.rrset.from_text_list(
                    question.name, self.ttl, dns.rdataclass.IN, question.rdtype, rdatas
                )
            )
        elif not exists:
            response.set_rcode(dns.rcode.NXDOMAIN)
        if max_size is None:
            return response.to_wire()
        limit = max(512, query.payload if query.edns >= 0 else 512)
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer.clear()
            response.flags |= dns.flags.TC
            return response.to_wire()


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, address: tuple[str, int], handler: type, owner: DnsServer) -> None:
        self.owner = owner
        super().__init__(address, handler)


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, owner: DnsServer) -> None:
        self.owner = owner
        super().__init__(address, handler)


class _UdpHandler(socketserver.BaseRequestHandler):
    server: _UdpServer

    def handle(self) -> None:
        data, sock = self.request
        reply = self.server.owner.answer(data, "udp", max_size=512)
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _TcpHandler(socketserver.StreamRequestHandler):
    server: _TcpServer

    def handle(self) -> None:
        # RFC 7766 §6.2.1: several queries may arrive on one connection.
        while True:
            header = self.rfile.read(2)
            if len(header) < 2:
                return
            (length,) = struct.unpack("!H", header)
            data = self.rfile.read(length)
            if len(data) < length:
                return
            reply = self.server.owner.answer(data, "tcp", max_size=None)
            if reply is None:
                return
            self.wfile.write(struct.pack("!H", len(reply)) + reply)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--zone", type=Path, help='JSON: {"name TYPE": ["rdata", ...]}')
    args = parser.parse_args(list(argv) if argv is not None else None)
    server = DnsServer(host=args.host, port=args.port)
    if args.zone:
        server.load(json.loads(args.zone.read_text()))
    server.start()
    print(f"ready {server.host} {server.port}", flush=True)
    try:
        sys.stdin.read()  # serve until stdin closes (the parent process ends)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
