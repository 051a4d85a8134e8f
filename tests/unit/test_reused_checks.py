"""SPF and DMARC results reused by their inputs (`Authenticator(reuse=N)`): the next message
from the same client, sender and From domain is decided on the same cached DNS answers, with
no question asked again, and with exactly the verdicts a fresh check gives; a check runs again
once an answer it used has left the cache, and never reuses what met a DNS failure, what read
the clock, an SPF fail's explanation, or a DMARC sample."""

from __future__ import annotations

import io
import time
from collections import Counter

import pytest

from mxgate.authn.check import Authenticator
from mxgate.authn.model import Authentication
from mxgate.authn.resolver import CachingResolver
from mxgate.ports import DnsAnswer, DnsFailure

ENVELOPE = {"client_ip": "192.0.2.7", "mail_from": "someone@example.test", "helo": "mx.example"}
OTHER_CLIENT = {**ENVELOPE, "client_ip": "203.0.113.9"}


def message(from_domain: str = "example.test", number: int = 0) -> io.BytesIO:
    return io.BytesIO(
        f"From: someone@{from_domain}\r\nTo: alice@nutrition.co\r\n"
        f"Subject: message {number}\r\n\r\nhello\r\n".encode()
    )


class Dns:
    """Answers from a dict, counting the questions; a name in `failing` fails."""

    def __init__(self, records: dict[tuple[str, str], list[str]]) -> None:
        self.records = records
        self.failing: set[str] = set()
        self.asked: Counter[tuple[str, str]] = Counter()

    def query(self, name: str, rrtype: str) -> DnsAnswer:
        key = (name.lower().rstrip("."), rrtype)
        self.asked[key] += 1
        if key[0] in self.failing:
            raise DnsFailure(f"{name}: timed out")
        found = self.records.get(key)
        if found is None:
            return DnsAnswer(records=(), ttl=60.0, exists=False)
        return DnsAnswer(records=tuple(found), ttl=60.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def zone() -> dict[tuple[str, str], list[str]]:
    return {
        ("example.test", "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"],
        ("mx.example", "TXT"): ["v=spf1 ip4:192.0.2.7 -all"],
        ("_dmarc.example.test", "TXT"): ["v=DMARC1; p=reject"],
        ("_dmarc.other.test", "TXT"): ["v=DMARC1; p=none"],
    }


def authenticators(
    records: dict[tuple[str, str], list[str]],
) -> tuple[Authenticator, Dns, Clock]:
    dns, clock = Dns(records), Clock()
    resolver = CachingResolver(dns, monotonic=clock)
    return Authenticator(resolver, "mxgate.test", reuse=16), dns, clock


def fresh(records: dict[tuple[str, str], list[str]], body: io.BytesIO, **envelope: str) -> object:
    """What an authenticator that has checked nothing before decides."""
    return Authenticator(Dns(records), "mxgate.test").authenticate(body, **envelope)


def checked(authentication: Authentication) -> tuple[str, str, str]:
    return (
        authentication.spf_mail_from.result.value,
        authentication.spf_helo.result.value,
        authentication.dmarc.result.value,
    )


def test_the_next_message_with_the_same_inputs_asks_nothing_and_is_decided_the_same() -> None:
    authenticator, dns, _ = authenticators(zone())
    first = authenticator.authenticate(message(number=1), **ENVELOPE)
    asked = sum(dns.asked.values())
    assert asked > 0
    second = authenticator.authenticate(message(number=2), **ENVELOPE)
    assert sum(dns.asked.values()) == asked  # not even the cache's inner resolver
    assert second == fresh(zone(), message(number=2), **ENVELOPE)
    assert second == first
    assert checked(second) == ("pass", "pass", "pass")


def test_another_client_or_from_domain_is_checked_for_itself() -> None:
    authenticator, _, _ = authenticators(zone())
    authenticator.authenticate(message(), **ENVELOPE)
    failed = authenticator.authenticate(message(), **OTHER_CLIENT)
    assert failed == fresh(zone(), message(), **OTHER_CLIENT)
    assert checked(failed) == ("fail", "fail", "fail")
    other = authenticator.authenticate(message("other.test"), **ENVELOPE)
    assert other == fresh(zone(), message("other.test"), **ENVELOPE)
    assert other.dmarc.from_domain == "other.test"
    assert other.dmarc.result.value == "fail"  # SPF's example.test is not aligned


def test_an_answer_past_its_ttl_is_asked_again_and_a_changed_record_decides() -> None:
    records = zone()
    authenticator, dns, clock = authenticators(records)
    authenticator.authenticate(message(), **ENVELOPE)
    records["example.test", "TXT"] = ["v=spf1 -all"]
    kept = authenticator.authenticate(message(), **ENVELOPE)
    assert kept.spf_mail_from.result.value == "pass"  # the cached answer, as before
    clock.now += 61
    again = authenticator.authenticate(message(), **ENVELOPE)
    assert dns.asked["example.test", "TXT"] == 2
    assert again == fresh(records, message(), **ENVELOPE)
    assert checked(again) == ("fail", "pass", "fail")


def test_a_dns_failure_is_never_reused() -> None:
    authenticator, dns, _ = authenticators(zone())
    dns.failing.add("example.test")
    failed = authenticator.authenticate(message(), **ENVELOPE)
    assert failed.spf_mail_from.result.value == "temperror"
    dns.failing.clear()
    passed = authenticator.authenticate(message(), **ENVELOPE)
    assert passed.spf_mail_from.result.value == "pass"
    assert passed.dmarc.result.value == "pass"


def test_an_spf_fail_with_the_domains_explanation_is_checked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = {
        **zone(),
        ("example.test", "TXT"): ["v=spf1 -all exp=why.example.test"],
        ("why.example.test", "TXT"): ["not allowed at %{t}"],  # %{t}: the time of the check
    }
    authenticator, dns, _ = authenticators(records)
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.0)
    first = authenticator.authenticate(message(), **ENVELOPE)
    assert first.spf_mail_from.explanation == "not allowed at 1800000000"
    monkeypatch.setattr(time, "time", lambda: 1_800_000_060.0)
    second = authenticator.authenticate(message(), **ENVELOPE)
    assert second.spf_mail_from.explanation == "not allowed at 1800000060"  # checked again
    assert dns.asked["example.test", "TXT"] == 1  # on the cache's answer


def test_a_dmarc_policy_that_samples_is_decided_for_each_message() -> None:
    records = {**zone(), ("_dmarc.example.test", "TXT"): ["v=DMARC1; p=reject; pct=50"]}
    authenticator, _, _ = authenticators(records)
    for number in range(12):
        mine = authenticator.authenticate(message(number=number), **OTHER_CLIENT)
        assert mine.dmarc == fresh(records, message(number=number), **OTHER_CLIENT).dmarc
    policies = {
        authenticator.authenticate(message(number=n), **OTHER_CLIENT).dmarc.policy
        for n in range(12)
    }
    assert len(policies) == 2  # some messages sampled in, some out: each decided by its own


def test_without_a_caching_resolver_nothing_is_reused() -> None:
    dns = Dns(zone())
    authenticator = Authenticator(dns, "mxgate.test", reuse=16)
    authenticator.authenticate(message(), **ENVELOPE)
    asked = sum(dns.asked.values())
    authenticator.authenticate(message(), **ENVELOPE)
    assert sum(dns.asked.values()) == 2 * asked
