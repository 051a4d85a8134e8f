"""Rule set evaluation, after DATA, per envelope recipient (MAIL_MANAGER.md).

Every matching rule runs, in order. A rule applies to a recipient when all its Conditions
hold and none of its Unless conditions hold. `Drop` removes only the recipients it matched;
`ReplaceRecipient` rewrites them for the rules that follow; `AddHeader` changes the message
that later actions (and later header conditions) see. Everything else is an effect that the
caller's executor performs, so the same walk serves delivery and `mxgate rules explain`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from mxgate.errors import MxgateError
from mxgate.mailmanager.addresses import AddressBook
from mxgate.mailmanager.facts import MessageFacts
from mxgate.mailmanager.models import (
    AddressListAttribute,
    BooleanAttribute,
    BooleanOperator,
    EqualsOperator,
    FailurePolicy,
    Rule,
    RuleAction,
    RuleCondition,
    RuleSet,
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
        policy = facts.dmarc_policy.value if facts.dmarc_policy else "(DMARC did not fail)"
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
    for index, condition in enumerate(rule.Conditions):
        held, why = rule_condition_holds(condition, recipient, facts, book)
        if not held:
            return RuleMatch(False, f"Conditions[{index}] did not hold: {why}")
    for index, condition in enumerate(rule.Unless):
        held, why = rule_condition_holds(condition, recipient, facts, book)
        if held:
            return RuleMatch(False, f"Unless[{index}] held: {why}")
    if not rule.Conditions and not rule.Unless:
        return RuleMatch(True, "no conditions: applies to every recipient")
    return RuleMatch(True, f"all {len(rule.Conditions)} conditions held, no Unless held")


# ----------------------------------------------------------------------------- the walk


@dataclass(frozen=True, slots=True)
class ActionContext:
    """What an executor needs to perform one action for the recipients a rule matched."""

    rule_index: int
    rule_name: str
    action_index: int
    recipients: tuple[str, ...]
    added_headers: tuple[tuple[str, str], ...]


class ActionExecutor(Protocol):
    def execute(self, action: RuleAction, context: ActionContext) -> str:
        """Perform the action; return a short detail, or raise MxgateError on failure."""
        ...


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One rule-set log record, shaped like Mail Manager's vended rule set logs."""

    rule_index: int
    rule_name: str
    action_name: str
    recipients_matched: tuple[str, ...]
    action_status: str  # SUCCESS | FAILURE
    action_failure: str = ""
    detail: str = ""

    def as_log(self) -> dict[str, object]:
        return {
            "rule_name": self.rule_name,
            "rule_index": self.rule_index,
            "recipients_matched": list(self.recipients_matched),
            "action_name": self.action_name,
            "action_status": self.action_status,
            "action_failure": self.action_failure,
        }


@dataclass
class RecipientTrail:
    """How one accepted recipient went through the rule set."""

    recipient: str
    addresses: list[str]  # its current envelope addresses (ReplaceRecipient may change them)
    matched_rules: list[str] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)  # per rule: why it did or did not apply
    actions: list[str] = field(default_factory=list)
    dropped_by: str | None = None


@dataclass
class RuleSetOutcome:
    trails: list[RecipientTrail]
    records: list[ActionRecord]
    added_headers: list[tuple[str, str]]

    def trail(self, recipient: str) -> RecipientTrail:
        return next(t for t in self.trails if t.recipient == recipient)


def rule_label(index: int, rule: Rule) -> str:
    return rule.Name or f"rule-{index}"


def run_rule_set(
    rule_set: RuleSet,
    facts: MessageFacts,
    recipients: Sequence[str],
    book: AddressBook,
    executor: ActionExecutor,
) -> RuleSetOutcome:
    trails = [RecipientTrail(r, [r]) for r in dict.fromkeys(recipients)]
    outcome = RuleSetOutcome(trails, [], [])
    for index, rule in enumerate(rule_set.Rules):
        label = rule_label(index, rule)
        live = [t for t in trails if t.dropped_by is None]
        if not live:
            break  # nothing left: processing stops
        matched: list[RecipientTrail] = []
        for trail in live:
            # A recipient rewritten into several addresses matches if any of them does.
            results = [rule_applies(rule, a, facts, book) for a in trail.addresses]
            decision = next((r for r in results if r.applies), results[0])
            trail.decisions.append(f"{label}: {decision.reason}")
            if decision.applies:
                trail.matched_rules.append(label)
                matched.append(trail)
        for a_index, action in enumerate(rule.Actions):
            matched = [t for t in matched if t.dropped_by is None]
            if not matched:
                break
            addresses = tuple(dict.fromkeys(a for t in matched for a in t.addresses))
            for trail in matched:
                trail.actions.append(action.kind)
            if action.kind == "Drop":
                for trail in matched:
                    trail.dropped_by = f"rule {label}: Drop"
                outcome.records.append(ActionRecord(index, label, "Drop", addresses, "SUCCESS"))
                continue
            if action.kind == "AddHeader":
                assert action.AddHeader is not None
                outcome.added_headers.append(
                    (action.AddHeader.HeaderName, action.AddHeader.HeaderValue)
                )
                facts = _with_header(
                    facts, action.AddHeader.HeaderName, action.AddHeader.HeaderValue
                )
                outcome.records.append(
                    ActionRecord(index, label, "AddHeader", addresses, "SUCCESS")
                )
                continue
            if action.kind == "ReplaceRecipient":
                replacement = list(
                    (action.ReplaceRecipient and action.ReplaceRecipient.ReplaceWith) or []
                )
                for trail in matched:
                    trail.addresses = replacement or trail.addresses
                outcome.records.append(
                    ActionRecord(
                        index,
                        label,
                        "ReplaceRecipient",
                        addresses,
                        "SUCCESS",
                        detail=f"replaced with {replacement}",
                    )
                )
                continue
            context = ActionContext(index, label, a_index, addresses, tuple(outcome.added_headers))
            try:
                detail = executor.execute(action, context)
            except MxgateError as error:
                outcome.records.append(
                    ActionRecord(index, label, action.kind, addresses, "FAILURE", str(error))
                )
                if action.failure_policy is FailurePolicy.DROP:
                    for trail in matched:
                        trail.dropped_by = f"rule {label}: {action.kind} failed ({error}); ActionFailurePolicy DROP"
                continue
            outcome.records.append(
                ActionRecord(index, label, action.kind, addresses, "SUCCESS", detail=detail)
            )
    return outcome


def _with_header(facts: MessageFacts, name: str, value: str) -> MessageFacts:
    """The facts as later rules see them: with the added header field."""
    key = name.lower()
    return replace(facts, raw_headers=_Overlay(facts.raw_headers, key, (*facts.header(key), value)))


class _Overlay(Mapping[str, Sequence[str]]):
    """A header map with one name's values replaced, leaving the (lazy) base untouched."""

    def __init__(self, base: Mapping[str, Sequence[str]], name: str, values: Sequence[str]) -> None:
        self._base, self._name, self._values = base, name, values

    def __getitem__(self, name: str) -> Sequence[str]:
        return self._values if name == self._name else self._base[name]

    def __iter__(self) -> Iterator[str]:
        yield self._name
        yield from (k for k in self._base if k != self._name)

    def __len__(self) -> int:
        return len(self._base) + (self._name not in self._base)
