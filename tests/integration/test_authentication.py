"""SPF, DKIM and DMARC against a real DNS server on loopback, with messages signed here by
keys made here (dkimpy), through the dnspython adapter and the cache the gateway uses."""

from __future__ import annotations

import io
from collections.abc import Iterator

import dkim
import pytest

from mxgate.adapters.dns import DnsPythonResolver
from mxgate.authn.canonical import BodyCanonicalizer, BodyHash
from mxgate.authn.check import Authenticator
from mxgate.authn.model import Authentication, DmarcPolicy, Result, Verdict
from mxgate.authn.resolver import CachingResolver
from mxgate.authn.results import authentication_results
from mxgate.authn.spf import check_host, check_mail_from
from mxgate.ports import DnsFailure
from tests.dnsserver import Zone, ZoneServer, silent_port
from tests.mailtools import Keys, make_keys

GOOD_IP = "192.0.2.10"
BAD_IP = "198.51.100.7"


@pytest.fixture(scope="module")
def keys() -> Keys:
    return make_keys()


@pytest.fixture(scope="module")
def zone(keys: Keys) -> Zone:
    zone = Zone()
    records = [
        # SPF
        ("example.test", "TXT", "v=spf1 ip4:192.0.2.0/24 include:_spf.partner.test -all"),
        ("_spf.partner.test", "TXT", "v=spf1 ip6:2001:db8::/32 a:relay.partner.test ~all"),
        ("relay.partner.test", "A", "203.0.113.5"),
        ("soft.test", "TXT", "v=spf1 ip4:192.0.2.10 ~all"),
        ("neutral.test", "TXT", "v=spf1 ?all"),
        ("mx.test", "TXT", "v=spf1 mx/30 -all"),
        ("mx.test", "MX", "mail.mx.test"),
        ("mail.mx.test", "A", "198.51.100.4"),
        ("redirected.test", "TXT", "v=spf1 redirect=example.test"),
        ("macro.test", "TXT", "v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} -all"),
        ("10.2.0.192.alice._spf.macro.test", "A", "127.0.0.2"),
        ("broken.test", "TXT", "v=spf1 ip4:not-an-ip -all"),
        ("twice.test", "TXT", "v=spf1 -all"),
        ("twice.test", "TXT", "v=spf1 +all"),
        ("void.test", "TXT", "v=spf1 a:n1.void.test a:n2.void.test a:n3.void.test -all"),
        ("loop.test", "TXT", "v=spf1 include:loop.test -all"),
        ("helo.example.test", "TXT", "v=spf1 a -all"),
        ("helo.example.test", "A", GOOD_IP),
        ("ptr.test", "TXT", "v=spf1 ptr -all"),
        ("10.2.0.192.in-addr.arpa", "PTR", "host.ptr.test"),
        ("host.ptr.test", "A", GOOD_IP),
        # DKIM keys
        ("sel._domainkey.example.test", "TXT", f"v=DKIM1; k=rsa; p={keys.public}"),
        ("sel._domainkey.mail.example.test", "TXT", f"v=DKIM1; k=rsa; p={keys.public}"),
        ("sel._domainkey.third.test", "TXT", f"v=DKIM1; k=rsa; p={keys.public}"),
        ("revoked._domainkey.example.test", "TXT", "v=DKIM1; k=rsa; p="),
        ("garbled._domainkey.example.test", "TXT", "v=DKIM1; k=rsa; p=bm90IGEga2V5"),
        # DMARC
        (
            "_dmarc.example.test",
            "TXT",
            "v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.test",
        ),
        ("_dmarc.strict.test", "TXT", "v=DMARC1; p=reject; adkim=s; aspf=s"),
        ("_dmarc.sampled.test", "TXT", "v=DMARC1; p=reject; pct=0"),
        ("_dmarc.badpolicy.test", "TXT", "v=DMARC1; p=bogus"),
        ("_dmarc.relaxed.test", "TXT", "v=DMARC1; p=none"),
    ]
    for name, rrtype, value in records:
        zone.add(name, rrtype, value)
    zone.failing.add("_dmarc.dnsdown.test")
    zone.failing.add("sel._domainkey.keydown.test")
    return zone


@pytest.fixture(scope="module")
def server(zone: Zone) -> Iterator[ZoneServer]:
    server = ZoneServer(zone)
    yield server
    server.stop()


@pytest.fixture
def resolver(server: ZoneServer) -> CachingResolver:
    return CachingResolver(server.resolver())


