"""The Resolver port on dnspython: the system's resolver, or the name servers configured."""

from __future__ import annotations

from collections.abc import Sequence

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename
import dns.rrset

from mxgate.errors import ConfigError
from mxgate.ports import DnsAnswer, DnsFailure

_NEGATIVE_TTL = 300.0  # when the answer carries no SOA to say how long "no such name" holds


class DnsPythonResolver:
    def __init__(
        self,
        nameservers: Sequence[str] | None = None,
        port: int = 53,
        timeout: float = 2.0,
    ) -> None:
        # configure=True reads /etc/resolv.conf: the system resolver, unless told otherwise
        try:
            self._resolver = dns.resolver.Resolver(configure=not nameservers)
        except dns.resolver.NoResolverConfiguration as error:
            raise ConfigError(
                "no system DNS resolver (/etc/resolv.conf): name servers under `dns:`"
            ) from error
        if nameservers:
            self._resolver.nameservers = list(nameservers)
        self._resolver.port = port
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout

    def query(self, name: str, rrtype: str) -> DnsAnswer:
        try:
            qname = (
                dns.reversename.from_address(name) if rrtype == "PTR" else dns.name.from_text(name)
            )
            answer = self._resolver.resolve(qname, rrtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return DnsAnswer(records=(), ttl=_NEGATIVE_TTL, exists=False)
        except (dns.name.NameTooLong, dns.name.LabelTooLong, dns.name.EmptyLabel, ValueError):
            return DnsAnswer(records=(), ttl=_NEGATIVE_TTL, exists=False)  # no such name can exist
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as error:
            raise DnsFailure(f"{rrtype} {name}: {error}") from error
        except dns.exception.DNSException as error:
            raise DnsFailure(f"{rrtype} {name}: {type(error).__name__}") from error
        if answer.rrset is None:
            soa_ttl = _negative_ttl(answer)
            return DnsAnswer(records=(), ttl=soa_ttl, exists=True)
        return DnsAnswer(records=_records(answer.rrset, rrtype), ttl=float(answer.rrset.ttl))


def _negative_ttl(answer: dns.resolver.Answer) -> float:
    for rrset in answer.response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return float(min(rrset.ttl, rrset[0].minimum))
    return _NEGATIVE_TTL


def _records(rrset: dns.rrset.RRset, rrtype: str) -> tuple[str, ...]:
    if rrtype == "TXT":
        # one TXT record may be several strings: RFC 7208 3.3 and RFC 6376 3.6.2.2 join them
        return tuple(b"".join(rdata.strings).decode("utf-8", "replace") for rdata in rrset)
    if rrtype == "MX":
        ordered = sorted(rrset, key=lambda rdata: rdata.preference)
        return tuple(rdata.exchange.to_text(omit_final_dot=True) for rdata in ordered)
    if rrtype in ("PTR", "CNAME"):
        return tuple(rdata.target.to_text(omit_final_dot=True) for rdata in rrset)
    return tuple(rdata.to_text() for rdata in rrset)
