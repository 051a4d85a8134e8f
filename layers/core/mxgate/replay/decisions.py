"""What the gateway would decide for each recipient of one stored message, and what changes
between two configurations. Pure over its inputs: the traffic policy and rule set walk of
`rules explain` (a dry run), then the terminal state each recipient would reach: what an
action settles, a Drop, or, for what WriteToS3 hands on, the route and quarantine rules of the
routes file, as the process step decides them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from mxgate.mailmanager.addons import AddonResult
from mxgate.mailmanager.addresses import AddressBook
from mxgate.mailmanager.explain import Explanation, explain
from mxgate.mailmanager.facts import MessageFacts, SessionFacts
from mxgate.mailmanager.resources import MailManagerResources
from mxgate.mailmanager.rules import TERMINAL_BY_ACTION, RecipientTrail
from mxgate.mailmanager.traffic import TrafficVerdict
from mxgate.records import Envelope, Outcome
from mxgate.routing.classify import RouteKind, classify
from mxgate.routing.quarantine import MessageFacts as RouteFacts
from mxgate.routing.quarantine import quarantine_rule
from mxgate.routing.recipients import DirectoryAddressBook
from mxgate.routing.routes import Routes

REFUSED = "refused"  # not accepted at RCPT: no terminal state, the sender got a 5xx


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message of the history: the envelope and the bytes as they were received."""

    envelope: Envelope
    raw: bytes
    received_at: datetime
    subject: str = ""


@dataclass(frozen=True)
class Configuration:
    """One side of the comparison: a template's Mail Manager resources and a routes file."""

    label: str  # the template's path, for the report
    mail_manager: MailManagerResources
    routes: Routes


@dataclass(frozen=True)
class Decision:
    """Where one recipient would end, and why."""

    accepted: str  # the address accepted at RCPT
    recipient: str  # the address that ends (a ReplaceRecipient's new one)
    outcome: str  # an Outcome value, or "refused"
    route: str  # mailbox:<host>, app:<name>, quarantine:<rule>, rules, or the refusing statement
    why: str
    actions: tuple[str, ...] = ()  # each action that ran for it, with what it would do
    rules: tuple[str, ...] = ()  # the rules that matched, in order
    trail: tuple[tuple[str, bool, str], ...] = ()  # (rule, matched, the deciding condition)

    @property
    def key(self) -> tuple[str, str]:
        return self.accepted.casefold(), self.recipient.casefold()

    @property
    def effect(self) -> tuple[str, str, tuple[str, ...]]:
        """What the comparison looks at: where it ends and what was done on the way."""
        return self.outcome, self.route, self.actions

    @property
    def shown(self) -> str:
        return f"{self.outcome} ({self.route})"


def _leaves(trail: RecipientTrail) -> Iterator[RecipientTrail]:
    if trail.replaced_with is None:
        yield trail
        return
    for child in trail.replaced_with:
        yield from _leaves(child)


def _route(recipient: str, routes: Routes, facts: RouteFacts | None) -> tuple[str, str, str]:
    """(outcome, route, why) of a recipient the workflow takes, as the process step decides."""
    if facts is None:
        return Outcome.QUARANTINED.value, "quarantine", "message not understood"
    route = classify(recipient, routes)
    if route.kind is RouteKind.UNKNOWN:
        return Outcome.QUARANTINED.value, "unknown", route.reason
    held = quarantine_rule(routes.quarantine, route.name, facts)
    if held is not None:
        rule, why = held
        return Outcome.QUARANTINED.value, f"quarantine:{rule.name}", f"rule {rule.name}: {why}"
    outcome = Outcome.DELIVERED if route.kind is RouteKind.MAILBOX else Outcome.HANDED_TO_APP
    return outcome.value, f"{route.kind.value}:{route.name}", route.reason


def _ingress_id(config: MailManagerResources, envelope: Envelope) -> str:
    if envelope.ingress_point in config.ingress_points:
        return envelope.ingress_point
    open_points = [k for k, v in config.ingress_points.items() if v.Type == "OPEN"]
    return open_points[0] if open_points else config.ingress_point()[0]


@dataclass(frozen=True)
class Known:
    """What is known of one stored message: the same under both configurations."""

    message: StoredMessage
    facts: MessageFacts  # what rule set conditions see
    route_facts: RouteFacts | None  # what quarantine rules see; None: not understood
    addons: Mapping[str, AddonResult] = field(default_factory=dict)  # blocklists, asked now


