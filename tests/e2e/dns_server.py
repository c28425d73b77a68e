"""A real authoritative DNS server on 127.0.0.1 for tests: dnslib's threaded UDP+TCP server answering
from a dict the test edits while it runs (A, AAAA, CNAME, TXT). Anything not in the dict is NXDOMAIN,
so no test query ever leaves loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from dnslib import AAAA, CNAME, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSServer


@dataclass
class Zone:
    """Records by (lower-case name without trailing dot, type). Thread-safe: the server reads it from
    its own threads while the test changes it."""

    records: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, name: str, rtype: str, *values: str) -> None:
        with self.lock:
            self.records[(name.lower().rstrip("."), rtype.upper())] = list(values)

    def remove(self, name: str, rtype: str) -> None:
        with self.lock:
            self.records.pop((name.lower().rstrip("."), rtype.upper()), None)

    def lookup(self, name: str, rtype: str) -> list[str]:
        with self.lock:
            return list(self.records.get((name.lower().rstrip("."), rtype.upper()), []))

    def known(self, name: str) -> bool:
        key = name.lower().rstrip(".")
        with self.lock:
            return any(n == key for n, _ in self.records)


class _ZoneResolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, zone: Zone) -> None:
        self.zone = zone

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        qname = str(request.q.qname)
        qtype = QTYPE[request.q.qtype]
        name = qname.rstrip(".")
        cname = self.zone.lookup(name, "CNAME")
        if cname and qtype != "CNAME":
            reply.add_answer(RR(qname, QTYPE.CNAME, rdata=CNAME(cname[0]), ttl=5))
            name = cname[0].rstrip(".")
            qname = name + "."
        builders = {"A": A, "AAAA": AAAA, "CNAME": CNAME, "TXT": TXT}
        if qtype in builders:
            for value in self.zone.lookup(name, qtype):
                reply.add_answer(RR(qname, getattr(QTYPE, qtype), rdata=builders[qtype](value), ttl=5))
        if not reply.rr and not self.zone.known(name):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


def _free_port() -> int:
    # One number free for both UDP and TCP on 127.0.0.1.
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


class _QuietLogger:
    def __getattr__(self, name: str) -> object:
        return lambda *args, **kwargs: None


@dataclass
class RunningDns:
    zone: Zone
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextmanager
def dns_server(zone: Zone | None = None) -> Iterator[RunningDns]:
    zone = zone or Zone()
    port = _free_port()
    resolver = _ZoneResolver(zone)
    servers = [
        DNSServer(resolver, address="127.0.0.1", port=port, tcp=tcp, logger=_QuietLogger())
        for tcp in (False, True)
    ]
    for server in servers:
        server.start_thread()
    try:
        yield RunningDns(zone, port)
    finally:
        for server in servers:
            server.stop()
            server.server.server_close()
