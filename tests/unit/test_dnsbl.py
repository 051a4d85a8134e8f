"""DNS blocklists as a traffic policy add-on: the RFC 5782 query, the return codes, and the
policy's add-on conditions over the results."""

from __future__ import annotations

import pytest

from mxgate.mailmanager.addons import (
    LISTED,
    LISTINGS,
    AddonResult,
    policy_analyses,
    result_field_problems,
)
from mxgate.mailmanager.addresses import StaticAddressBook
from mxgate.mailmanager.dnsbl import DnsblAnalyzer, query_name, read_answers, result_fields
from mxgate.mailmanager.facts import SessionFacts
from mxgate.mailmanager.models import TrafficPolicy
from mxgate.mailmanager.traffic import TrafficVerdict, evaluate_traffic_policy
from mxgate.ports import DnsAnswer, DnsFailure

ZEN = {"127.0.0.2": "SBL", "127.0.0.4": "XBL", "127.0.0.10": "PBL"}


@pytest.mark.parametrize(
    ("ip", "name"),
    [
        ("192.0.2.99", "99.2.0.192.bl.example"),
        ("::ffff:192.0.2.99", "99.2.0.192.bl.example"),  # IPv4 on a dual-stack socket
        (
            "2001:db8:1:2::3",
            "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.example",
        ),
    ],
)
def test_the_question_is_the_address_reversed_under_the_zone(ip: str, name: str) -> None:
    assert query_name(ip, "bl.example.") == name


@pytest.mark.parametrize(
    ("records", "listings", "failure"),
    [
        ((), (), ""),
        (("127.0.0.2",), ("SBL",), ""),
        (("127.0.0.4", "127.0.0.10"), ("XBL", "PBL"), ""),
        (("127.0.0.9",), ("127.0.0.9",), ""),  # a code the configuration does not name
        (("127.255.255.254",), (), "error code"),  # Spamhaus: queried via a public resolver
        (("203.0.113.1",), (), "error code"),  # not a DNSBL answer (a wildcarding resolver)
    ],
)
def test_return_codes_become_listings_or_failures(
    records: tuple[str, ...], listings: tuple[str, ...], failure: str
) -> None:
    found, problem = read_answers(records, ZEN)
    assert found == listings
    assert (failure in problem) if failure else problem == ""


class Answers:
    def __init__(self, records: dict[str, tuple[str, ...]], broken: bool = False) -> None:
        self.records = records
        self.broken = broken
        self.asked: list[tuple[str, str]] = []

    def query(self, name: str, rrtype: str) -> DnsAnswer:
        self.asked.append((name, rrtype))
        if self.broken:
            raise DnsFailure(f"{rrtype} {name}: timed out")
        if name in self.records:
            return DnsAnswer(self.records[name], 60)
        return DnsAnswer((), 60, exists=False)


def test_the_analyzer_answers_both_result_fields() -> None:
    resolver = Answers({"9.2.0.192.bl.example": ("127.0.0.4",)})
    analyzer = DnsblAnalyzer("Blocklist", "bl.example", resolver, ZEN)
    listed = analyzer.analyze("192.0.2.9")
    assert listed.fields == {LISTED: True, LISTINGS: ("XBL",)}
    assert listed.flagged
    assert not listed.failed
    assert listed.summary == "192.0.2.9 is listed in bl.example (XBL)"
    clean = analyzer.analyze("192.0.2.10")
    assert clean.fields == {LISTED: False, LISTINGS: ()}
    assert resolver.asked == [("9.2.0.192.bl.example", "A"), ("10.2.0.192.bl.example", "A")]


def test_a_failed_lookup_says_why_and_lists_nothing() -> None:
    analyzer = DnsblAnalyzer("Blocklist", "bl.example", Answers({}, broken=True), ZEN)
    result = analyzer.analyze("192.0.2.9")
    assert result.failed
    assert "timed out" in result.failure
    assert result.fields[LISTED] is False
    assert analyzer.analyze("").failure == "the sender's address is not known"


def policy(*conditions: dict[str, object]) -> TrafficPolicy:
    return TrafficPolicy.model_validate(
        {
            "DefaultAction": "ALLOW",
            "PolicyStatements": [{"Action": "DENY", "Conditions": list(conditions)}],
        }
    )


ANALYZER = "arn:aws:ses:us-east-1:000000000000:mailmanager-addon-instance/Blocklist"


def listed_is(value: str) -> dict[str, object]:
    return {
        "BooleanExpression": {
            "Evaluate": {"Analysis": {"Analyzer": ANALYZER, "ResultField": LISTED}},
            "Operator": value,
        }
    }


def listing_equals(*names: str) -> dict[str, object]:
    return {
        "StringExpression": {
            "Evaluate": {"Analysis": {"Analyzer": ANALYZER, "ResultField": LISTINGS}},
            "Operator": "EQUALS",
            "Values": list(names),
        }
    }


def session(*listings: str, failure: str = "") -> SessionFacts:
    result = AddonResult(
        "Blocklist",
        {LISTED: bool(listings), LISTINGS: tuple(listings)},
        flagged=bool(listings),
        failure=failure,
        summary="test",
    )
    return SessionFacts("192.0.2.9", "TLS1_3", {"Blocklist": result})


@pytest.mark.parametrize(
    ("condition", "facts", "verdict"),
    [
        (listed_is("IS_TRUE"), session("SBL"), TrafficVerdict.REJECT),
        (listed_is("IS_TRUE"), session(), TrafficVerdict.ACCEPT),
        (listed_is("IS_FALSE"), session(), TrafficVerdict.REJECT),
        (listed_is("IS_TRUE"), session(failure="timed out"), TrafficVerdict.ACCEPT),  # fail-open
        (listing_equals("XBL"), session("SBL", "XBL"), TrafficVerdict.REJECT),
        (listing_equals("XBL"), session("PBL"), TrafficVerdict.ACCEPT),
        (listed_is("IS_TRUE"), SessionFacts("192.0.2.9"), TrafficVerdict.ACCEPT),  # no result
    ],
)
def test_policy_conditions_over_the_add_on_results(
    condition: dict[str, object], facts: SessionFacts, verdict: TrafficVerdict
) -> None:
    decision = evaluate_traffic_policy(
        policy(condition), "alice@nutrition.co", facts, StaticAddressBook()
    )
    assert decision.verdict is verdict
    assert decision.statement == (0 if verdict is TrafficVerdict.REJECT else None)


def test_a_result_field_the_add_on_does_not_give_is_a_problem() -> None:
    wrong = {
        "BooleanExpression": {
            "Evaluate": {"Analysis": {"Analyzer": ANALYZER, "ResultField": LISTINGS}},
            "Operator": "IS_TRUE",
        }
    }
    (use,) = policy_analyses(policy(wrong))
    assert use.analyzer == "Blocklist"
    [(place, why)] = result_field_problems(use, result_fields())
    assert (
        place == "PolicyStatements[0].Conditions[0].BooleanExpression.Evaluate.Analysis.ResultField"
    )
    assert "not a result of add-on Blocklist" in why
    (good,) = policy_analyses(policy(listed_is("IS_TRUE")))
    assert result_field_problems(good, result_fields()) == []