@pytest.fixture
def authenticator(resolver: CachingResolver) -> Authenticator:
    return Authenticator(resolver, "mxgate.test")


def message(sender: str = "alice@example.test", body: bytes = b"Hello there.\r\n") -> bytes:
    return (
        f"From: Alice <{sender}>\r\nTo: bob@nutrition.co\r\nSubject: checked\r\n"
        "Message-ID: <m1@example.test>\r\n\r\n"
    ).encode() + body


def sign(
    raw: bytes, keys: Keys, domain: str = "example.test", selector: str = "sel", **options
) -> bytes:
    header = dkim.sign(
        raw,
        selector.encode(),
        domain.encode(),
        keys.private,
        include_headers=[b"from", b"to", b"subject", b"message-id"],
        **options,
    )
    return header + raw


def run(
    authenticator: Authenticator,
    raw: bytes,
    ip: str = GOOD_IP,
    mail_from: str = "alice@example.test",
    helo: str = "helo.example.test",
) -> Authentication:
    return authenticator.authenticate(io.BytesIO(raw), client_ip=ip, mail_from=mail_from, helo=helo)


# ------------------------------------------------------------------------------ SPF


@pytest.mark.parametrize(
    ("ip", "domain", "sender", "result"),
    [
        (GOOD_IP, "example.test", "a@example.test", Result.PASS),
        (BAD_IP, "example.test", "a@example.test", Result.FAIL),
        ("2001:db8::25", "example.test", "a@example.test", Result.PASS),  # via include, ip6
        ("203.0.113.5", "example.test", "a@example.test", Result.PASS),  # via include, a:
        ("::ffff:192.0.2.10", "example.test", "a@example.test", Result.PASS),  # v4-mapped
        (BAD_IP, "soft.test", "a@soft.test", Result.SOFTFAIL),
        (BAD_IP, "neutral.test", "a@neutral.test", Result.NEUTRAL),
        (BAD_IP, "nothing.test", "a@nothing.test", Result.NONE),
        ("198.51.100.5", "mx.test", "a@mx.test", Result.PASS),  # mx/30
        ("198.51.100.9", "mx.test", "a@mx.test", Result.FAIL),
        (GOOD_IP, "redirected.test", "a@redirected.test", Result.PASS),
        (GOOD_IP, "macro.test", "alice@macro.test", Result.PASS),  # exists: with macros
        (GOOD_IP, "macro.test", "mallory@macro.test", Result.FAIL),
        (GOOD_IP, "ptr.test", "a@ptr.test", Result.PASS),
        (BAD_IP, "ptr.test", "a@ptr.test", Result.FAIL),
        (GOOD_IP, "broken.test", "a@broken.test", Result.PERMERROR),  # broken record
        (GOOD_IP, "twice.test", "a@twice.test", Result.PERMERROR),  # two records
        (GOOD_IP, "void.test", "a@void.test", Result.PERMERROR),  # void lookups
        (GOOD_IP, "loop.test", "a@loop.test", Result.PERMERROR),  # lookup limit
        (GOOD_IP, "localhost", "a@localhost", Result.NONE),  # not a domain to check
    ],
)
def test_spf(resolver, ip, domain, sender, result):
    found, reason, _ = check_host(resolver, ip, domain, sender, "helo.example.test")
    assert found is result, reason
    assert reason


def test_spf_dns_failure_is_temperror_never_none():
    down = DnsPythonResolver(["127.0.0.1"], port=silent_port(), timeout=0.3)
    result, reason, _ = check_host(down, GOOD_IP, "example.test", "a@example.test", "h")
    assert result is Result.TEMPERROR
    assert "DNS failure" in reason


def test_null_sender_is_checked_as_postmaster_at_helo(resolver):
    check = check_mail_from(resolver, GOOD_IP, "", "helo.example.test")
    assert (check.sender, check.result) == ("postmaster@helo.example.test", Result.PASS)


# ------------------------------------------------------------------------------ DKIM


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"canonicalize": (b"simple", b"simple")},
        {"canonicalize": (b"relaxed", b"relaxed")},
        {"length": True},
    ],
)
def test_dkim_pass(authenticator, keys, options):
    body = b"Hello  there. \r\n\r\nSecond paragraph\twith tabs\r\n\r\n\r\n"
    result = run(authenticator, sign(message(body=body), keys, **options))
    [check] = result.dkim
    assert check.result is Result.PASS, check.reason
    assert (check.domain, check.selector) == ("example.test", "sel")
    assert result.verdicts.dkim is Verdict.PASS


