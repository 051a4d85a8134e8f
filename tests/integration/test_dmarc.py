"""DMARC (RFC 7489, np from DMARCbis) rule by rule: record discovery at the From domain and then
its organizational domain (from the Public Suffix List), p, sp, np, pct, adkim and aspf, against
DMARC records served by a DNS server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mxgate.authn.dmarc import aligned, check_dmarc, organizational_domain
from mxgate.authn.model import DkimCheck, DmarcCheck, DmarcPolicy, Result, SpfCheck
from mxgate.authn.resolver import CachingResolver
from tests.dnsserver import Zone, ZoneServer

RECORDS = {
    "_dmarc.shop.example": "v=DMARC1; p=reject; sp=quarantine; np=reject; rua=mailto:d@shop.example",
    "_dmarc.only-p.example": "v=DMARC1; p=quarantine",
    "_dmarc.strict.example": "v=DMARC1; p=reject; adkim=s; aspf=s",
    "_dmarc.dkim-strict.example": "v=DMARC1; p=reject; adkim=s",
    "_dmarc.half.example": "v=DMARC1; p=reject; pct=50",
    "_dmarc.none.example": "v=DMARC1; p=none",
    "_dmarc.bad-p-rua.example": "v=DMARC1; p=bogus; rua=mailto:d@bad-p-rua.example",
    "_dmarc.bad-p.example": "v=DMARC1; p=bogus",
    "_dmarc.bad-pct.example": "v=DMARC1; p=reject; pct=lots",
    "_dmarc.not-first.example": "p=reject; v=DMARC1",
    "_dmarc.sub.shop.example": "v=DMARC1; p=none",  # a subdomain with its own record
    "_dmarc.example.co.uk": "v=DMARC1; p=reject; sp=none",
    "_dmarc.alice.github.io": "v=DMARC1; p=quarantine",
}


@pytest.fixture(scope="module")
def resolver() -> Iterator[CachingResolver]:
    zone = Zone()
    for name, value in RECORDS.items():
        zone.add(name, "TXT", value)
    zone.add("_dmarc.twice.example", "TXT", "v=DMARC1; p=reject")
    zone.add("_dmarc.twice.example", "TXT", "v=DMARC1; p=none")
    for existing in ("news.shop.example", "sub.shop.example", "mail.example.co.uk"):
        zone.add(existing, "A", "192.0.2.1")
    zone.failing.add("_dmarc.down.example")
    zone.failing.add("_dmarc.flaky.example")  # the org's record, asked for a subdomain
    server = ZoneServer(zone)
    yield CachingResolver(server.resolver())
    server.stop()


def spf(domain: str, result: Result = Result.FAIL) -> SpfCheck:
    return SpfCheck(
        identity="mailfrom", domain=domain, sender=f"a@{domain}", result=result, reason=""
    )


def dkim(domain: str, result: Result = Result.PASS) -> DkimCheck:
    return DkimCheck(domain=domain, selector="s", result=result, reason="")


def check(
    resolver: CachingResolver,
    from_domain: str,
    *,
    spf_check: SpfCheck | None = None,
    signatures: list[DkimCheck] | None = None,
    key: str = "m1",
) -> DmarcCheck:
    return check_dmarc(
        resolver,
        [from_domain],
        spf_check or spf("elsewhere.example"),
        signatures or [],
        sampling_key=key,
    )


@pytest.mark.parametrize(
    ("domain", "organizational"),
    [
        ("shop.example", "shop.example"),
        ("a.b.shop.example", "shop.example"),
        ("mail.example.co.uk", "example.co.uk"),  # two-label public suffix
        ("alice.github.io", "alice.github.io"),  # the list's private section: its own org
        ("WWW.Example.COM.", "example.com"),
    ],
)
def test_organizational_domain_from_the_public_suffix_list(domain, organizational):
    assert organizational_domain(domain) == organizational


@pytest.mark.parametrize(
    ("identifier", "from_domain", "mode", "result"),
    [
        ("shop.example", "shop.example", "s", True),
        ("mail.shop.example", "shop.example", "s", False),
        ("mail.shop.example", "shop.example", "r", True),
        ("Mail.Shop.Example.", "news.shop.example", "r", True),
        ("shop.co.uk", "other.co.uk", "r", False),  # two organizations under co.uk
        ("bob.github.io", "alice.github.io", "r", False),
    ],
)
def test_alignment_modes(identifier, from_domain, mode, result):
    assert aligned(identifier, from_domain, mode) is result


def test_p_applies_to_the_domain_itself(resolver):
    found = check(resolver, "shop.example")
    assert (found.result, found.published, found.policy) == (
        Result.FAIL,
        "reject",
        DmarcPolicy.REJECT,
    )
    assert found.policy_domain == "shop.example"


def test_sp_applies_to_an_existing_subdomain(resolver):
    found = check(resolver, "news.shop.example")
    assert (found.policy_domain, found.published, found.policy) == (
        "shop.example",
        "quarantine",
        DmarcPolicy.QUARANTINE,
    )


def test_np_applies_to_a_subdomain_that_does_not_exist(resolver):
    found = check(resolver, "ghost.shop.example")
    assert (found.published, found.policy) == ("reject", DmarcPolicy.REJECT)


def test_without_sp_a_subdomain_gets_p(resolver):
    found = check(resolver, "news.only-p.example")
    assert (found.published, found.policy) == ("quarantine", DmarcPolicy.QUARANTINE)


def test_a_subdomain_record_wins_over_the_organization(resolver):
    found = check(resolver, "sub.shop.example")
    assert (found.policy_domain, found.published, found.policy) == (
        "sub.shop.example",
        "none",
        DmarcPolicy.NONE,
    )


def test_a_public_suffix_of_two_labels(resolver):
    found = check(resolver, "mail.example.co.uk")
    assert (found.policy_domain, found.published) == ("example.co.uk", "none")


@pytest.mark.parametrize(
    ("spf_check", "signatures", "result", "aligned_by"),
    [
        (spf("mail.shop.example", Result.PASS), [], Result.PASS, ["spf"]),  # relaxed SPF
        (None, [dkim("mail.shop.example")], Result.PASS, ["dkim"]),  # relaxed DKIM
        (None, [dkim("other.example")], Result.FAIL, []),  # passes, but not aligned
        (None, [dkim("shop.example", Result.FAIL)], Result.FAIL, []),  # aligned, but failed
        (spf("shop.example", Result.SOFTFAIL), [], Result.FAIL, []),
        (spf("shop.example", Result.TEMPERROR), [], Result.TEMPERROR, []),
        (None, [dkim("shop.example", Result.TEMPERROR)], Result.TEMPERROR, []),
        (spf("shop.example", Result.PASS), [dkim("shop.example")], Result.PASS, ["dkim", "spf"]),
    ],
)
def test_relaxed_alignment(resolver, spf_check, signatures, result, aligned_by):
    found = check(resolver, "shop.example", spf_check=spf_check, signatures=signatures)
    assert (found.result, found.aligned) == (result, aligned_by), found.reason
    assert (found.policy is None) is (result is not Result.FAIL)


@pytest.mark.parametrize(
    ("domain", "spf_domain", "dkim_domain", "result"),
    [
        ("strict.example", "mail.strict.example", "mail.strict.example", Result.FAIL),
        ("strict.example", "strict.example", "other.example", Result.PASS),  # aspf=s, exact
        ("dkim-strict.example", "mail.dkim-strict.example", "x.example", Result.PASS),  # aspf=r
        ("dkim-strict.example", "x.example", "mail.dkim-strict.example", Result.FAIL),  # adkim=s
    ],
)
def test_strict_alignment(resolver, domain, spf_domain, dkim_domain, result):
    found = check(
        resolver, domain, spf_check=spf(spf_domain, Result.PASS), signatures=[dkim(dkim_domain)]
    )
    assert found.result is result, found.reason


def test_pct_samples_by_message_and_the_rest_get_the_milder_policy(resolver):
    policies = [check(resolver, "half.example", key=f"message-{n}").policy for n in range(400)]
    applied = policies.count(DmarcPolicy.REJECT)
    assert policies.count(DmarcPolicy.QUARANTINE) == 400 - applied
    assert 140 < applied < 260  # about half
    again = [check(resolver, "half.example", key=f"message-{n}").policy for n in range(400)]
    assert again == policies  # the same message is always decided the same


def test_p_none_is_a_fail_with_policy_none(resolver):
    found = check(resolver, "none.example")
    assert (found.result, found.policy) == (Result.FAIL, DmarcPolicy.NONE)


@pytest.mark.parametrize(
    ("domain", "result", "policy"),
    [
        ("bad-p-rua.example", Result.FAIL, DmarcPolicy.NONE),  # RFC 7489 6.6.3: as p=none
        ("bad-p.example", Result.PERMERROR, None),
        ("bad-pct.example", Result.FAIL, DmarcPolicy.REJECT),  # pct unreadable: 100
        ("not-first.example", Result.NONE, None),  # v=DMARC1 must come first
        ("twice.example", Result.PERMERROR, None),
        ("nowhere.example", Result.NONE, None),
        ("down.example", Result.TEMPERROR, None),
        ("news.flaky.example", Result.TEMPERROR, None),
    ],
)
def test_records_that_do_not_give_a_policy(resolver, domain, result, policy):
    found = check(resolver, domain)
    assert (found.result, found.policy) == (result, policy), found.reason


def test_several_from_domains_are_a_permerror(resolver):
    found = check_dmarc(resolver, ["shop.example", "other.example"], spf("x"), [], "k")
    assert found.result is Result.PERMERROR
    assert check_dmarc(resolver, [], spf("x"), [], "k").result is Result.NONE
