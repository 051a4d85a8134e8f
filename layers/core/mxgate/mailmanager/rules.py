"""Rule set evaluation, after DATA, per envelope recipient (MAIL_MANAGER.md).

Every matching rule runs, in order. A rule applies to a recipient when all its Conditions
hold and none of its Unless conditions hold. `Drop` removes only the recipients it matched;
`ReplaceRecipient` puts new envelope recipients in their place for the actions and rules
that follow; `AddHeader` changes the message that later actions (and later header
conditions) see for the recipients it matched. Everything else is an effect that the
caller's executor performs, so the same walk serves delivery and `mxgate rules explain`.
Whether a rule applies is `mailmanager.conditions`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from mxgate.errors import FailureKind, MxgateError
from mxgate.mailmanager.addresses import AddressBook
from mxgate.mailmanager.conditions import rule_applies
from mxgate.mailmanager.facts import MessageFacts
from mxgate.mailmanager.models import FailurePolicy, Rule, RuleAction, RuleSet
from mxgate.records import Outcome

# What an action's success means for a recipient that no WriteToS3 hands to the workflow.
TERMINAL_BY_ACTION = {
    "Relay": Outcome.DELIVERED,
    "Send": Outcome.DELIVERED,
    "DeliverToMailbox": Outcome.DELIVERED,
    "Bounce": Outcome.BOUNCED,
    "InvokeLambda": Outcome.HANDED_TO_APP,
    "PublishToSns": Outcome.HANDED_TO_APP,
}


@dataclass(frozen=True, slots=True)
class ActionContext:
    """What an executor needs to perform one action for the recipients a rule matched."""

    rule_index: int
    rule_name: str
    action_index: int
    recipients: tuple[str, ...]
    added_headers: tuple[tuple[str, str], ...]  # AddHeader fields so far, oldest first
    # 0 when every recipient of the action sees the same message; 1, 2, ... for each version
    # when AddHeader made them differ, so that stored copies get one key per version.
    variant: int = 0


class PartialFailureError(MxgateError):
    """An action failed for some of its recipients (and may have succeeded for the others);
    `transient` names those whose failure may pass (a 4xx reply). Its kind is transient when
    any of them may pass: trying again repeats only what failed (idempotency keys)."""

    def __init__(self, failed: Mapping[str, str], transient: Collection[str] = ()) -> None:
        self.failed = dict(failed)
        self.transient = frozenset(transient)
        self.kind = FailureKind.TRANSIENT if self.transient else FailureKind.PERMANENT
        super().__init__("; ".join(f"{r}: {why}" for r, why in self.failed.items()))


class ActionExecutor(Protocol):
    def execute(self, action: RuleAction, context: ActionContext) -> str:
        """Perform the action; return a short detail. Raise MxgateError when it failed (or
        PartialFailureError when it failed for some recipients only)."""
        ...


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One rule-set log record, shaped like Mail Manager's vended rule set logs."""

    rule_index: int
    rule_name: str
    action_index: int
    action_name: str
    recipients_matched: tuple[str, ...]
    action_status: str  # SUCCESS | FAILURE
    action_failure: str = ""
    detail: str = ""
    transient: tuple[str, ...] = ()  # of a FAILURE: the recipients worth another try later
    reasons: tuple[tuple[str, str], ...] = ()  # of a partial FAILURE: each recipient's own

    def failure_for(self, recipient: str) -> str:
        """Why the action failed for one of its recipients."""
        return dict(self.reasons).get(recipient, self.action_failure)

    def as_log(self) -> dict[str, object]:
        record: dict[str, object] = {
            "rule_name": self.rule_name,
            "rule_index": self.rule_index,
            "recipients_matched": list(self.recipients_matched),
            "action_name": self.action_name,
            "action_index": self.action_index,
            "action_status": self.action_status,
            "action_failure": self.action_failure,
        }
        if self.detail:
            record["detail"] = self.detail
        return record


@dataclass(frozen=True, slots=True)
class RuleDecision:
    rule_index: int
    rule_name: str
    applies: bool
    reason: str  # the condition that decided


@dataclass
class RecipientTrail:
    """How one envelope recipient went through the rule set.

    ReplaceRecipient ends a trail and starts one per new address (`replaced_with`); the
    rules after it see the new addresses, each on its own."""

    recipient: str
    facts: MessageFacts  # as this recipient's rules see the message (AddHeader included)
    accepted: str = ""  # the address accepted at RCPT this trail descends from
    added_headers: list[tuple[str, str]] = field(default_factory=list)
    decisions: list[RuleDecision] = field(default_factory=list)
    matched_rules: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    dropped_by: str | None = None
    replaced_with: list[RecipientTrail] | None = None
    replaced_by: str = ""  # the rule whose ReplaceRecipient did it

    def __post_init__(self) -> None:
        self.accepted = self.accepted or self.recipient

    @property
    def active(self) -> bool:
        return self.dropped_by is None and self.replaced_with is None


