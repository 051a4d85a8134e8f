"""The cutover checks as pure judgements: DNS answers from a fake resolver, SMTP probe results
and AWS descriptions as plain data."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mxgate.cutover.aws import ingress_point_check, ses_identity_check, stack_check
from mxgate.cutover.checklist import GOOGLE, MICROSOFT, provider_checklist, providers_of
from mxgate.cutover.dns import (
    dkim_check,
    dkim_key_problem,
    dmarc_check,
    mx_check,
    subdomain_trial_check,
)
from mxgate.cutover.model import CutoverReport, Status
from mxgate.cutover.smtp import (
    Certificate,
    Reply,
    Settled,
    SmtpProbe,
    delivered_header_checks,
    name_matches,
    queued_id,
    smtp_checks,
    terminal_check,
)
from mxgate.cutover.spf import spf_check
from mxgate.ports import DnsAnswer, DnsFailure
from tests.mailtools import make_keys

TARGET = "inbound.mxgate.test"
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


class Dns:
    """Answers from a dict: (name, type) -> records; names in `failing` time out."""

    def __init__(
        self,
        records: dict[tuple[str, str], tuple[str, ...]],
        ttl: float = 300,
        failing: tuple[str, ...] = (),
    ) -> None:
        self.records = records
        self.ttl = ttl
        self.failing = failing

    def query(self, name: str, rrtype: str) -> DnsAnswer:
        if name in self.failing:
            raise DnsFailure(f"{rrtype} {name}: timed out")
        found = self.records.get((name, rrtype))
        if found is None:
            exists = any(n == name for n, _ in self.records)
            return DnsAnswer((), 60, exists=exists)
        return DnsAnswer(found, self.ttl)


def test_mx_that_also_points_elsewhere_fails_and_says_why() -> None:
    dns = Dns({("nutrition.co", "MX"): (TARGET, "aspmx.l.google.com")})
    finding = mx_check(dns, "nutrition.co", TARGET)
    assert finding.check.status is Status.FAIL
    assert not finding.live
    assert "bypasses the gateway" in finding.check.summary


def test_an_mx_about_to_change_with_a_long_ttl_gets_the_advice() -> None:
    dns = Dns({("nutrition.co", "MX"): ("aspmx.l.google.com",)}, ttl=86400)
    check = mx_check(dns, "nutrition.co", TARGET).check
    assert check.evidence == ["MX aspmx.l.google.com (TTL 86400s)"]
    assert "lower its TTL (86400s) to 300 a day ahead" in check.fix


@pytest.mark.parametrize(
    ("records", "failing", "status", "summary"),
    [
        ({}, (), Status.FAIL, "the domain has no MX record"),
        ({}, ("nutrition.co",), Status.FAIL, "the MX lookup failed"),
        ({("nutrition.co", "MX"): (f"{TARGET}.",)}, (), Status.PASS, "MX points at"),
    ],
)
def test_mx_outcomes(
    records: dict[tuple[str, str], tuple[str, ...]],
    failing: tuple[str, ...],
    status: Status,
    summary: str,
) -> None:
    check = mx_check(Dns(records, failing=failing), "nutrition.co", TARGET).check
    assert check.status is status
    assert check.summary.startswith(summary)


def test_without_a_target_the_mx_cannot_be_judged() -> None:
    dns = Dns({("x.example", "MX"): ("mx.x.example",)})
    check = mx_check(dns, "x.example", None).check
    assert check.status is Status.WARN
    assert "--mx-target" in check.fix


def test_a_tried_subdomain_satisfies_the_seed_s_advice() -> None:
    assert subdomain_trial_check("nutrition.co", True, []).status is Status.WARN
    tried = subdomain_trial_check("nutrition.co", True, ["test.nutrition.co at 2026-11-27"])
    assert tried.status is Status.PASS


GOOGLE_SPF = {("_spf.google.com", "TXT"): ("v=spf1 ip4:172.217.0.0/19 ~all",)}


def test_a_shared_include_reached_through_another_include_fails() -> None:
    dns = Dns(
        {
            ("nutrition.co", "TXT"): ("v=spf1 include:_spf.nutrition.co -all",),
            ("_spf.nutrition.co", "TXT"): (
                "v=spf1 include:_spf.google.com include:amazonses.com -all",
            ),
            ("amazonses.com", "TXT"): ("v=spf1 ip4:199.255.192.0/22 -all",),
            **GOOGLE_SPF,
        }
    )
    check = spf_check(dns, "nutrition.co", ["192.0.2.25"], [GOOGLE])
    assert check.status is Status.FAIL
    assert "includes the shared range amazonses.com (through _spf.nutrition.co)" in check.summary


def test_includes_are_read_by_the_spf_grammar_qualifiers_and_redirect_included() -> None:
    # A "~include:" or "?INCLUDE:" is still an include, and redirect= is followed like one:
    # the walk reads each record with authn's RFC 7208 grammar, not by splitting on spaces.
    dns = Dns(
        {
            ("nutrition.co", "TXT"): (
                "v=spf1 ?INCLUDE:_spf.google.com redirect=_spf.nutrition.co",
            ),
            ("_spf.nutrition.co", "TXT"): ("v=spf1 ~include:amazonses.com -all",),
            ("amazonses.com", "TXT"): ("v=spf1 ip4:199.255.192.0/22 -all",),
            **GOOGLE_SPF,
        }
    )
    check = spf_check(dns, "nutrition.co", ["192.0.2.25"], [GOOGLE])
    assert check.status is Status.FAIL
    assert "includes the shared range amazonses.com (through _spf.nutrition.co)" in check.summary
    assert "does not authorise Google" not in check.summary


def test_an_included_record_that_does_not_parse_is_named() -> None:
    dns = Dns(
        {
            ("nutrition.co", "TXT"): ("v=spf1 include:_spf.google.com include:bad.test -all",),
            ("bad.test", "TXT"): ("v=spf1 ip4:300.1.1.1 -all",),
            **GOOGLE_SPF,
        }
    )
    check = spf_check(dns, "nutrition.co", ["192.0.2.25"], [GOOGLE])
    assert any(e.startswith("bad.test: the record is a permerror") for e in check.evidence)


def test_an_mx_mechanism_authorises_the_gateway_once_the_mx_points_at_it() -> None:
    dns = Dns(
        {
            ("nutrition.co", "TXT"): ("v=spf1 mx include:_spf.google.com -all",),
            ("nutrition.co", "MX"): (TARGET,),
            (TARGET, "A"): ("192.0.2.25",),
            **GOOGLE_SPF,
        }
    )
    check = spf_check(dns, "nutrition.co", ["192.0.2.25"], [GOOGLE])
    assert check.status is Status.FAIL
    assert check.summary.startswith("SPF authorises the gateway's address 192.0.2.25")


@pytest.mark.parametrize(
    ("records", "status", "summary"),
    [
        ((), Status.WARN, "no SPF record"),
        (("v=spf1 -all", "v=spf1 ~all"), Status.FAIL, "2 SPF records"),
        (
            ("v=spf1 include:_spf.google.com -all",),
            Status.WARN,
            "SPF does not authorise Microsoft 365's",
        ),
    ],
)
def test_spf_outcomes(records: tuple[str, ...], status: Status, summary: str) -> None:
    dns = Dns({("nutrition.co", "TXT"): records, **GOOGLE_SPF} if records else GOOGLE_SPF)
    check = spf_check(dns, "nutrition.co", ["192.0.2.25"], [GOOGLE, MICROSOFT])
    assert check.status is status
    assert check.summary.startswith(summary)


@pytest.mark.parametrize(
    ("record", "status"),
    [
        ("v=DMARC1; p=quarantine", Status.PASS),
        ("v=DMARC1; p=none; rua=mailto:x@nutrition.co", Status.PASS),
        ("v=DMARC1; rua=mailto:x@nutrition.co", Status.FAIL),
        ("v=DMARC1; p=block", Status.FAIL),
    ],
)
def test_dmarc_must_parse(record: str, status: Status) -> None:
    check = dmarc_check(Dns({("_dmarc.nutrition.co", "TXT"): (record,)}), "nutrition.co")
    assert check.status is status


KEY = make_keys(2048).public


def weak_key(bits: int) -> str:
    """An RSA public key shorter than RFC 8301 allows (cryptography generates none so short)."""
    modulus = rsa.RSAPublicNumbers(65537, (1 << (bits - 1)) | 1).public_key()
    der = modulus.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


WEAK = weak_key(768)
NAME = "google._domainkey.nutrition.co"


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (f"v=DKIM1; k=rsa; p={KEY}", None),
        (f"p={KEY}", None),
        ("v=DKIM1; k=rsa; p=", f"key at {NAME} is revoked (empty p=)"),
        (f"v=DKIM1; k=dsa; p={KEY}", f"unknown key type k=dsa at {NAME}"),
        ("v=DKIM1; p=not*base64", f"unusable key at {NAME}: Error"),
        ("v=DKIM1; p=MIGfMA0G", f"unusable key at {NAME}: ValueError"),  # base64, no key
        (f"v=DKIM2; p={KEY}", f"key record at {NAME} is not v=DKIM1"),
        (f"v=DKIM1; p={WEAK}", f"the RSA key at {NAME} has 768 bits: RFC 8301 asks for 1024"),
    ],
)
def test_dkim_key_records_are_read_by_the_verifier_s_parser(
    record: str, problem: str | None
) -> None:
    assert dkim_key_problem(NAME, record) == problem


def test_dkim_with_one_selector_missing_warns() -> None:
    dns = Dns({("google._domainkey.nutrition.co", "TXT"): (f"v=DKIM1; p={KEY}",)})
    check = dkim_check(dns, "nutrition.co", ["google", "selector1"])
    assert check.status is Status.WARN
    assert dkim_check(dns, "nutrition.co", ["selector1"]).status is Status.FAIL
    assert dkim_check(dns, "nutrition.co", []).status is Status.WARN


def certificate(**changes: object) -> Certificate:
    values: dict[str, object] = {
        "subject": "CN=inbound.mxgate.test",
        "issuer": "CN=Some CA",
        "dns_names": ["inbound.mxgate.test", "*.mxgate.test"],
        "ip_addresses": [],
        "not_after": NOW + timedelta(days=90),
        "self_signed": False,
    }
    return Certificate.model_validate(values | changes)


@pytest.mark.parametrize(
    ("name", "matches"),
    [
        ("inbound.mxgate.test", True),
        ("INBOUND.mxgate.test.", True),
        ("other.mxgate.test", True),  # the wildcard
        ("a.b.mxgate.test", False),  # a wildcard covers one label only
        ("mxgate.test", False),
        ("192.0.2.25", False),
    ],
)
def test_certificate_names(name: str, matches: bool) -> None:
    assert name_matches(certificate(), name) is matches


def probe(**changes: object) -> SmtpProbe:
    values: dict[str, object] = {
        "host": TARGET,
        "port": 25,
        "greeting": Reply(code=220, text="mx ESMTP"),
        "ehlo": Reply(code=250, text="mx"),
        "extensions": {"starttls": "", "size": "41943040"},
        "starttls": Reply(code=220, text="Ready"),
        "tls_version": "TLSv1.3",
        "cipher": "TLS_AES_256_GCM_SHA384",
        "certificate": certificate(),
        "extensions_tls": {"size": "41943040"},
        "mail": Reply(code=250, text="ok"),
        "rcpt": Reply(code=250, text="ok"),
    }
    return SmtpProbe.model_validate(values | changes)


def judged(found: SmtpProbe, *, sent: bool = False) -> dict[str, Status]:
    checks = smtp_checks(found, expected_name=TARGET, expected_size=41943040, now=NOW, sent=sent)
    return {c.name: c.status for c in checks}


def test_a_good_ingress_passes_every_step() -> None:
    assert set(judged(probe()).values()) == {Status.PASS}


def test_no_starttls_fails_and_stops_there() -> None:
    found = judged(probe(extensions={"size": "1"}, starttls=None, tls_version=None))
    assert found == {
        "smtp.greeting": Status.PASS,
        "smtp.ehlo": Status.PASS,
        "smtp.starttls": Status.FAIL,
    }


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"not_after": NOW - timedelta(days=1)}, Status.FAIL),
        ({"dns_names": ["other.example"]}, Status.FAIL),
        ({"self_signed": True}, Status.WARN),
        ({"chain_error": "unable to get local issuer certificate"}, Status.WARN),
    ],
)
def test_certificate_outcomes(changes: dict[str, object], status: Status) -> None:
    assert judged(probe(certificate=certificate(**changes)))["smtp.certificate"] is status


def test_refused_test_recipient_and_a_size_that_differs() -> None:
    found = judged(probe(rcpt=Reply(code=550, text="no"), extensions_tls={"size": "1000"}))
    assert found["smtp.message"] is Status.FAIL
    assert found["smtp.size"] is Status.WARN
    assert judged(probe(rcpt=Reply(code=451, text="later")))["smtp.message"] is Status.WARN
    sent = probe(data=Reply(code=250, text="2.0.0 Ok: queued as 01ABC"))
    assert judged(sent, sent=True)["smtp.message"] is Status.PASS


def test_a_connection_that_fails_is_one_failed_check() -> None:
    broken = SmtpProbe(host=TARGET, port=25, error="ConnectionRefusedError: refused")
    checks = smtp_checks(broken, expected_name=TARGET, expected_size=None, now=NOW, sent=False)
    assert [(c.name, c.status) for c in checks] == [("smtp.greeting", Status.FAIL)]
    assert "ConnectionRefusedError" in checks[0].summary


def test_queued_ids() -> None:
    assert queued_id(Reply(code=250, text="2.0.0 Ok: queued as 01M8")) == "01M8"
    assert queued_id(Reply(code=250, text="2.0.0 Ok")) is None


def test_terminal_states() -> None:
    done = [Settled(recipient="alice@nutrition.co", outcome="delivered", route="workspace")]
    assert terminal_check("m1", ["alice@nutrition.co"], done).status is Status.PASS
    held = [Settled(recipient="alice@nutrition.co", outcome="quarantined")]
    assert terminal_check("m1", ["alice@nutrition.co"], held).status is Status.FAIL
    assert terminal_check("m1", ["alice@nutrition.co"], []).summary.startswith(
        "m1: not settled in time"
    )


def test_delivered_headers() -> None:
    header = (
        b"Return-Path: <check@check.invalid>\r\nDelivered-To: alice@nutrition.co\r\n"
        b"Authentication-Results: mxgate.local; spf=none\r\nSubject: x\r\n\r\n"
    )
    checks = delivered_header_checks("copy", header, "check@check.invalid", "mxgate.local")
    assert [c.status for c in checks] == [Status.PASS, Status.PASS]
    rewritten = delivered_header_checks("copy", header, "other@x.example", "gateway.example")
    assert [c.status for c in rewritten] == [Status.FAIL, Status.FAIL]


def test_ses_identity_with_its_dkim_cnames_published_covers_the_app_subdomain() -> None:
    identity = {
        "VerificationStatus": "SUCCESS",
        "DkimAttributes": {"Status": "SUCCESS", "Tokens": ["tok1", "tok2"]},
    }
    dns = Dns(
        {
            ("tok1._domainkey.nutrition.co", "CNAME"): ("tok1.dkim.amazonses.com",),
            ("tok2._domainkey.nutrition.co", "CNAME"): ("tok2.dkim.amazonses.com",),
        }
    )
    app = ["customer-support.nutrition.co"]
    check = ses_identity_check("nutrition.co", identity, app, dns)
    assert check.status is Status.PASS
    assert "covering customer-support.nutrition.co" in check.summary
    missing = Dns({("tok1._domainkey.nutrition.co", "CNAME"): ("tok1.dkim.amazonses.com",)})
    failed = ses_identity_check("nutrition.co", identity, app, missing)
    assert failed.status is Status.FAIL
    assert "publish tok2._domainkey.nutrition.co CNAME tok2.dkim.amazonses.com" in failed.fix
    assert ses_identity_check("nutrition.co", None, app, dns).status is Status.FAIL


def test_ingress_point_and_stack() -> None:
    point = {"IngressPointId": "inp-1", "Status": "ACTIVE", "Type": "OPEN", "ARecord": TARGET}
    assert ingress_point_check(point, TARGET).status is Status.PASS
    closed = ingress_point_check(point | {"Status": "CLOSED"}, TARGET)
    assert closed.status is Status.FAIL
    assert "it is CLOSED, not ACTIVE" in closed.summary
    assert ingress_point_check(point, "other.example").status is Status.FAIL
    assert stack_check("mxgate", {"MxTarget": TARGET}).status is Status.FAIL  # missing outputs


def test_providers_and_their_checklist() -> None:
    hosts = ["aspmx.l.google.com", "nutritionco.mail.onmicrosoft.com"]
    assert providers_of(hosts) == [GOOGLE, MICROSOFT]
    assert providers_of(["mx.example"]) == []
    items = provider_checklist([MICROSOFT], ["192.0.2.25"])
    assert {i.provider for i in items} == {MICROSOFT}
    assert items[0].value.startswith("192.0.2.25")


def test_the_report_is_as_bad_as_its_worst_check() -> None:
    dns = Dns({("nutrition.co", "MX"): (TARGET,)})
    passing = mx_check(dns, "nutrition.co", TARGET).check
    failing = dmarc_check(dns, "nutrition.co")
    report = CutoverReport(domain="nutrition.co", checks=[passing, failing])
    assert report.status is Status.FAIL
    assert report.counts() == {"pass": 1, "warn": 0, "fail": 1}
