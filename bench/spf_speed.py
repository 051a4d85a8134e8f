"""SPF: mxgate's evaluator next to pyspf behind the same Resolver port, the measurement behind
the choice written at the top of `mxgate/authn/spf.py`.

Both run the openspf RFC 7208 suite (pass counts) and then one typical check many times over
warm answers (a domain whose record includes another, with `mx` and `ip4` terms), each through
a CachingResolver in front of a DNS server on loopback. pyspf reaches the port through its
module-level `spf.DNSLookup` hook. Prints figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import dns.name  # noqa: E402
import dns.reversename  # noqa: E402
import spf  # noqa: E402
import yaml  # noqa: E402

from mxgate.authn.resolver import CachingResolver  # noqa: E402
from mxgate.authn.spf import check_mail_from  # noqa: E402
from mxgate.ports import DnsFailure, Resolver  # noqa: E402
from tests.dnsserver import Zone, ZoneServer  # noqa: E402
from tests.integration.test_spf_suite import SUITE, TIMEOUT, _zone  # noqa: E402


def pyspf_behind(resolver: Resolver) -> Callable[..., list[Any]]:
    """pyspf's DNS hook answered from the port, in the shapes pyspf's own lookups return."""

    def lookup(name: str, qtype: str, *_: Any, **__: Any) -> list[Any]:
        try:
            # the port asks PTR by address; pyspf asks by the reverse name
            question = (
                str(dns.reversename.to_address(dns.name.from_text(name)))
                if qtype == "PTR"
                else name
            )
            answer = resolver.query(question, qtype)
        except DnsFailure as error:
            raise spf.TempError(f"DNS {error}") from error
        if qtype in ("TXT", "SPF"):
            return [((name, qtype), (record.encode(),)) for record in answer.records]
        if qtype == "MX":
            return [((name, qtype), (0, record)) for record in answer.records]
        return [((name, qtype), record) for record in answer.records]

    return lookup


def with_pyspf(resolver: Resolver, ip: str, mail_from: str, helo: str) -> str:
    spf.DNSLookup = pyspf_behind(resolver)
    result, _, _ = spf.query(i=ip, s=mail_from, h=helo).check()
    return {"unknown": "permerror", "error": "temperror"}.get(result, result)


def with_mxgate(resolver: Resolver, ip: str, mail_from: str, helo: str) -> str:
    return check_mail_from(resolver, ip, mail_from, helo).result.value


def suite(server: ZoneServer, check: Callable[[Resolver, str, str, str], str]) -> int:
    passed = 0
    with SUITE.open("rb") as stream:
        for scenario in yaml.safe_load_all(stream):
            server.serve(_zone(scenario["zonedata"]))
            for test in scenario["tests"].values():
                resolver = CachingResolver(server.resolver(timeout=TIMEOUT))
                result = check(resolver, test["host"], test["mailfrom"], test["helo"])
                expected = test["result"] if isinstance(test["result"], list) else [test["result"]]
                passed += result in expected
    return passed


def typical_zone() -> Zone:
    zone = Zone()
    zone.add("shop.example", "TXT", "v=spf1 mx ip4:198.51.100.0/24 include:_spf.esp.example ~all")
    zone.add("shop.example", "MX", "mx1.shop.example")
    zone.add("mx1.shop.example", "A", "192.0.2.25")
    zone.add("_spf.esp.example", "TXT", "v=spf1 ip4:203.0.113.0/24 ip6:2001:db8::/32 -all")
    return zone


def per_check(check: Callable[[Resolver, str, str, str], str], resolver: Resolver, n: int) -> float:
    assert check(resolver, "203.0.113.7", "news@shop.example", "mx.esp.example") == "pass"
    start = time.perf_counter()
    for _ in range(n):
        check(resolver, "203.0.113.7", "news@shop.example", "mx.esp.example")
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checks", type=int, default=5000)
    args = parser.parse_args()
    server = ZoneServer(Zone())
    try:
        for name, check in (("mxgate", with_mxgate), ("pyspf", with_pyspf)):
            print(f"{name:7} RFC 7208 suite: {suite(server, check)}/203 pass")
        server.serve(typical_zone())
        resolver = CachingResolver(server.resolver())
        ours = per_check(with_mxgate, resolver, args.checks)
        theirs = per_check(with_pyspf, resolver, args.checks)
        print(f"mxgate  {ours * 1e6:6.1f} µs per check (warm cache, include + mx + ip4)")
        print(f"pyspf   {theirs * 1e6:6.1f} µs per check, behind the same port")
        print(f"ratio   mxgate is {theirs / ours:.2f}x pyspf's speed")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
