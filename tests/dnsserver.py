"""A real DNS server on loopback (dnslib, UDP and TCP on one free port) serving a zone the test
writes, for SPF, DKIM, DMARC and ARC checks that go through the real resolver adapter.

A zone can be swapped while the server runs (`ZoneServer.serve`), so a suite of scenarios
shares one server; names or types in `silent` get no answer at all (a timeout), names in
`failing` answer SERVFAIL, and a UDP answer larger than `udp_limit` is truncated (TC), so the
client has to ask again over TCP."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, SOA, TXT, A, DNSError, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

from mxgate.adapters.dns import DnsPythonResolver


def txt_rdata(value: str | bytes | list[str] | list[bytes]) -> TXT:
    """A TXT record: one string (cut into 255-byte pieces) or the strings given."""
    if isinstance(value, list):
        return TXT([s.encode() if isinstance(s, str) else s for s in value])
    data = value.encode() if isinstance(value, str) else value
    return TXT([data[i : i + 255] for i in range(0, len(data), 255)] or [b""])


_RDATA = {"A": A, "AAAA": AAAA, "TXT": txt_rdata, "SPF": txt_rdata, "PTR": PTR, "CNAME": CNAME}
ANY_TYPE = "*"


@dataclass
class Zone(BaseResolver):  # type: ignore[misc]
    """Records by (name, type). Names in `failing` answer SERVFAIL (a broken server); (name,
    type) pairs in `silent` (type `*` for every type) are never answered (a timeout)."""

    records: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    silent: set[tuple[str, str]] = field(default_factory=set)
    queries: Counter[tuple[str, str]] = field(default_factory=Counter)
    transports: Counter[str] = field(default_factory=Counter)  # "udp" and "tcp" questions
    ttl: int = 300

    def add(self, name: str, rrtype: str, value: Any, preference: int = 10) -> None:
        name = name.lower().rstrip(".")
        rdata = MX(value, preference) if rrtype == "MX" else _RDATA[rrtype](value)
        self.records.setdefault((name, rrtype), []).append(rdata)

    def _known(self, name: str) -> bool:
        return any(known == name for known, _ in self.records)

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        # the labels as sent: a name may hold spaces or "%" (SPF macros make such names)
        name = ".".join(bytes(label).decode("latin-1") for label in request.q.qname.label).lower()
        rrtype = QTYPE[request.q.qtype]
        self.queries[(name, rrtype)] += 1
        self.transports[handler.protocol] += 1
        if (name, rrtype) in self.silent or (name, ANY_TYPE) in self.silent:
            raise DNSError("no answer: this name times out")  # dnslib then sends nothing
        if name in self.failing:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        owner = name
        for _ in range(8):  # follow CNAMEs inside the zone, as an authoritative server does
            cname = self.records.get((owner, "CNAME"), []) if rrtype != "CNAME" else []
            if not cname:
                break
            reply.add_answer(RR(owner, QTYPE.CNAME, rdata=cname[0], ttl=self.ttl))
            owner = str(cname[0].label).rstrip(".").lower()
            if (owner, rrtype) in self.silent or (owner, ANY_TYPE) in self.silent:
                raise DNSError("no answer: this name times out")
        for rdata in self.records.get((owner, rrtype), []):
            reply.add_answer(RR(owner, getattr(QTYPE, rrtype), rdata=rdata, ttl=self.ttl))
        if not reply.rr or all(rr.rtype == QTYPE.CNAME for rr in reply.rr):
            if not self._known(owner):
                reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(
                RR(
                    owner,
                    QTYPE.SOA,
                    rdata=SOA("ns.test", "admin.test", (1, 60, 60, 60, 60)),
                    ttl=60,
                )
            )
        return reply


class _Swappable(BaseResolver):  # type: ignore[misc]
    """Answers from whichever zone the server serves now."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone

    def resolve(self, request: Any, handler: Any) -> Any:
        return self.zone.resolve(request, handler)


def _handler(udp_limit: int) -> type[DNSHandler]:
    class Handler(DNSHandler):  # type: ignore[misc]
        """Over UDP, an answer past `udp_limit` bytes goes out as its question with TC set and
        no records, as a real server truncates (dnslib's own truncation drops the question)."""

        def get_reply(self, data: bytes) -> bytes:
            request = DNSRecord.parse(data)
            reply = self.server.resolver.resolve(request, self)
            packed: bytes = reply.pack()
            if self.protocol == "udp" and udp_limit and len(packed) > udp_limit:
                truncated = request.reply()
                truncated.header.tc = 1
                packed = truncated.pack()
            return packed

    return Handler


class ZoneServer:
    """UDP and TCP on the same loopback port, as a real name server listens."""

    def __init__(self, zone: Zone, *, udp_limit: int = 0) -> None:
        self.zone = zone
        self._resolver = _Swappable(zone)
        logger = DNSLogger(logf=lambda *_: None)
        handler = _handler(udp_limit)
        for _ in range(20):  # the TCP side takes the UDP side's port, when it is free
            udp = DNSServer(
                self._resolver, address="127.0.0.1", port=0, logger=logger, handler=handler
            )
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(
                    self._resolver, address="127.0.0.1", port=port, tcp=True, logger=logger
                )
            except OSError:
                udp.server.server_close()
                continue
            break
        else:
            raise RuntimeError("no free port for both UDP and TCP")
        self._servers = (udp, tcp)
        for server in self._servers:
            server.start_thread()
        self.port: int = port
        self._lock = threading.Lock()

    def serve(self, zone: Zone) -> None:
        """Answer from `zone` from now on."""
        with self._lock:
            self.zone = zone
            self._resolver.zone = zone

    def resolver(self, timeout: float = 2.0) -> DnsPythonResolver:
        return DnsPythonResolver(["127.0.0.1"], port=self.port, timeout=timeout)

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
            server.server.server_close()


def dkimpy_dnsfunc(resolver: Any) -> Any:
    """dkimpy's `dnsfunc(name, timeout)`, answered through a Resolver port (the same server and
    cache the gateway's own checks use)."""

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        answer = resolver.query(name.decode().rstrip("."), "TXT")
        return answer.records[0].encode() if answer.records else None

    return dnsfunc


def silent_port() -> int:
    """A loopback UDP port where no server listens: a DNS server that is down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