@dataclass
class RuleSetOutcome:
    trails: list[RecipientTrail]  # one per accepted recipient; replacements hang below them
    records: list[ActionRecord]

    def all_trails(self) -> Iterator[RecipientTrail]:
        pending = list(self.trails)
        while pending:
            trail = pending.pop(0)
            yield trail
            pending[:0] = trail.replaced_with or []

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
    outcome = RuleSetOutcome([RecipientTrail(r, facts) for r in dict.fromkeys(recipients)], [])
    for index, rule in enumerate(rule_set.Rules):
        live = [t for t in outcome.all_trails() if t.active]
        if not live:
            break  # nothing left: processing stops
        label = rule_label(index, rule)
        matched: list[RecipientTrail] = []
        for trail in live:
            decision = rule_applies(rule, trail.recipient, trail.facts, book)
            trail.decisions.append(RuleDecision(index, label, decision.applies, decision.reason))
            if decision.applies:
                trail.matched_rules.append(label)
                matched.append(trail)
        for a_index, action in enumerate(rule.Actions):
            matched = [t for t in matched if t.active]
            if not matched:
                break
            for trail in matched:
                trail.actions.append(action.kind)
            step = _Step(outcome, index, label, a_index, action)
            if action.kind == "Drop":
                step.drop(matched)
            elif action.kind == "AddHeader":
                step.add_header(matched)
            elif action.kind == "ReplaceRecipient":
                matched = step.replace_recipients(matched)
            else:
                step.execute(matched, executor)
    return outcome


@dataclass
class _Step:
    """One action of one rule, applied to the recipients the rule matched."""

    outcome: RuleSetOutcome
    rule_index: int
    label: str
    action_index: int
    action: RuleAction

    def record(
        self,
        recipients: Sequence[str],
        status: str,
        failure: str = "",
        *,
        detail: str = "",
        transient: Collection[str] = (),
        reasons: Mapping[str, str] | None = None,
    ) -> None:
        reasons = reasons or {}
        self.outcome.records.append(
            ActionRecord(
                self.rule_index,
                self.label,
                self.action_index,
                self.action.kind,
                tuple(dict.fromkeys(recipients)),
                status,
                failure,
                detail,
                tuple(r for r in dict.fromkeys(recipients) if r in transient),
                tuple((r, reasons[r]) for r in dict.fromkeys(recipients) if r in reasons),
            )
        )

    def drop(self, matched: list[RecipientTrail]) -> None:
        for trail in matched:
            trail.dropped_by = f"rule {self.label}: Drop"
        self.record([t.recipient for t in matched], "SUCCESS")

    def add_header(self, matched: list[RecipientTrail]) -> None:
        params = self.action.AddHeader
        assert params is not None
        for trail in matched:
            trail.added_headers.append((params.HeaderName, params.HeaderValue))
            trail.facts = _with_header(trail.facts, params.HeaderName, params.HeaderValue)
        self.record(
            [t.recipient for t in matched],
            "SUCCESS",
            detail=f"{params.HeaderName}: {params.HeaderValue}",
        )

    def replace_recipients(self, matched: list[RecipientTrail]) -> list[RecipientTrail]:
        params = self.action.ReplaceRecipient
        replacement = list(dict.fromkeys((params and params.ReplaceWith) or []))
        if not replacement:  # AWS does not say what an empty ReplaceWith does: change nothing
            self.record([t.recipient for t in matched], "SUCCESS", detail="no ReplaceWith")
            return matched
        children: list[RecipientTrail] = []
        for trail in matched:
            trail.replaced_by = self.label
            trail.replaced_with = [
                RecipientTrail(
                    address,
                    trail.facts,
                    accepted=trail.accepted,
                    added_headers=list(trail.added_headers),
                    matched_rules=[self.label],
                )
                for address in replacement
            ]
            children += trail.replaced_with
        self.record(
            [t.recipient for t in matched], "SUCCESS", detail=f"replaced with {replacement}"
        )
        return children

    def execute(self, matched: list[RecipientTrail], executor: ActionExecutor) -> None:
        # Recipients whose message differs (an AddHeader matched only some) are separate calls.
        groups: dict[tuple[tuple[str, str], ...], list[RecipientTrail]] = {}
        for trail in matched:
            groups.setdefault(tuple(trail.added_headers), []).append(trail)
        for number, (headers, trails) in enumerate(groups.items(), start=1):
            addresses = tuple(dict.fromkeys(t.recipient for t in trails))
            context = ActionContext(
                self.rule_index,
                self.label,
                self.action_index,
                addresses,
                headers,
                variant=number if len(groups) > 1 else 0,
            )
            try:
                detail = executor.execute(self.action, context)
            except PartialFailureError as partial:
                failed = [a for a in addresses if a in partial.failed]
                done = [a for a in addresses if a not in partial.failed]
                if done:
                    self.record(done, "SUCCESS")
                self.record(
                    failed,
                    "FAILURE",
                    str(partial),
                    transient=partial.transient,
                    reasons=partial.failed,
                )
                self.fail([t for t in trails if t.recipient in partial.failed], str(partial))
            except MxgateError as error:
                transient = addresses if error.kind is FailureKind.TRANSIENT else ()
                self.record(addresses, "FAILURE", str(error), transient=transient)
                self.fail(trails, str(error))
            else:
                self.record(addresses, "SUCCESS", detail=detail)

    def fail(self, trails: list[RecipientTrail], reason: str) -> None:
        if self.action.failure_policy is FailurePolicy.DROP:
            for trail in trails:
                trail.dropped_by = (
                    f"rule {self.label}: {self.action.kind} failed ({reason}); "
                    "ActionFailurePolicy DROP"
                )


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
