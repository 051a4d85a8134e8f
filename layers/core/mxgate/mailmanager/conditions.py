"""Whether a rule's conditions hold for one recipient (MAIL_MANAGER.md): string, IP, number,
verdict, DMARC and boolean expressions, address lists; each answer with a line that says why,
for the rule set log and `mxgate rules explain`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mxgate.mailmanager.addresses import AddressBook
from mxgate.mailmanager.facts import MessageFacts
from mxgate.mailmanager.models import (
    AddressListAttribute,
    BooleanAttribute,
    BooleanOperator,
    EqualsOperator,
    Rule,
    RuleCondition,
    StringAttribute,
)
from mxgate.mailmanager.operators import ip_holds, number_holds, string_holds
from mxgate.mailmanager.template import logical_id_of


def _address_candidates(addresses: Sequence[str], raw: Sequence[str]) -> list[str]:
    return [*addresses, *raw]


def _string_candidates(
    expr_attribute: StringAttribute, recipient: str, facts: MessageFacts
) -> list[str]:
    match expr_attribute:
        case StringAttribute.MAIL_FROM:
            return [facts.mail_from]
        case StringAttribute.HELO:
            return [facts.helo]
        case StringAttribute.RECIPIENT:
            return [recipient]
        case StringAttribute.SUBJECT:
            return [facts.subject]
        case StringAttribute.FROM:
            return _address_candidates(facts.from_addresses, facts.header("from"))
        case StringAttribute.SENDER:
            return _address_candidates(facts.sender_addresses, facts.header("sender"))
        case StringAttribute.TO:
            return _address_candidates(facts.to_addresses, facts.header("to"))
        case StringAttribute.CC:
            return _address_candidates(facts.cc_addresses, facts.header("cc"))


def _list_addresses(
    attribute: AddressListAttribute, recipient: str, facts: MessageFacts
) -> Sequence[str]:
    return {
        AddressListAttribute.RECIPIENT: [recipient],
        AddressListAttribute.MAIL_FROM: [facts.mail_from],
        AddressListAttribute.SENDER: facts.sender_addresses,
        AddressListAttribute.FROM: facts.from_addresses,
        AddressListAttribute.TO: facts.to_addresses,
        AddressListAttribute.CC: facts.cc_addresses,
    }[attribute]


def rule_condition_holds(
    condition: RuleCondition, recipient: str, facts: MessageFacts, book: AddressBook
) -> tuple[bool, str]:
    """Whether one rule condition holds for one recipient, and a line that says why."""
    if (s := condition.StringExpression) is not None:
        if s.Evaluate.Attribute is not None:
            name = s.Evaluate.Attribute.value
            candidates = _string_candidates(s.Evaluate.Attribute, recipient, facts)
        elif s.Evaluate.MimeHeaderAttribute is not None:
            name = s.Evaluate.MimeHeaderAttribute
            candidates = list(facts.header(name))
            if not candidates:  # an absent header compares as nothing at all
                held = s.Operator.value == "NOT_EQUALS"
                return held, f"{name} absent, {s.Operator.value} {s.Values}: {held}"
        else:
            return False, f"{s.Evaluate.kind} is not available locally: no match"
        held = string_holds(s.Operator, candidates, s.Values)
        shown = candidates[0] if len(candidates) == 1 else candidates
        return held, f"{name} {shown!r} {s.Operator.value} {s.Values}: {held}"
    if (ip := condition.IpExpression) is not None:
        held = ip_holds(ip.Operator, facts.source_ip, ip.Values)
        return held, f"SOURCE_IP {facts.source_ip} {ip.Operator.value} {ip.Values}: {held}"
    if (n := condition.NumberExpression) is not None:
        held = number_holds(n.Operator, facts.size, n.Value)
        return held, f"MESSAGE_SIZE {facts.size} {n.Operator.value} {n.Value:g}: {held}"
    if (v := condition.VerdictExpression) is not None:
        if v.Evaluate.Attribute is None:
            return False, "add-on verdicts are not available locally: no match"
        actual = facts.spf if v.Evaluate.Attribute == "SPF" else facts.dkim
        hit = actual in v.Values
        held = hit if v.Operator is EqualsOperator.EQUALS else not hit
        values = [x.value for x in v.Values]
        return held, f"{v.Evaluate.Attribute} {actual.value} {v.Operator.value} {values}: {held}"
    if (d := condition.DmarcExpression) is not None:
        hit = facts.dmarc_policy is not None and facts.dmarc_policy in d.Values
        held = hit if d.Operator is EqualsOperator.EQUALS else not hit
        policy = facts.dmarc_policy.value if facts.dmarc_policy else "(none known)"
        values = [x.value for x in d.Values]
        return held, f"DMARC policy {policy} {d.Operator.value} {values}: {held}"
    b = condition.BooleanExpression
    assert b is not None
    if b.Evaluate.Attribute is not None:
        value = {
            BooleanAttribute.READ_RECEIPT_REQUESTED: facts.read_receipt_requested,
            BooleanAttribute.TLS: facts.tls,
            BooleanAttribute.TLS_WRAPPED: facts.tls_wrapped,
        }[b.Evaluate.Attribute]
        name = b.Evaluate.Attribute.value
    elif (listed := b.Evaluate.IsInAddressList) is not None:
        list_id = logical_id_of(listed.AddressLists[0])
        addresses = _list_addresses(listed.Attribute, recipient, facts)
        value = any(book.contains(list_id, a) for a in addresses)
        name = f"{listed.Attribute.value} in address list {list_id}"
    else:
        return False, "add-on analysis results are not available locally: no match"
    held = value if b.Operator is BooleanOperator.IS_TRUE else not value
    return held, f"{name} is {value}, {b.Operator.value}: {held}"


@dataclass(frozen=True, slots=True)
class RuleMatch:
    applies: bool
    reason: str  # the condition that decided


def rule_applies(rule: Rule, recipient: str, facts: MessageFacts, book: AddressBook) -> RuleMatch:
    """Whether a rule applies to one recipient, and the conditions that decided it."""
    held_lines = []
    for index, condition in enumerate(rule.Conditions):
        held, why = rule_condition_holds(condition, recipient, facts, book)
        if not held:
            return RuleMatch(False, f"Conditions[{index}] did not hold: {why}")
        held_lines.append(f"Conditions[{index}] held: {why}")
    for index, condition in enumerate(rule.Unless):
        held, why = rule_condition_holds(condition, recipient, facts, book)
        if held:
            return RuleMatch(False, f"Unless[{index}] held: {why}")
    if rule.Unless:
        held_lines.append(f"no Unless condition held ({len(rule.Unless)})")
    if not held_lines:
        return RuleMatch(True, "no conditions: applies to every recipient")
    return RuleMatch(True, "; ".join(held_lines))


# ----------------------------------------------------------------------------- the walk
