"""DNS blocklists (RFC 5782), the local stand-in for a Mail Manager IP-reputation add-on.

The question for 192.0.2.99 under zen.example is the A record of 99.2.0.192.zen.example (an
IPv6 address: its 32 nibbles, reversed). An answer in 127.0.0.0/8 lists the address, and its
value says on which of the operator's lists (Spamhaus ZEN: 127.0.0.2 SBL, 127.0.0.4 XBL,
127.0.0.10 PBL, ...); NXDOMAIN (or no A record) means not listed. Answers in 127.255.255.0/24
are the operator's error codes (Spamhaus: queried through a public resolver, over quota) and
answers outside 127/8 are no DNSBL answer at all: both are lookup failures, never a listing,
so a misconfigured resolver cannot refuse all mail.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from mxgate.mailmanager.addons import LISTED, LISTINGS, AddonResult
from mxgate.ports import DnsFailure, Resolver

_LISTED = ipaddress.ip_network("127.0.0.0/8")
_OPERATOR_ERRORS = ipaddress.ip_network("127.255.255.0/24")


def query_name(ip: str, zone: str) -> str:
    """The name to look up for `ip` under `zone` (RFC 5782 2.1 and 2.4)."""
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        labels = reversed(str(address).split("."))
    else:
        labels = reversed(address.exploded.replace(":", ""))
    return ".".join([*labels, zone.rstrip(".")])


def read_answers(records: tuple[str, ...], codes: Mapping[str, str]) -> tuple[tuple[str, ...], str]:
    """The listings the A records say (by name when `codes` names them), or why they are no
    answer (an operator error code, or an address outside 127/8)."""
    listings: list[str] = []
    for record in records:
        try:
            value = ipaddress.ip_address(record)
        except ValueError:
            return (), f"answer {record!r} is not an address"
        if value in _OPERATOR_ERRORS or value not in _LISTED:
            return (), f"answer {record} is an error code of the list, not a listing"
        listings.append(codes.get(record, record))
    return tuple(dict.fromkeys(listings)), ""


def result_fields(listed: str = LISTED, listings: str = LISTINGS) -> dict[str, str]:
    """A DNSBL add-on's ResultFields, each with the expression that compares it."""
    return {listed: "BooleanExpression", listings: "StringExpression"}


class DnsblAnalyzer:
    """One add-on instance bound to one DNSBL zone. It answers two result fields: a boolean
    (listed) and the listings' names. Never raises: a lookup that fails is a result with
    `failure` set, whose fields say "not listed" (what else it means is the caller's choice)."""

    def __init__(
        self,
        analyzer: str,
        zone: str,
        resolver: Resolver,
        codes: Mapping[str, str],
        fields: tuple[str, str] = (LISTED, LISTINGS),
    ) -> None:
        self.analyzer = analyzer
        self.zone = zone.rstrip(".")
        self.resolver = resolver
        self.codes = dict(codes)
        self.listed_field, self.listings_field = fields

    @property
    def result_fields(self) -> dict[str, str]:
        return result_fields(self.listed_field, self.listings_field)

    def _result(self, listings: tuple[str, ...], summary: str, failure: str = "") -> AddonResult:
        return AddonResult(
            self.analyzer,
            {self.listed_field: bool(listings), self.listings_field: listings},
            flagged=bool(listings),
            failure=failure,
            summary=summary,
        )

    def failed(self, ip: str, why: str) -> AddonResult:
        return self._result((), f"{ip} could not be looked up in {self.zone}: {why}", why)

    def analyze(self, ip: str) -> AddonResult:
        try:
            name = query_name(ip, self.zone)
        except ValueError:
            return self.failed(ip or "(no address)", "the sender's address is not known")
        try:
            answer = self.resolver.query(name, "A")
        except DnsFailure as error:
            return self.failed(ip, str(error))
        listings, problem = read_answers(answer.records, self.codes)
        if problem:
            return self.failed(ip, problem)
        if not listings:
            return self._result((), f"{ip} is not in {self.zone}")
        return self._result(listings, f"{ip} is listed in {self.zone} ({', '.join(listings)})")
