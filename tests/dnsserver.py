"""A real DNS server on loopback (dnslib, UDP, a free port) serving a zone the test writes, for
SPF, DKIM and DMARC checks that go through the real resolver adapter."""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, SOA, TXT, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from mxgate.adapters.dns import DnsPythonResolver


def _txt(value: str) -> TXT:
    data = value.encode()
    return TXT([data[i : i + 255] for i in range(0, len(data), 255)] or [b""])


_RDATA = {
    "A": A,
    "AAAA": AAAA,
    "TXT": _txt,
    "PTR": PTR,
    "CNAME": CNAME,
}


@dataclass
class Zone(BaseResolver):  # type: ignore[misc]
    """Records by (name, type); names in `failing` answer SERVFAIL (a broken server)."""

    records: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    queries: Counter[tuple[str, str]] = field(default_factory=Counter)
    ttl: int = 300

    def add(self, name: str, rrtype: str, value: str, preference: int = 10) -> None:
        name = name.lower().rstrip(".")
        rdata = MX(value, preference) if rrtype == "MX" else _RDATA[rrtype](value)
        self.records.setdefault((name, rrtype), []).append(rdata)

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        rrtype = QTYPE[request.q.qtype]
        self.queries[(name, rrtype)] += 1
        if name in self.failing:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        for rdata in self.records.get((name, rrtype), []):
            reply.add_answer(RR(name, getattr(QTYPE, rrtype), rdata=rdata, ttl=self.ttl))
        if not reply.rr:
            if not any(known == name for known, _ in self.records):
                reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(
                RR(name, QTYPE.SOA, rdata=SOA("ns.test", "admin.test", (1, 60, 60, 60, 60)), ttl=60)
            )
        return reply


class ZoneServer:
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.server = DNSServer(
            zone, address="127.0.0.1", port=0, logger=DNSLogger(logf=lambda *_: None)
        )
        self.server.start_thread()
        self.port: int = self.server.server.server_address[1]

    def resolver(self, timeout: float = 2.0) -> DnsPythonResolver:
        return DnsPythonResolver(["127.0.0.1"], port=self.port, timeout=timeout)

    def stop(self) -> None:
        self.server.stop()
        self.server.server.server_close()


def silent_port() -> int:
    """A loopback UDP port where no server listens: a DNS server that is down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
