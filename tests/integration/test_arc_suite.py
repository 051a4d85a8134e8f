"""The ValiMail ARC test suite (tests/data/arc): every validation vector's chain validation
status, and every signing vector's ARC set, with the keys served by a DNS server on loopback.

The vectors were written against draft-ietf-dmarc-arc-protocol-18. One thing changed in RFC
8617: a chain whose newest seal says cv=fail was "terminated" in the draft (the vectors expect an
empty cv) and is "fail" in the RFC (5.2 steps 2 and 3); those three vectors expect fail here."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mxgate.authn import keys
from mxgate.authn.arc import Sealer, seal
from mxgate.authn.canonical import verifier_fields
from mxgate.authn.check import check_signatures
from mxgate.authn.model import ArcCheck, Result
from mxgate.authn.resolver import CachingResolver
from mxgate.message.headers import read_header_section
from tests.dnsserver import Zone, ZoneServer

DATA = Path(__file__).parent.parent / "data" / "arc"


def _scenarios(name: str) -> list[dict[str, Any]]:
    with (DATA / name).open("rb") as stream:
        return list(yaml.safe_load_all(stream))


VALIDATION = _scenarios("arc-draft-validation-tests.yml")
SIGNING = _scenarios("arc-draft-sign-tests.yml")


def _zone(scenarios: list[dict[str, Any]]) -> Zone:
    zone = Zone()
    for scenario in scenarios:
        for name, value in scenario["txt-records"].items():
            zone.add(name, "TXT", value)
    return zone


@pytest.fixture(scope="module")
def server() -> Iterator[ZoneServer]:
    server = ZoneServer(_zone(VALIDATION + SIGNING))
    yield server
    server.stop()


def _raw(message: str) -> bytes:
    return message.encode().replace(b"\n", b"\r\n")


VALIDATION_CASES = [
    pytest.param(test, id=test_id)
    for scenario in VALIDATION
    for test_id, test in scenario["tests"].items()
]


def test_the_suites_are_whole():
    assert (len(VALIDATION_CASES), sum(len(s["tests"]) for s in SIGNING)) == (171, 17)


@pytest.mark.parametrize("test", VALIDATION_CASES)
def test_validation(server, test):
    expected = (test["cv"] or "fail").lower()  # the draft's "terminated" is RFC 8617's fail
    resolver = CachingResolver(server.resolver())
    found = check_signatures(io.BytesIO(_raw(test["message"])), resolver, now=0).arc
    assert found.result.value == expected, found.reason


SIGNING_CASES = [
    pytest.param(scenario, test, id=test_id)
    for scenario in SIGNING
    for test_id, test in scenario["tests"].items()
]


def _tags(value: str) -> set[str]:
    """The vectors compare sets of tags, whitespace removed."""
    return {tag for tag in "".join(value.split()).split(";") if tag}


@pytest.mark.parametrize(("scenario", "test"), SIGNING_CASES)
def test_signing(server, scenario, test):
    raw = _raw(test["message"])
    resolver = CachingResolver(server.resolver())
    found = check_signatures(io.BytesIO(raw), resolver, now=0, seal=True)
    header, _ = read_header_section(io.BytesIO(raw))
    fields = verifier_fields(header)
    srv_id = test["srv-id"]
    ours = [  # the suite's AAR gathers the AR fields of srv-id (its README, "AR Consolidation")
        " ".join(value.decode().split()).removeprefix(f"{srv_id};").strip()
        for name, value in fields
        if name.lower() == b"authentication-results"
        and value.decode().strip().startswith(f"{srv_id};")
    ]
    results = "; ".join(ours)
    sealer = Sealer(
        domain=scenario["domain"],
        selector=scenario["sel"],
        key=keys.load_private_key(scenario["privatekey"].encode()),
        signed_headers=tuple(h.encode() for h in test["sig-headers"].split(":")),
    )
    assert found.seal_body_hash is not None
    arc_set = seal(
        sealer,
        fields,
        found.arc,
        found.seal_body_hash,
        f"{test['srv-id']}; {results}",
        timestamp=int(test["t"]),
    )
    if not test["AS"]:  # a chain that failed gets no seal
        assert (found.arc.result, arc_set) == (Result.FAIL, [])
        return
    by_name = {name.decode().lower(): value.decode() for name, value in arc_set}
    assert _tags(by_name["arc-authentication-results"]) == _tags(test["AAR"])
    assert _tags(by_name["arc-message-signature"]) == _tags(test["AMS"])
    assert _tags(by_name["arc-seal"]) == _tags(test["AS"])


def test_a_sealed_message_validates(server):
    """Our own seal, verified by our own verifier: the chain grows to i=2 and passes."""
    [scenario] = [s for s in SIGNING if "privatekey" in s][:1]
    test = next(iter(scenario["tests"].values()))
    raw = _raw(test["message"])
    resolver = CachingResolver(server.resolver())
    sealer = Sealer(
        scenario["domain"], scenario["sel"], keys.load_private_key(scenario["privatekey"].encode())
    )
    for instance in (1, 2):
        found = check_signatures(io.BytesIO(raw), resolver, now=0, seal=True)
        assert found.seal_body_hash is not None
        arc_set = seal(
            sealer,
            found.fields,
            found.arc,
            found.seal_body_hash,
            "mxgate.test; arc=none",
            timestamp=1,
        )
        raw = b"".join(n + b":" + v + b"\r\n" for n, v in arc_set) + raw
        assert check_signatures(io.BytesIO(raw), resolver, now=0).arc == ArcCheck(
            result=Result.PASS,
            reason=f"chain of {instance} sealed by " + ", ".join([scenario["domain"]] * instance),
            instances=instance,
            sealers=[scenario["domain"]] * instance,
        )
