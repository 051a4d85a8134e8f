"""Traffic policy evaluation, per recipient at RCPT time: DENY statements first, then ALLOW
statements, then the default action (MAIL_MANAGER.md). Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mxgate.mailmanager.addons import addon_boolean, addon_strings
from mxgate.mailmanager.addresses import AddressBook
from mxgate.mailmanager.facts import SessionFacts
from mxgate.mailmanager.models import (
    AcceptAction,
    BooleanOperator,
    PolicyCondition,
    TlsOperator,
    TrafficPolicy,
)
from mxgate.mailmanager.operators import ip_family, ip_holds, string_holds
from mxgate.mailmanager.template import logical_id_of

_TLS_ORDER = {"TLS1_2": 2, "TLS1_3": 3}


class TrafficVerdict(StrEnum):
    ACCEPT = "ACCEPT"
    REJECT = "REJECT"


@dataclass(frozen=True, slots=True)
class StatementEvaluation:
    index: int
    action: AcceptAction
    matched: bool | None  # None: not evaluated, an earlier statement decided
    conditions: tuple[str, ...]  # one line per condition evaluated: the comparison and result


@dataclass(frozen=True, slots=True)
class TrafficDecision:
    recipient: str
    verdict: TrafficVerdict
    decided_by: str  # "PolicyStatements[2] (DENY)" or "DefaultAction (DENY)"
    evaluations: tuple[StatementEvaluation, ...]  # every statement, in evaluation order
    statement: int | None = None  # the index of the statement that decided, if one did
    # REJECT because the recipient is not in this address list (an unknown user), if so
    unlisted: str | None = None

    def as_log(self) -> dict[str, object]:
        return {
            "recipient": self.recipient,
            "verdict": self.verdict.value,
            "decided_by": self.decided_by,
            "statements": [
                {
                    "index": e.index,
                    "action": e.action.value,
                    "result": (
                        "NOT_EVALUATED"
                        if e.matched is None
                        else "MATCH"
                        if e.matched
                        else "NO_MATCH"
                    ),
                    "conditions": list(e.conditions),
                }
                for e in self.evaluations
            ],
        }


def _sender_ip(
    condition_family: int, attribute: str, session: SessionFacts
) -> tuple[str | None, str]:
    """The sender's address if it is of the family the condition is about. Otherwise the
    attribute has no value, which matches no CIDR: CIDR_MATCHES fails and NOT_CIDR_MATCHES
    holds (AWS does not say; this keeps `DENY unless from our range` closed to the other
    family)."""
    address = session.sender_ip or None
    if address is not None and ip_family(address) == condition_family:
        return address, f"{attribute} {address}"
    return None, f"{attribute} (none: the sender is {address or 'unknown'})"


def condition_holds(
    condition: PolicyCondition, recipient: str, session: SessionFacts, book: AddressBook
) -> tuple[bool, str]:
    """Whether one condition holds, and a line that says why."""
    if (expr := condition.StringExpression) is not None:
        if expr.Evaluate.Analysis is not None:
            candidates, shown = addon_strings(expr.Evaluate.Analysis, session.addons)
            if candidates is None:
                return False, shown
            held = string_holds(expr.Operator, candidates, expr.Values)
            return held, f"{shown} {expr.Operator.value} {expr.Values}: {held}"
        held = string_holds(expr.Operator, [recipient], expr.Values)
        return held, f"RECIPIENT {recipient} {expr.Operator.value} {expr.Values}: {held}"
    if (ip4 := condition.IpExpression) is not None:
        address, shown = _sender_ip(4, "SENDER_IP", session)
        held = ip_holds(ip4.Operator, address, ip4.Values)
        return held, f"{shown} {ip4.Operator.value} {ip4.Values}: {held}"
    if (ip6 := condition.Ipv6Expression) is not None:
        address, shown = _sender_ip(6, "SENDER_IPV6", session)
        held = ip_holds(ip6.Operator, address, ip6.Values)
        return held, f"{shown} {ip6.Operator.value} {ip6.Values}: {held}"
    if (tls := condition.TlsExpression) is not None:
        actual = _TLS_ORDER.get(session.tls_protocol or "", 0)
        wanted = _TLS_ORDER[tls.Value.value]
        held = (
            actual >= wanted
            if tls.Operator is TlsOperator.MINIMUM_TLS_VERSION
            else actual == wanted
        )
        shown = session.tls_protocol or "no TLS"
        return held, f"TLS_PROTOCOL {shown} {tls.Operator.value} {tls.Value.value}: {held}"
    boolean = condition.BooleanExpression
    assert boolean is not None
    listed = boolean.Evaluate.IsInAddressList
    if listed is None:
        assert boolean.Evaluate.Analysis is not None
        value, shown = addon_boolean(boolean.Evaluate.Analysis, session.addons)
        if value is None:
            return False, shown
        held = value if boolean.Operator is BooleanOperator.IS_TRUE else not value
        return held, f"{shown}, {boolean.Operator.value}: {held}"
    list_id = logical_id_of(listed.AddressLists[0])
    member = book.contains(list_id, recipient)
    held = member if boolean.Operator is BooleanOperator.IS_TRUE else not member
    why = f"RECIPIENT {recipient} in address list {list_id} is {member}"
    return held, f"{why}, {boolean.Operator.value}: {held}"


def _membership(condition: PolicyCondition) -> tuple[str, BooleanOperator] | None:
    """(list id, operator) when the condition asks whether the recipient is in a list."""
    boolean = condition.BooleanExpression
    listed = boolean.Evaluate.IsInAddressList if boolean is not None else None
    if boolean is None or listed is None:
        return None
    return logical_id_of(listed.AddressLists[0]), boolean.Operator


def evaluate_traffic_policy(
    policy: TrafficPolicy, recipient: str, session: SessionFacts, book: AddressBook
) -> TrafficDecision:
    evaluations: list[StatementEvaluation] = []
    decided: tuple[TrafficVerdict, str, int | None] | None = None
    # the list that kept the recipient out: an ALLOW it missed, or a DENY for non-members
    unlisted: str | None = None
    missed: str | None = None
    for action in (AcceptAction.DENY, AcceptAction.ALLOW):
        for index, statement in enumerate(policy.PolicyStatements):
            if statement.Action is not action:
                continue
            if decided is not None:
                evaluations.append(StatementEvaluation(index, action, None, ()))
                continue
            lines: list[str] = []
            matched = True
            non_member: str | None = None
            for condition in statement.Conditions:  # ANDed: stop at the first that fails
                held, why = condition_holds(condition, recipient, session, book)
                lines.append(why)
                membership = _membership(condition)
                if membership is not None:
                    asks_member = membership[1] is BooleanOperator.IS_TRUE
                    if held != asks_member:  # the recipient is not a member
                        non_member = membership[0]
                if not held:
                    matched = False
                    if action is AcceptAction.ALLOW and missed is None:
                        missed = non_member
                    break
            evaluations.append(StatementEvaluation(index, action, matched, tuple(lines)))
            if matched:
                verdict = (
                    TrafficVerdict.ACCEPT if action is AcceptAction.ALLOW else TrafficVerdict.REJECT
                )
                decided = (verdict, f"PolicyStatements[{index}] ({action.value})", index)
                if action is AcceptAction.DENY:
                    unlisted = non_member
    if decided is None:
        default = policy.DefaultAction
        verdict = TrafficVerdict.ACCEPT if default is AcceptAction.ALLOW else TrafficVerdict.REJECT
        decided = (verdict, f"DefaultAction ({default.value})", None)
        unlisted = missed if verdict is TrafficVerdict.REJECT else None
    return TrafficDecision(
        recipient, decided[0], decided[1], tuple(evaluations), decided[2], unlisted
    )
