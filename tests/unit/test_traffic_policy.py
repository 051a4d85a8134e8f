"""The traffic policy, per recipient at RCPT: DENY statements, then ALLOW, then the default."""

from __future__ import annotations

from typing import Any

import pytest

from mxgate.mailmanager.addresses import StaticAddressBook
from mxgate.mailmanager.facts import SessionFacts
from mxgate.mailmanager.models import PolicyCondition, TrafficPolicy
from mxgate.mailmanager.traffic import TrafficVerdict, condition_holds, evaluate_traffic_policy

BOOK = StaticAddressBook({"Blocked": ["*@blocked.nutrition.co", "mallory@nutrition.co"]})
V4 = SessionFacts(sender_ip="198.51.100.7", tls_protocol="TLS1_3")
V6 = SessionFacts(sender_ip="2001:db8::25", tls_protocol="TLS1_2")
PLAIN = SessionFacts(sender_ip="198.51.100.7", tls_protocol=None)


def recipient(operator: str, *values: str) -> dict[str, Any]:
    return {
        "StringExpression": {
            "Evaluate": {"Attribute": "RECIPIENT"},
            "Operator": operator,
            "Values": list(values),
        }
    }


def sender_ip(operator: str, *values: str) -> dict[str, Any]:
    return {
        "IpExpression": {
            "Evaluate": {"Attribute": "SENDER_IP"},
            "Operator": operator,
            "Values": list(values),
        }
    }


def sender_ipv6(operator: str, *values: str) -> dict[str, Any]:
    return {
        "Ipv6Expression": {
            "Evaluate": {"Attribute": "SENDER_IPV6"},
            "Operator": operator,
            "Values": list(values),
        }
    }


def tls(operator: str, value: str) -> dict[str, Any]:
    return {
        "TlsExpression": {
            "Evaluate": {"Attribute": "TLS_PROTOCOL"},
            "Operator": operator,
            "Value": value,
        }
    }


def in_list(operator: str = "IS_TRUE") -> dict[str, Any]:
    return {
        "BooleanExpression": {
            "Evaluate": {
                "IsInAddressList": {"Attribute": "RECIPIENT", "AddressLists": ["Blocked"]}
            },
            "Operator": operator,
        }
    }


CASES = [
    # condition, recipient, session, expected
    (recipient("EQUALS", "alice@nutrition.co"), "alice@nutrition.co", V4, True),
    (recipient("EQUALS", "alice@nutrition.co"), "alice+news@nutrition.co", V4, False),
    (recipient("NOT_EQUALS", "a@nutrition.co", "b@nutrition.co"), "c@nutrition.co", V4, True),
    (recipient("NOT_EQUALS", "a@nutrition.co", "b@nutrition.co"), "b@nutrition.co", V4, False),
    (recipient("STARTS_WITH", "postmaster@"), "postmaster@nutrition.co", V4, True),
    (recipient("ENDS_WITH", "@nutrition.co"), "alice+news@nutrition.co", V4, True),
    (recipient("ENDS_WITH", "@nutrition.co"), "alice@nutrition.co.evil.example", V4, False),
    (recipient("CONTAINS", "+"), "alice+news@nutrition.co", V4, True),
    (recipient("CONTAINS", "+"), "alice@nutrition.co", V4, False),
    (sender_ip("CIDR_MATCHES", "198.51.100.0/24"), "a@nutrition.co", V4, True),
    (sender_ip("CIDR_MATCHES", "203.0.113.0/24", "10.0.0.0/8"), "a@nutrition.co", V4, False),
    (sender_ip("NOT_CIDR_MATCHES", "203.0.113.0/24"), "a@nutrition.co", V4, True),
    (sender_ip("NOT_CIDR_MATCHES", "198.51.100.0/24"), "a@nutrition.co", V4, False),
    # an IPv6 sender has no SENDER_IP: it matches no IPv4 CIDR
    (sender_ip("CIDR_MATCHES", "0.0.0.0/0"), "a@nutrition.co", V6, False),
    (sender_ip("NOT_CIDR_MATCHES", "198.51.100.0/24"), "a@nutrition.co", V6, True),
    (sender_ipv6("CIDR_MATCHES", "2001:db8::/32"), "a@nutrition.co", V6, True),
    (sender_ipv6("CIDR_MATCHES", "2001:db9::/32"), "a@nutrition.co", V6, False),
    (sender_ipv6("NOT_CIDR_MATCHES", "2001:db9::/32"), "a@nutrition.co", V6, True),
    (sender_ipv6("NOT_CIDR_MATCHES", "2001:db8::/32"), "a@nutrition.co", V6, False),
    (sender_ipv6("CIDR_MATCHES", "::/0"), "a@nutrition.co", V4, False),
    (
        sender_ip("CIDR_MATCHES", "198.51.100.0/24"),
        "a@nutrition.co",
        SessionFacts(sender_ip="::ffff:198.51.100.7"),  # an IPv4 client on a dual-stack socket
        True,
    ),
    (tls("MINIMUM_TLS_VERSION", "TLS1_2"), "a@nutrition.co", V4, True),
    (tls("MINIMUM_TLS_VERSION", "TLS1_3"), "a@nutrition.co", V4, True),
    (tls("MINIMUM_TLS_VERSION", "TLS1_3"), "a@nutrition.co", V6, False),
    (tls("MINIMUM_TLS_VERSION", "TLS1_2"), "a@nutrition.co", PLAIN, False),
    (tls("IS", "TLS1_2"), "a@nutrition.co", V6, True),
    (tls("IS", "TLS1_2"), "a@nutrition.co", V4, False),
    (tls("IS", "TLS1_3"), "a@nutrition.co", PLAIN, False),
    (in_list(), "x@blocked.nutrition.co", V4, True),
    (in_list(), "Mallory@nutrition.co", V4, True),
    (in_list(), "alice@nutrition.co", V4, False),
    (in_list("IS_FALSE"), "alice@nutrition.co", V4, True),
    (in_list("IS_FALSE"), "mallory@nutrition.co", V4, False),
]


