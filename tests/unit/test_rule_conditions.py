"""Rule set conditions, one table per condition type: every attribute and operator."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from mxgate.authn.model import DmarcPolicy, Verdict
from mxgate.mailmanager.addresses import StaticAddressBook
from mxgate.mailmanager.conditions import rule_applies, rule_condition_holds
from mxgate.mailmanager.facts import MessageFacts
from mxgate.mailmanager.models import Rule, RuleCondition

RECIPIENT = "alice+orders@nutrition.co"
FACTS = MessageFacts(
    mail_from="bounces@shop.example",
    helo="mta.shop.example",
    source_ip="198.51.100.7",
    size=5000,
    tls=True,
    subject="Invoice 42 for March",
    from_addresses=("billing@shop.example",),
    sender_addresses=("robot@shop.example",),
    to_addresses=("alice+orders@nutrition.co", "bob@nutrition.co"),
    cc_addresses=("carol@nutrition.co",),
    raw_headers={
        "from": ("Billing <billing@shop.example>",),
        "sender": ("robot@shop.example",),
        "to": ("Alice <alice+orders@nutrition.co>, bob@nutrition.co",),
        "cc": ("carol@nutrition.co",),
        "x-priority": ("1 (Highest)",),
        "x-spam-flag": ("NO",),
    },
)
BOOK = StaticAddressBook(
    {
        "Vips": ["carol@nutrition.co", "alice*@nutrition.co"],
        "Partners": ["*@shop.example"],
    }
)


def holds(
    condition: dict[str, Any], facts: MessageFacts = FACTS, recipient: str = RECIPIENT
) -> bool:
    held, why = rule_condition_holds(
        RuleCondition.model_validate(condition), recipient, facts, BOOK
    )
    assert why  # every evaluation says why
    return held


def string(attribute: str, operator: str, *values: str) -> dict[str, Any]:
    return {
        "StringExpression": {
            "Evaluate": {"Attribute": attribute},
            "Operator": operator,
            "Values": list(values),
        }
    }


STRING_CASES = [
    # attribute, operator, values, expected
    ("MAIL_FROM", "EQUALS", ["bounces@shop.example"], True),
    ("MAIL_FROM", "EQUALS", ["BOUNCES@shop.example"], True),  # case-insensitive
    ("MAIL_FROM", "NOT_EQUALS", ["other@shop.example"], True),
    ("MAIL_FROM", "STARTS_WITH", ["bounces@"], True),
    ("MAIL_FROM", "ENDS_WITH", ["@shop.example"], True),
    ("MAIL_FROM", "CONTAINS", ["@shop."], True),
    ("MAIL_FROM", "CONTAINS", ["nutrition"], False),
    ("HELO", "EQUALS", ["mta.shop.example"], True),
    ("HELO", "NOT_EQUALS", ["mta.shop.example"], False),
    ("HELO", "STARTS_WITH", ["mta."], True),
    ("HELO", "ENDS_WITH", [".example"], True),
    ("HELO", "CONTAINS", ["shop"], True),
    # RECIPIENT is the full envelope address, +tag included
    ("RECIPIENT", "EQUALS", ["alice@nutrition.co"], False),
    ("RECIPIENT", "EQUALS", ["alice+orders@nutrition.co"], True),
    ("RECIPIENT", "NOT_EQUALS", ["alice@nutrition.co"], True),
    ("RECIPIENT", "STARTS_WITH", ["alice+"], True),
    ("RECIPIENT", "ENDS_WITH", ["@nutrition.co"], True),
    ("RECIPIENT", "CONTAINS", ["+orders"], True),
    ("SENDER", "EQUALS", ["robot@shop.example"], True),
    ("SENDER", "NOT_EQUALS", ["robot@shop.example"], False),
    ("SENDER", "STARTS_WITH", ["robot"], True),
    ("SENDER", "ENDS_WITH", ["@nutrition.co"], False),
    ("SENDER", "CONTAINS", ["bot@"], True),
    ("FROM", "EQUALS", ["billing@shop.example"], True),  # the address in the field
    ("FROM", "CONTAINS", ["Billing <"], True),  # or the field as written
    ("FROM", "NOT_EQUALS", ["billing@shop.example"], False),
    ("FROM", "STARTS_WITH", ["billing@"], True),
    ("FROM", "ENDS_WITH", ["shop.example"], True),
    ("SUBJECT", "EQUALS", ["Invoice 42 for March"], True),
    ("SUBJECT", "NOT_EQUALS", ["Invoice"], True),
    ("SUBJECT", "STARTS_WITH", ["invoice"], True),
    ("SUBJECT", "ENDS_WITH", ["March"], True),
    ("SUBJECT", "CONTAINS", ["42"], True),
    # TO holds several addresses: any of them matches; NOT_EQUALS only when none does
    ("TO", "EQUALS", ["bob@nutrition.co"], True),
    ("TO", "NOT_EQUALS", ["bob@nutrition.co"], False),
    ("TO", "NOT_EQUALS", ["dave@nutrition.co"], True),
    ("TO", "STARTS_WITH", ["alice+"], True),
    ("TO", "ENDS_WITH", ["@nutrition.co"], True),
    ("TO", "CONTAINS", ["+orders"], True),
    ("CC", "EQUALS", ["carol@nutrition.co"], True),
    ("CC", "NOT_EQUALS", ["carol@nutrition.co"], False),
    ("CC", "STARTS_WITH", ["carol"], True),
    ("CC", "ENDS_WITH", ["@shop.example"], False),
    ("CC", "CONTAINS", ["arol"], True),
    # several values are ORed ...
    ("HELO", "EQUALS", ["a.example", "mta.shop.example"], True),
    ("SUBJECT", "CONTAINS", ["refund", "invoice"], True),
    # ... except NOT_EQUALS, which holds only when no value matches
    ("MAIL_FROM", "NOT_EQUALS", ["a@x.example", "b@x.example"], True),
    ("MAIL_FROM", "NOT_EQUALS", ["a@x.example", "bounces@shop.example"], False),
    ("RECIPIENT", "NOT_EQUALS", ["alice@nutrition.co", "alice+orders@nutrition.co"], False),
]


@pytest.mark.parametrize(("attribute", "operator", "values", "expected"), STRING_CASES)
def test_string_attributes(attribute, operator, values, expected):
    assert holds(string(attribute, operator, *values)) is expected


def test_every_string_attribute_and_operator_is_covered():
    covered = {(a, o) for a, o, _, _ in STRING_CASES}
    for attribute in ("MAIL_FROM", "HELO", "RECIPIENT", "SENDER", "FROM", "SUBJECT", "TO", "CC"):
        for operator in ("EQUALS", "NOT_EQUALS", "STARTS_WITH", "ENDS_WITH", "CONTAINS"):
            assert (attribute, operator) in covered


def mime(header: str, operator: str, *values: str) -> dict[str, Any]:
    return {
        "StringExpression": {
            "Evaluate": {"MimeHeaderAttribute": header},
            "Operator": operator,
            "Values": list(values),
        }
    }


@pytest.mark.parametrize(
    ("header", "operator", "values", "expected"),
    [
        ("X-Priority", "EQUALS", ["1 (Highest)"], True),
        ("X-Priority", "NOT_EQUALS", ["1 (Highest)"], False),
        ("X-Priority", "STARTS_WITH", ["1"], True),
        ("X-Priority", "ENDS_WITH", ["(highest)"], True),
        ("X-Priority", "CONTAINS", ["High"], True),
        ("X-Spam-Flag", "EQUALS", ["YES", "MAYBE"], False),
        # an absent header matches nothing, so only NOT_EQUALS holds
        ("X-Absent", "EQUALS", ["x"], False),
        ("X-Absent", "NOT_EQUALS", ["x"], True),
        ("X-Absent", "CONTAINS", ["x"], False),
    ],
)
def test_mime_header_attribute(header, operator, values, expected):
    assert holds(mime(header, operator, *values)) is expected


def ip(operator: str, *values: str) -> dict[str, Any]:
    return {
        "IpExpression": {
            "Evaluate": {"Attribute": "SOURCE_IP"},
            "Operator": operator,
            "Values": list(values),
        }
    }


@pytest.mark.parametrize(
    ("source_ip", "operator", "values", "expected"),
    [
        ("198.51.100.7", "CIDR_MATCHES", ["198.51.100.0/24"], True),
        ("198.51.100.7", "CIDR_MATCHES", ["203.0.113.0/24"], False),
        ("198.51.100.7", "CIDR_MATCHES", ["203.0.113.0/24", "198.51.0.0/16"], True),
        ("198.51.100.7", "CIDR_MATCHES", ["198.51.100.7"], True),  # a bare address
        ("198.51.100.7", "NOT_CIDR_MATCHES", ["203.0.113.0/24"], True),
        ("198.51.100.7", "NOT_CIDR_MATCHES", ["203.0.113.0/24", "198.51.100.0/24"], False),
        ("2001:db8::25", "CIDR_MATCHES", ["2001:db8::/32"], True),
        ("2001:db8::25", "CIDR_MATCHES", ["198.51.100.0/24"], False),  # other family
        ("2001:db8::25", "NOT_CIDR_MATCHES", ["198.51.100.0/24"], True),
        ("::ffff:198.51.100.7", "CIDR_MATCHES", ["198.51.100.0/24"], True),  # v4-mapped
    ],
)
def test_source_ip(source_ip, operator, values, expected):
    assert holds(ip(operator, *values), replace(FACTS, source_ip=source_ip)) is expected


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        ("EQUALS", 5000, True),
        ("EQUALS", 4999, False),
        ("NOT_EQUALS", 4999, True),
        ("NOT_EQUALS", 5000, False),
        ("LESS_THAN", 5001, True),
        ("LESS_THAN", 5000, False),
        ("GREATER_THAN", 4999, True),
        ("GREATER_THAN", 5000, False),
        ("LESS_THAN_OR_EQUAL", 5000, True),
        ("LESS_THAN_OR_EQUAL", 4999, False),
        ("GREATER_THAN_OR_EQUAL", 5000, True),
        ("GREATER_THAN_OR_EQUAL", 5001, False),
    ],
)
def test_message_size(operator, value, expected):
    condition = {
        "NumberExpression": {
            "Evaluate": {"Attribute": "MESSAGE_SIZE"},
            "Operator": operator,
            "Value": value,
        }
    }
    assert holds(condition) is expected


def boolean(evaluate: dict[str, Any], operator: str) -> dict[str, Any]:
    return {"BooleanExpression": {"Evaluate": evaluate, "Operator": operator}}


@pytest.mark.parametrize(
    ("attribute", "facts", "operator", "expected"),
    [
        ("READ_RECEIPT_REQUESTED", {"read_receipt_requested": True}, "IS_TRUE", True),
        ("READ_RECEIPT_REQUESTED", {"read_receipt_requested": False}, "IS_TRUE", False),
        ("READ_RECEIPT_REQUESTED", {"read_receipt_requested": False}, "IS_FALSE", True),
        ("TLS", {"tls": True}, "IS_TRUE", True),
        ("TLS", {"tls": False}, "IS_TRUE", False),
        ("TLS", {"tls": False}, "IS_FALSE", True),
        ("TLS_WRAPPED", {"tls_wrapped": False}, "IS_TRUE", False),
        ("TLS_WRAPPED", {"tls_wrapped": False}, "IS_FALSE", True),
    ],
)
def test_boolean_attributes(attribute, facts, operator, expected):
    condition = boolean({"Attribute": attribute}, operator)
    assert holds(condition, replace(FACTS, **facts)) is expected


def listed(attribute: str, address_list: str, operator: str = "IS_TRUE") -> dict[str, Any]:
    return boolean(
        {"IsInAddressList": {"Attribute": attribute, "AddressLists": [address_list]}}, operator
    )


@pytest.mark.parametrize(
    ("attribute", "address_list", "operator", "recipient", "expected"),
    [
        ("RECIPIENT", "Vips", "IS_TRUE", "alice+orders@nutrition.co", True),  # alice* wildcard
        ("RECIPIENT", "Vips", "IS_TRUE", "ALICE@nutrition.co", True),
        ("RECIPIENT", "Vips", "IS_TRUE", "bob@nutrition.co", False),
        ("RECIPIENT", "Vips", "IS_FALSE", "bob@nutrition.co", True),
        ("MAIL_FROM", "Partners", "IS_TRUE", RECIPIENT, True),  # *@shop.example
        ("SENDER", "Partners", "IS_TRUE", RECIPIENT, True),
        ("FROM", "Partners", "IS_TRUE", RECIPIENT, True),
        ("TO", "Vips", "IS_TRUE", RECIPIENT, True),
        ("CC", "Vips", "IS_TRUE", RECIPIENT, True),
        ("CC", "Partners", "IS_TRUE", RECIPIENT, False),
        ("RECIPIENT", "Unknown", "IS_TRUE", RECIPIENT, False),  # an empty list
        # the list may be named by its ARN, as templates do with GetAtt
        (
            "RECIPIENT",
            "arn:aws:ses:us-east-1:000000000000:mailmanager-address-list/Vips",
            "IS_TRUE",
            "carol@nutrition.co",
            True,
        ),
    ],
)
def test_is_in_address_list(attribute, address_list, operator, recipient, expected):
    assert holds(listed(attribute, address_list, operator), recipient=recipient) is expected


def verdict(attribute: str, operator: str, *values: str) -> dict[str, Any]:
    return {
        "VerdictExpression": {
            "Evaluate": {"Attribute": attribute},
            "Operator": operator,
            "Values": list(values),
        }
    }


@pytest.mark.parametrize(
    ("attribute", "actual", "operator", "values", "expected"),
    [
        ("SPF", "PASS", "EQUALS", ["PASS"], True),
        ("SPF", "FAIL", "EQUALS", ["PASS"], False),
        ("SPF", "GRAY", "EQUALS", ["FAIL", "GRAY"], True),
        ("SPF", "PASS", "NOT_EQUALS", ["FAIL", "GRAY"], True),
        ("SPF", "FAIL", "NOT_EQUALS", ["FAIL", "GRAY"], False),
        ("DKIM", "PASS", "EQUALS", ["PASS"], True),
        ("DKIM", "FAIL", "NOT_EQUALS", ["PASS"], True),
        ("DKIM", "PROCESSING_FAILED", "EQUALS", ["PROCESSING_FAILED"], True),
    ],
)
def test_spf_and_dkim_verdicts(attribute, actual, operator, values, expected):
    facts = replace(FACTS, **{attribute.lower(): Verdict(actual)})
    assert holds(verdict(attribute, operator, *values), facts) is expected


def test_verdicts_are_processing_failed_until_authentication_runs():
    assert FACTS.spf is Verdict.PROCESSING_FAILED
    assert FACTS.dkim is Verdict.PROCESSING_FAILED
    assert holds(verdict("SPF", "EQUALS", "PROCESSING_FAILED"))


@pytest.mark.parametrize(
    ("policy", "operator", "values", "expected"),
    [
        (DmarcPolicy.REJECT, "EQUALS", ["REJECT"], True),
        (DmarcPolicy.QUARANTINE, "EQUALS", ["REJECT", "QUARANTINE"], True),
        (DmarcPolicy.NONE, "EQUALS", ["REJECT"], False),
        (DmarcPolicy.NONE, "NOT_EQUALS", ["REJECT", "QUARANTINE"], True),
        (DmarcPolicy.REJECT, "NOT_EQUALS", ["REJECT", "QUARANTINE"], False),
        (None, "EQUALS", ["NONE"], False),  # no policy known
    ],
)
def test_dmarc(policy, operator, values, expected):
    condition = {"DmarcExpression": {"Operator": operator, "Values": values}}
    assert holds(condition, replace(FACTS, dmarc_policy=policy)) is expected


def test_add_on_analysis_never_matches_locally():
    condition = {
        "StringExpression": {
            "Evaluate": {"Analysis": {"Analyzer": "arn:aws:ses:::addon/x", "ResultField": "v"}},
            "Operator": "EQUALS",
            "Values": ["x"],
        }
    }
    held, why = rule_condition_holds(
        RuleCondition.model_validate(condition), RECIPIENT, FACTS, BOOK
    )
    assert held is False
    assert "not available locally" in why


@pytest.mark.parametrize(
    ("conditions", "unless", "expected", "reason"),
    [
        ([], [], True, "no conditions"),
        ([string("HELO", "CONTAINS", "shop")], [], True, "Conditions[0] held"),
        (
            [string("HELO", "CONTAINS", "shop"), string("SUBJECT", "CONTAINS", "refund")],
            [],
            False,
            "Conditions[1] did not hold",
        ),
        ([], [string("SUBJECT", "CONTAINS", "invoice")], False, "Unless[0] held"),
        ([], [string("SUBJECT", "CONTAINS", "refund")], True, "no Unless condition held"),
        (
            [string("RECIPIENT", "ENDS_WITH", "@nutrition.co")],
            [listed("RECIPIENT", "Vips")],
            False,
            "Unless[0] held",
        ),
    ],
)
def test_a_rule_applies_when_all_conditions_and_no_unless_hold(
    conditions, unless, expected, reason
):
    rule = Rule.model_validate(
        {"Conditions": conditions, "Unless": unless, "Actions": [{"Drop": {}}]}
    )
    match = rule_applies(rule, RECIPIENT, FACTS, BOOK)
    assert match.applies is expected
    assert reason in match.reason