def decide(side: Configuration, known: Known, book: AddressBook) -> list[Decision]:
    """Every recipient's decision under one configuration: `book` holds the address lists
    of files; the directory's list is the side's own routes file's."""
    book = DirectoryAddressBook(book, side.mail_manager, side.routes)
    envelope = known.message.envelope
    explanation = explain(
        config=side.mail_manager,
        ingress_id=_ingress_id(side.mail_manager, envelope),
        facts=known.facts,
        recipients=envelope.recipients,
        session=SessionFacts(envelope.source_ip, envelope.tls_protocol, known.addons),
        book=book,
    )
    return list(_Settling(explanation, side.routes, known.route_facts).decisions())


class _Settling:
    """The rule set's end for each recipient, as local/rule_set.py settles them after a real run."""

    def __init__(
        self, explanation: Explanation, routes: Routes, route_facts: RouteFacts | None
    ) -> None:
        self.explanation = explanation
        self.routes = routes
        self.route_facts = route_facts
        self.handed_on: set[str] = set()
        self.succeeded: dict[str, list[str]] = {}
        for record in explanation.records:
            if record.action_status != "SUCCESS":
                continue
            for address in record.recipients_matched:
                self.succeeded.setdefault(address, []).append(record.action_name)
                if record.action_name == "WriteToS3":
                    self.handed_on.add(address)

    def decisions(self) -> Iterator[Decision]:
        for item in self.explanation.recipients:
            if item.traffic.verdict is TrafficVerdict.REJECT or item.trail is None:
                yield Decision(
                    item.recipient, item.recipient, REFUSED, item.traffic.decided_by, "at RCPT"
                )
                continue
            for leaf in _leaves(item.trail):
                yield self.decision(item.recipient, leaf)

    def decision(self, accepted: str, leaf: RecipientTrail) -> Decision:
        address = leaf.recipient
        done = [a for a in self.succeeded.get(address, ()) if a in TERMINAL_BY_ACTION]
        if address in self.handed_on:  # the workflow decides, even if a later rule dropped it
            outcome, route, why = _route(address, self.routes, self.route_facts)
        elif done:
            outcome, route = TERMINAL_BY_ACTION[done[0]].value, "rules"
            why = f"rule action {done[0]}"
        elif leaf.dropped_by is not None:
            outcome, route, why = Outcome.DROPPED.value, "rules", leaf.dropped_by
        else:
            outcome, route = Outcome.DROPPED.value, "rules"
            why = f"no rule delivered it (actions: {', '.join(leaf.actions) or 'none'})"
        return Decision(
            accepted=accepted,
            recipient=address,
            outcome=outcome,
            route=route,
            why=why,
            actions=tuple(
                f"{r.action_name}: {r.detail}" if r.detail else r.action_name
                for r in self.explanation.records
                if address in r.recipients_matched
            ),
            rules=tuple(leaf.matched_rules),
            trail=tuple((d.rule_name, d.applies, d.reason) for d in leaf.decisions),
        )


@dataclass(frozen=True)
class Change:
    """A recipient whose decision differs between the two configurations."""

    message: StoredMessage
    old: Decision | None  # None: the address does not come up under the old configuration
    new: Decision | None

    @property
    def recipient(self) -> str:
        either = self.new or self.old
        assert either is not None
        return (
            either.recipient
            if either.recipient == either.accepted
            else (f"{either.accepted} -> {either.recipient}")
        )

    def differing_rules(self) -> list[str]:
        """The rules that matched under one configuration and not the other, and why: a rule
        is "not evaluated" where it is not in the rule set, or the recipient was gone before."""
        old = {name: (applies, why) for name, applies, why in (self.old.trail if self.old else ())}
        new = {name: (applies, why) for name, applies, why in (self.new.trail if self.new else ())}
        lines = []
        for name in dict.fromkeys([*new, *old]):
            before, after = old.get(name), new.get(name)
            if (before is not None and before[0]) == (after is not None and after[0]):
                continue
            was = "not evaluated" if before is None else "MATCH" if before[0] else "no match"
            now = "not evaluated" if after is None else "MATCH" if after[0] else "no match"
            why = after[1] if after is not None else before[1] if before is not None else ""
            lines.append(f"{name}: {was} -> {now}" + (f": {why}" if after is not None else ""))
        return lines


@dataclass
class Comparison:
    messages: int = 0
    recipients: int = 0
    first: datetime | None = None
    last: datetime | None = None
    changes: list[Change] = field(default_factory=list)

    def add(self, message: StoredMessage, old: list[Decision], new: list[Decision]) -> None:
        self.messages += 1
        self.recipients += len({d.key for d in old} | {d.key for d in new})
        at = message.received_at
        self.first = at if self.first is None or at < self.first else self.first
        self.last = at if self.last is None or at > self.last else self.last
        before = {d.key: d for d in old}
        after = {d.key: d for d in new}
        for key in dict.fromkeys([*before, *after]):
            was, now = before.get(key), after.get(key)
            if was is None or now is None or was.effect != now.effect:
                self.changes.append(Change(message, was, now))