@pytest.mark.parametrize(("condition", "address", "session", "expected"), CASES)
def test_conditions(condition, address, session, expected):
    held, why = condition_holds(PolicyCondition.model_validate(condition), address, session, BOOK)
    assert held is expected
    assert why


def policy(default: str, *statements: tuple[str, list[dict[str, Any]]]) -> TrafficPolicy:
    return TrafficPolicy.model_validate(
        {
            "DefaultAction": default,
            "PolicyStatements": [{"Action": a, "Conditions": c} for a, c in statements],
        }
    )


OURS = recipient("ENDS_WITH", "@nutrition.co")


def test_deny_statements_win_over_earlier_allow_statements():
    gate = policy("DENY", ("ALLOW", [OURS]), ("DENY", [in_list()]))
    decision = evaluate_traffic_policy(gate, "mallory@nutrition.co", V4, BOOK)
    assert decision.verdict is TrafficVerdict.REJECT
    assert decision.decided_by == "PolicyStatements[1] (DENY)"
    # the DENY statement was evaluated first, the ALLOW statement never
    assert [(e.index, e.matched) for e in decision.evaluations] == [(1, True), (0, None)]
    log = decision.as_log()["statements"]
    assert [s["result"] for s in log] == ["MATCH", "NOT_EVALUATED"]


def test_allow_after_no_deny_matched():
    gate = policy("DENY", ("ALLOW", [OURS]), ("DENY", [in_list()]))
    decision = evaluate_traffic_policy(gate, "alice@nutrition.co", V4, BOOK)
    assert decision.verdict is TrafficVerdict.ACCEPT
    assert decision.decided_by == "PolicyStatements[0] (ALLOW)"
    assert [s["result"] for s in decision.as_log()["statements"]] == ["NO_MATCH", "MATCH"]


@pytest.mark.parametrize(("default", "verdict"), [("DENY", "REJECT"), ("ALLOW", "ACCEPT")])
def test_default_action_when_no_statement_matches(default, verdict):
    gate = policy(default, ("ALLOW", [recipient("EQUALS", "nobody@nutrition.co")]))
    decision = evaluate_traffic_policy(gate, "alice@elsewhere.example", V4, BOOK)
    assert decision.verdict.value == verdict
    assert decision.decided_by == f"DefaultAction ({default})"


def test_statement_conditions_are_anded():
    gate = policy("DENY", ("ALLOW", [OURS, sender_ip("CIDR_MATCHES", "203.0.113.0/24")]))
    decision = evaluate_traffic_policy(gate, "alice@nutrition.co", V4, BOOK)
    assert decision.verdict is TrafficVerdict.REJECT
    assert len(decision.evaluations[0].conditions) == 2  # both evaluated, the second failed


def test_no_statements_means_the_default():
    decision = evaluate_traffic_policy(policy("ALLOW"), "anyone@anywhere.example", V6, BOOK)
    assert decision.verdict is TrafficVerdict.ACCEPT
    assert decision.evaluations == ()


def members_of(list_id: str) -> dict[str, Any]:
    return {
        "BooleanExpression": {
            "Evaluate": {"IsInAddressList": {"Attribute": "RECIPIENT", "AddressLists": [list_id]}},
            "Operator": "IS_TRUE",
        }
    }


DIRECTORY = StaticAddressBook({"Directory": ["alice@nutrition.co", "alice+*@nutrition.co"]})


def test_a_recipient_an_allow_statement_wants_in_a_list_is_unknown_when_it_is_not():
    gate = policy("DENY", ("ALLOW", [OURS, members_of("Directory")]))
    unknown = evaluate_traffic_policy(gate, "no-such-user@nutrition.co", V4, DIRECTORY)
    assert unknown.verdict is TrafficVerdict.REJECT
    assert unknown.unlisted == "Directory"
    # another domain fails before the list is asked: refused by policy, not an unknown user
    foreign = evaluate_traffic_policy(gate, "alice@elsewhere.example", V4, DIRECTORY)
    assert foreign.verdict is TrafficVerdict.REJECT
    assert foreign.unlisted is None
    tagged = evaluate_traffic_policy(gate, "alice+news@nutrition.co", V4, DIRECTORY)
    assert tagged.verdict is TrafficVerdict.ACCEPT
    assert tagged.unlisted is None


def test_a_deny_for_non_members_says_which_list_too():
    gate = policy("ALLOW", ("DENY", [OURS, in_list("IS_FALSE")]))
    decision = evaluate_traffic_policy(gate, "alice@nutrition.co", V4, BOOK)
    assert decision.decided_by == "PolicyStatements[0] (DENY)"
    assert decision.unlisted == "Blocked"
    # a DENY for members refuses by policy: the recipient is known, and not wanted
    gate = policy("ALLOW", ("DENY", [in_list()]))
    assert evaluate_traffic_policy(gate, "mallory@nutrition.co", V4, BOOK).unlisted is None
