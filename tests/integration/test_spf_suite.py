"""The openspf RFC 7208 test suite (release 2014.04), every scenario through a real DNS server on
loopback that serves the scenario's zone, through the resolver adapter and cache the gateway
uses. One server for the whole suite: each test swaps in its scenario's zone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mxgate.authn.resolver import CachingResolver
from mxgate.authn.spf import check_mail_from
from tests.dnsserver import ANY_TYPE, Zone, ZoneServer

SUITE = Path(__file__).parent.parent / "data" / "spf" / "rfc7208-tests.yml"
TYPES = ("A", "AAAA", "MX", "TXT", "SPF", "PTR", "CNAME")
# An unanswered query waits this long: the suite's TIMEOUT entries. Answers on loopback take
# about a millisecond, so this costs only the suite's few TIMEOUT cases.
TIMEOUT = 0.25


def _zone(zonedata: dict[str, list[Any]]) -> Zone:
    """The suite's zone data as a zone. An SPF (type 99) record is served as TXT too when the
    name has no TXT entry, as the suite's README asks of drivers; `TXT: NONE` says there is
    none; `TIMEOUT` alone leaves every type the name has no record of unanswered."""
    zone = Zone()
    for name, entries in zonedata.items():
        owner = name.lower().rstrip(".")
        kinds = {kind for entry in entries if isinstance(entry, dict) for kind in entry}
        for entry in entries:
            if entry == "TIMEOUT":
                zone.silent.update((owner, t) for t in TYPES if (owner, t) not in zone.records)
                continue
            for rrtype, value in entry.items():
                if value == "TIMEOUT":
                    zone.silent.add((owner, rrtype))
                elif value == "NONE":
                    continue
                elif rrtype == "MX":
                    zone.add(owner, "MX", value[1], preference=value[0])
                elif rrtype in ("TXT", "SPF"):
                    # a TXT record of no strings at all cannot be parsed by dnspython (it
                    # raises AttributeError): served as one empty string, which is no SPF
                    # record either
                    strings = (value or [""]) if isinstance(value, list) else [value]
                    zone.add(owner, rrtype, strings)
                    if rrtype == "SPF" and "TXT" not in kinds:
                        zone.add(owner, "TXT", strings)
                else:
                    zone.add(owner, rrtype, value)
        if (owner, ANY_TYPE) in zone.silent:
            zone.silent.discard((owner, ANY_TYPE))
    return zone


def _cases() -> Iterator[Any]:
    with SUITE.open("rb") as suite:
        for scenario in yaml.safe_load_all(suite):
            for test_id, test in scenario["tests"].items():
                yield pytest.param(scenario["zonedata"], test, id=test_id)


CASES = list(_cases())


@pytest.fixture(scope="module")
def server() -> Iterator[ZoneServer]:
    server = ZoneServer(Zone())
    yield server
    server.stop()


def test_the_suite_is_whole():
    assert len(CASES) == 203


@pytest.mark.parametrize(("zonedata", "test"), CASES)
def test_rfc7208(server, zonedata, test):
    server.serve(_zone(zonedata))
    resolver = CachingResolver(server.resolver(timeout=TIMEOUT))
    check = check_mail_from(resolver, test["host"], test["mailfrom"], test["helo"])
    expected = test["result"] if isinstance(test["result"], list) else [test["result"]]
    assert check.result.value in expected, f"{test['spec']}: {check.reason}"
    if "explanation" in test:
        assert (check.explanation or "DEFAULT") == test["explanation"], check.reason