def test_dkim_pass_with_bare_line_feeds(authenticator, keys):
    signed = sign(message(body=b"line one\r\nline two\r\n"), keys)
    result = run(authenticator, signed.replace(b"\r\n", b"\n"))
    assert result.dkim[0].result is Result.PASS, result.dkim[0].reason


def test_dkim_length_tag_tolerates_an_appended_footer(authenticator, keys):
    signed = sign(message(), keys, length=True)
    assert run(authenticator, signed + b"-- \r\nlist footer\r\n").dkim[0].result is Result.PASS


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda raw: raw.replace(b"Hello there.", b"Hello thare."), "body hash"),
        (
            lambda raw: raw.replace(b"Subject: checked", b"Subject: changed"),
            "signature did not verify",
        ),
    ],
)
def test_dkim_message_altered_after_signing_fails(authenticator, keys, change, reason):
    result = run(authenticator, change(sign(message(), keys)))
    assert result.dkim[0].result is Result.FAIL
    assert reason in result.dkim[0].reason
    assert result.verdicts.dkim is Verdict.FAIL


@pytest.mark.parametrize(
    ("domain", "selector", "result"),
    [
        ("example.test", "missing", Result.PERMERROR),  # no key record
        ("example.test", "garbled", Result.PERMERROR),  # a key record that is not a key
        ("example.test", "revoked", Result.FAIL),  # p= empty
        ("keydown.test", "sel", Result.TEMPERROR),  # the key's server fails
    ],
)
def test_dkim_key_problems(authenticator, keys, domain, selector, result):
    raw = sign(message(sender=f"alice@{domain}"), keys, domain=domain, selector=selector)
    [check] = run(authenticator, raw, mail_from=f"a@{domain}").dkim
    assert check.result is result, check.reason


def test_every_signature_is_reported(authenticator, keys):
    raw = sign(sign(message(), keys, domain="third.test"), keys)  # two valid signatures
    raw = raw.replace(b"s=sel;", b"s=missing;", 1)  # the outer one now has no key
    result = run(authenticator, raw)
    assert [c.result for c in result.dkim] == [Result.PERMERROR, Result.PASS]
    assert result.verdicts.dkim is Verdict.PASS  # one valid signature is enough


def test_unsigned_mail_is_gray(authenticator):
    result = run(authenticator, message())
    assert result.dkim == []
    assert result.verdicts.dkim is Verdict.GRAY


@pytest.mark.parametrize(
    ("body", "relaxed", "canonical"),
    [
        (b"", False, b"\r\n"),
        (b"", True, b""),
        (b"\r\n\r\n", False, b"\r\n"),
        (b"a  b \t\r\n\r\n", True, b"a b\r\n"),
        (b"a  b \t\r\n\r\n", False, b"a  b \t\r\n"),
        (b"x\n\ny", False, b"x\r\n\r\ny\r\n"),
        (b" \r\n\r\nz", True, b"\r\n\r\nz\r\n"),
    ],
)
def test_body_canonicalization_streams_like_the_rfc(body, relaxed, canonical):
    for step in (1, 2, 3, 1000):
        canonicalizer = BodyCanonicalizer(relaxed)
        seen = BodyHash(b"sha256", None)
        canonicalizer.hashes.append(seen)
        expected = BodyHash(b"sha256", None)
        expected.update(canonical)
        for index in range(0, len(body), step):
            canonicalizer.feed(body[index : index + step])
        canonicalizer.end()
        assert seen.digest() == expected.digest(), (body, step)


# ------------------------------------------------------------------------------ DMARC


def test_dmarc_pass_by_relaxed_dkim_alignment(authenticator, keys):
    raw = sign(message(), keys, domain="mail.example.test")  # a subdomain signs for example.test
    result = run(authenticator, raw, ip=BAD_IP)  # SPF fails: DKIM alone carries DMARC
    assert result.spf_mail_from.result is Result.FAIL
    assert result.dmarc.result is Result.PASS
    assert result.dmarc.aligned == ["dkim"]
    assert result.verdicts.dmarc_policy is None


def test_dmarc_pass_by_spf_alone(authenticator):
    result = run(authenticator, message())
    assert (result.dmarc.result, result.dmarc.aligned) == (Result.PASS, ["spf"])


