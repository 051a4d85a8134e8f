"""`mxgate rules explain`: what an ingress point would do with one message, and why.

The same traffic policy and rule set walk as the gateway, with a dry-run executor that
describes each action instead of performing it. Pure: nothing is sent or stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mxgate.mailmanager.addresses import AddressBook
from mxgate.mailmanager.facts import MessageFacts, SessionFacts
from mxgate.mailmanager.models import RuleAction
from mxgate.mailmanager.resources import MailManagerResources
from mxgate.mailmanager.rules import (
    ActionContext,
    ActionRecord,
    RecipientTrail,
    run_rule_set,
)
from mxgate.mailmanager.template import logical_id_of
from mxgate.mailmanager.traffic import TrafficDecision, TrafficVerdict, evaluate_traffic_policy


class DryRunExecutor:
    """Says what each action would do; performs nothing."""

    def __init__(self, config: MailManagerResources) -> None:
        self.config = config

    def execute(self, action: RuleAction, context: ActionContext) -> str:
        match action.kind:
            case "Relay":
                assert action.Relay is not None
                relay_id, relay = self.config.relay(action.Relay.Relay)
                mail_from = action.Relay.MailFrom or "PRESERVE"
                return (
                    f"would relay to {relay.ServerName}:{relay.ServerPort} ({relay_id}), "
                    f"MAIL FROM {mail_from}"
                )
            case "Archive":
                assert action.Archive is not None
                return f"would archive in {self.config.archive_id(action.Archive.TargetArchive)}"
            case "WriteToS3":
                assert action.WriteToS3 is not None
                prefix = action.WriteToS3.S3Prefix or ""
                return (
                    f"would write s3://{action.WriteToS3.S3Bucket}/{prefix}<message id> "
                    "(which starts the workflow)"
                )
            case "Send":
                return "would send to the recipients through SES (SendRawEmail)"
            case "Bounce":
                assert action.Bounce is not None
                b = action.Bounce
                return (
                    f"would bounce ({b.SmtpReplyCode} {b.StatusCode} {b.DiagnosticMessage}): "
                    f"a DSN from {b.Sender} to the envelope sender"
                )
            case "PublishToSns":
                assert action.PublishToSns is not None
                p = action.PublishToSns
                return (
                    f"would publish to {p.TopicArn} "
                    f"({p.PayloadType or 'CONTENT'}, {p.Encoding or 'UTF-8'})"
                )
            case "InvokeLambda":
                assert action.InvokeLambda is not None
                return (
                    f"would invoke {action.InvokeLambda.FunctionArn} "
                    f"({action.InvokeLambda.InvocationType})"
                )
            case "DeliverToMailbox":
                assert action.DeliverToMailbox is not None
                return f"would deliver to the WorkMail mailbox {action.DeliverToMailbox.MailboxArn}"
            case _:
                assert action.DeliverToQBusiness is not None
                return (
                    "would index in Amazon Q Business application "
                    f"{action.DeliverToQBusiness.ApplicationId} (the local gateway cannot: it "
                    "records a FAILURE)"
                )


@dataclass
class RecipientExplanation:
    recipient: str
    traffic: TrafficDecision
    trail: RecipientTrail | None  # None when the recipient was refused during the session


@dataclass
class Explanation:
    ingress_id: str
    rule_set_id: str
    recipients: list[RecipientExplanation]
    records: list[ActionRecord]

    def details(self, trail: RecipientTrail, rule_index: int) -> list[ActionRecord]:
        return [
            r
            for r in self.records
            if r.rule_index == rule_index and trail.recipient in r.recipients_matched
        ]

    def _trail_json(self, trail: RecipientTrail) -> dict[str, Any]:
        document: dict[str, Any] = {
            "matched_rules": list(trail.matched_rules),
            "actions": list(trail.actions),
            "dropped": trail.dropped_by is not None,
            "dropped_by": trail.dropped_by,
            "rules": [
                {
                    "rule_index": d.rule_index,
                    "rule_name": d.rule_name,
                    "matched": d.applies,
                    "reason": d.reason,
                    "actions": [
                        {"action": r.action_name, "status": r.action_status, "detail": r.detail}
                        for r in self.details(trail, d.rule_index)
                    ]
                    if d.applies
                    else [],
                }
                for d in trail.decisions
            ],
        }
        if trail.replaced_with is not None:
            document["replaced_with"] = [
                {"recipient": child.recipient, **self._trail_json(child)}
                for child in trail.replaced_with
            ]
        return document

    def as_json(self) -> dict[str, Any]:
        recipients = []
        for item in self.recipients:
            accepted = item.traffic.verdict is TrafficVerdict.ACCEPT
            entry: dict[str, Any] = {
                "recipient": item.recipient,
                "traffic_policy_verdict": item.traffic.verdict.value,
                "matched_rules": [],
                "actions": [],
                "dropped": False,
                "traffic_policy": {
                    "ingress_point_id": self.ingress_id,
                    "decided_by": item.traffic.decided_by,
                    "statements": item.traffic.as_log()["statements"],
                },
            }
            if accepted and item.trail is not None:
                entry |= self._trail_json(item.trail)
            recipients.append(entry)
        return {"recipients": recipients}

    def lines(self) -> list[str]:
        out = []
        for item in self.recipients:
            traffic = item.traffic
            out.append(item.recipient)
            out.append(
                f"  traffic policy: {traffic.verdict.value}, decided by {traffic.decided_by}"
            )
            for statement in traffic.evaluations:
                result = (
                    "not evaluated"
                    if statement.matched is None
                    else "MATCH"
                    if statement.matched
                    else "no match"
                )
                why = "; ".join(statement.conditions)
                out.append(
                    f"    PolicyStatements[{statement.index}] {statement.action.value}: {result}"
                    + (f" ({why})" if why else "")
                )
            if item.trail is None:
                out.append("  rule set: not reached (refused during the SMTP session)")
            else:
                out += self._trail_lines(item.trail, "  ")
            out.append("")
        return out

    def _trail_lines(self, trail: RecipientTrail, indent: str) -> list[str]:
        out = [f"{indent}rule set {self.rule_set_id}:"]
        for decision in trail.decisions:
            label = f"[{decision.rule_index}] {decision.rule_name}"
            verdict = "MATCH" if decision.applies else "no match"
            out.append(f"{indent}  {label}: {verdict}: {decision.reason}")
            if decision.applies:
                for record in self.details(trail, decision.rule_index):
                    status = "" if record.action_status == "SUCCESS" else " FAILURE"
                    detail = record.detail or record.action_failure
                    out.append(
                        f"{indent}      {record.action_name}{status}"
                        + (f": {detail}" if detail else "")
                    )
        actions = ", ".join(trail.actions) or "none"
        if trail.replaced_with is not None:
            replaced = ", ".join(t.recipient for t in trail.replaced_with)
            out.append(f"{indent}  => replaced with {replaced} (actions so far: {actions})")
            for child in trail.replaced_with:
                out.append(f"{indent}  {child.recipient} (replacing {trail.recipient})")
                out += self._trail_lines(child, indent + "    ")
        elif trail.dropped_by is not None:
            out.append(f"{indent}  => dropped ({trail.dropped_by}); actions: {actions}")
        else:
            out.append(f"{indent}  => actions: {actions}")
        return out


def _session_refusal(
    config: MailManagerResources, ingress_id: str, session: SessionFacts
) -> str | None:
    ingress = config.ingress_points[ingress_id]
    if ingress.requires_starttls and session.tls_protocol is None:
        return f"TlsPolicy {ingress.TlsPolicy}: MAIL before STARTTLS is refused (530 5.7.0)"
    return None


def explain(
    *,
    config: MailManagerResources,
    ingress_id: str,
    facts: MessageFacts,
    recipients: Sequence[str],
    session: SessionFacts,
    book: AddressBook,
) -> Explanation:
    """Evaluate one message as the ingress point would: the traffic policy per recipient
    (after the TLS policy, before the size limit), then the rule set for the accepted ones."""
    ingress = config.ingress_points[ingress_id]
    policy = config.traffic_policy(ingress)
    rule_set = config.rule_set(ingress)
    limit = policy.max_message_size
    refusal = _session_refusal(config, ingress_id, session)
    decisions = []
    for recipient in dict.fromkeys(recipients):
        if refusal is not None:
            decision = TrafficDecision(recipient, TrafficVerdict.REJECT, refusal, ())
        else:
            decision = evaluate_traffic_policy(policy, recipient, session, book)
            if decision.verdict is TrafficVerdict.ACCEPT and facts.size > limit:
                decision = TrafficDecision(
                    recipient,
                    TrafficVerdict.REJECT,
                    f"MaxMessageSizeBytes: {facts.size} > {limit} bytes (552 5.3.4)",
                    decision.evaluations,
                )
        decisions.append(decision)
    accepted = [d.recipient for d in decisions if d.verdict is TrafficVerdict.ACCEPT]
    outcome = run_rule_set(rule_set, facts, accepted, book, DryRunExecutor(config))
    trails = {t.recipient: t for t in outcome.trails}
    return Explanation(
        ingress_id=ingress_id,
        rule_set_id=logical_id_of(ingress.RuleSetId),
        recipients=[
            RecipientExplanation(d.recipient, d, trails.get(d.recipient)) for d in decisions
        ],
        records=outcome.records,
    )