def test_dmarc_fail_gives_the_published_policy(authenticator):
    result = run(authenticator, message(), ip=BAD_IP)
    assert result.dmarc.result is Result.FAIL
    assert result.dmarc.published == "reject"
    assert result.verdicts.dmarc_policy is DmarcPolicy.REJECT
    assert result.verdicts.spf is Verdict.FAIL


def test_dmarc_subdomain_policy(authenticator):
    """news.example.test has no record: the organization's sp= applies, not its p=."""
    result = run(authenticator, message(sender="alice@news.example.test"), ip=BAD_IP)
    assert result.dmarc.policy_domain == "example.test"
    assert result.dmarc.published == "quarantine"
    assert result.verdicts.dmarc_policy is DmarcPolicy.QUARANTINE


def test_dmarc_pct_zero_applies_the_milder_policy(authenticator):
    result = run(authenticator, message(sender="alice@sampled.test"), mail_from="a@sampled.test")
    assert result.dmarc.result is Result.FAIL
    assert (result.dmarc.published, result.dmarc.pct) == ("reject", 0)
    assert result.verdicts.dmarc_policy is DmarcPolicy.QUARANTINE


def test_dmarc_strict_alignment(authenticator, keys):
    raw = sign(message(sender="alice@strict.test"), keys, domain="mail.example.test")
    result = run(authenticator, raw, mail_from="a@mail.strict.test")
    assert result.dmarc.result is Result.FAIL
    assert result.verdicts.dmarc_policy is DmarcPolicy.REJECT


@pytest.mark.parametrize(
    ("sender", "result", "verdict"),
    [
        ("alice@nothing.test", Result.NONE, Verdict.GRAY),
        ("alice@dnsdown.test", Result.TEMPERROR, Verdict.PROCESSING_FAILED),
        ("alice@badpolicy.test", Result.PERMERROR, Verdict.PROCESSING_FAILED),
    ],
)
def test_dmarc_without_a_usable_policy(authenticator, sender, result, verdict):
    checked = run(authenticator, message(sender=sender), ip=BAD_IP)
    assert checked.dmarc.result is result, checked.dmarc.reason
    assert checked.verdicts.dmarc is verdict
    assert checked.verdicts.dmarc_policy is None  # no policy to apply


def test_dns_server_down_is_temperror_everywhere(keys):
    down = CachingResolver(DnsPythonResolver(["127.0.0.1"], port=silent_port(), timeout=0.3))
    result = run(Authenticator(down, "mxgate.test"), sign(message(), keys))
    assert result.spf_mail_from.result is Result.TEMPERROR
    assert result.dkim[0].result is Result.TEMPERROR
    assert result.dmarc.result is Result.TEMPERROR
    verdicts = result.verdicts
    assert (verdicts.spf, verdicts.dkim, verdicts.dmarc_policy) == (
        Verdict.PROCESSING_FAILED,
        Verdict.PROCESSING_FAILED,
        None,
    )


# ------------------------------------------------------------------------------ results, cache


def test_authentication_results_header(authenticator, keys):
    value = authentication_results(run(authenticator, sign(message(), keys)))
    lines = value.split(";\r\n\t")
    assert lines[0] == "mxgate.test"
    assert lines[1].startswith("spf=pass (")
    assert lines[1].endswith("smtp.mailfrom=alice@example.test")
    assert lines[2].endswith("smtp.helo=helo.example.test")
    assert lines[3].startswith("dkim=pass (")
    assert "header.d=example.test header.s=sel" in lines[3]
    assert lines[4].startswith("dmarc=pass (")
    assert lines[4].endswith("header.from=example.test")
    assert value.isascii()


def test_the_cache_answers_for_the_ttl_and_never_keeps_failures(zone, server):
    clock = [0.0]
    cached = CachingResolver(server.resolver(), monotonic=lambda: clock[0])
    before = zone.queries[("example.test", "TXT")]
    cached.query("example.test", "TXT")
    cached.query("Example.Test.", "TXT")
    assert zone.queries[("example.test", "TXT")] == before + 1
    clock[0] += zone.ttl + 1
    cached.query("example.test", "TXT")
    assert zone.queries[("example.test", "TXT")] == before + 2
    failing = zone.queries[("_dmarc.dnsdown.test", "TXT")]
    for _ in range(2):
        with pytest.raises(DnsFailure):
            cached.query("_dmarc.dnsdown.test", "TXT")
    assert zone.queries[("_dmarc.dnsdown.test", "TXT")] > failing + 1
