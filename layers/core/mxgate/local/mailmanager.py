"""The local Mail Manager: the template's rule set applied to each accepted message, with
every action performed on this machine (MAIL_MANAGER.md describes what each one does; the
README says how each behaves here)."""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mxgate.adapters.local.files import safe_name
from mxgate.authn.check import Authenticator
from mxgate.errors import PermanentError
from mxgate.local.facts import message_facts
from mxgate.local.lambdas import LocalLambdas
from mxgate.local.logs import RULE_SET, VendedLogs
from mxgate.local.mailbox import MaildirHandler
from mxgate.mailmanager.addresses import AddressBook
from mxgate.mailmanager.config import MailManagerConfig
from mxgate.mailmanager.facts import MessageFacts
from mxgate.mailmanager.models import RuleAction, RuleSet
from mxgate.mailmanager.notifications import (
    LAMBDA_HEADER_LIMIT,
    SNS_CONTENT_HEADER_LIMIT,
    SNS_HEADERS_LIMIT,
    SNS_MESSAGE_LIMIT,
    lambda_event,
    mail_object,
    receipt_object,
    ses_timestamp,
    sns_content,
)
from mxgate.mailmanager.rules import (
    ActionContext,
    PartialFailureError,
    RuleSetOutcome,
    run_rule_set,
)
from mxgate.mailmanager.template import logical_id_of
from mxgate.message.dsn import BounceReport, delivery_status_notification
from mxgate.message.headers import prepend_headers
from mxgate.ports import Clock, ObjectStore, Timeline, Transport
from mxgate.timeline import Outcome, RecipientState, Stage, TimelineEvent
from mxgate.workflow.envelope import store_envelope
from mxgate.workflow.model import Envelope

log = logging.getLogger("mxgate.mailmanager")

ARCHIVE_BUCKET = "mxgate-archive"

# What an action's success means for a recipient that no WriteToS3 hands to the workflow.
_TERMINAL_BY_ACTION = {
    "Relay": Outcome.DELIVERED,
    "Send": Outcome.DELIVERED,
    "DeliverToMailbox": Outcome.DELIVERED,
    "Bounce": Outcome.BOUNCED,
    "InvokeLambda": Outcome.HANDED_TO_APP,
    "PublishToSns": Outcome.HANDED_TO_APP,
}


@dataclass(frozen=True)
class LocalTargets:
    """Where actions that leave Mail Manager end up on this machine."""

    home: Path  # $MXGATE_HOME: sns/, workmail/
    hostname: str  # names the gateway in DSNs
    relays: Mapping[str, Transport]  # relay logical id -> transport (mailbox host or loopback)
    outbound: Transport | None  # the stand-in for the internet: Send and Bounce
    replace_mail_from: str  # envelope sender of Relay with MailFrom REPLACE


@dataclass
class _Written:
    """Objects WriteToS3 stored; their workflows start once the whole rule set has run."""

    objects: dict[tuple[str, str], list[str]] = field(default_factory=dict)


def _failed(results: Mapping[str, Any], what: str) -> None:
    """Raise for the recipients a transport did not take."""
    failed = {r: res.detail for r, res in results.items() if not res.ok}
    if failed and len(failed) == len(results):
        raise PermanentError(f"{what}: " + "; ".join(f"{r}: {d}" for r, d in failed.items()))
    if failed:
        raise PartialFailureError(failed)


class LocalActionExecutor:
    """Performs rule actions for one message on this machine."""

    def __init__(
        self, service: LocalMailManager, envelope: Envelope, raw: bytes, facts: MessageFacts
    ) -> None:
        self.service = service
        self.envelope = envelope
        self.raw = raw
        self.facts = facts
        self.written = _Written()

    def _message(self, context: ActionContext) -> bytes:
        # AddHeader fields are prepended newest first, as an MTA adds trace fields.
        return prepend_headers(self.raw, reversed(context.added_headers))

    def execute(self, action: RuleAction, context: ActionContext) -> str:
        handler = getattr(self, f"_{action.kind}")
        try:
            detail: str = handler(action, context)
        except OSError as error:  # a local file or socket problem fails the action, as on AWS
            raise PermanentError(f"{action.kind}: {type(error).__name__}: {error}") from error
        return detail

    # --------------------------------------------------------------------------- storage

    def _WriteToS3(self, action: RuleAction, context: ActionContext) -> str:  # noqa: N802
        params = action.WriteToS3
        assert params is not None
        key = f"{params.S3Prefix or ''}{self.envelope.message_id}"
        self.service.objects.put(params.S3Bucket, key, self._message(context))
        self.written.objects.setdefault((params.S3Bucket, key), []).extend(context.recipients)
        return f"s3://{params.S3Bucket}/{key}"

    def _Archive(self, action: RuleAction, context: ActionContext) -> str:  # noqa: N802
        params = action.Archive
        assert params is not None
        archive = self.service.config.archive_id(params.TargetArchive)
        key = f"{archive}/{self.envelope.message_id}.eml"
        self.service.objects.put(ARCHIVE_BUCKET, key, self._message(context))
        return f"archived in {archive}"

    # --------------------------------------------------------------------------- delivery

    def _Relay(self, action: RuleAction, context: ActionContext) -> str:  # noqa: N802
        params = action.Relay
        assert params is not None
        relay_id, relay = self.service.config.relay(params.Relay)
        transport = self.service.targets.relays.get(relay_id)
        if transport is None:
            raise PermanentError(
                f"relay {relay_id} points at {relay.ServerName}:{relay.ServerPort}, which is not "
                "on this machine: map it to a mailbox host under `relays:` in the local "
                "configuration"
            )
        sender = self.envelope.mail_from
        if params.MailFrom == "REPLACE":
            sender = self.service.targets.replace_mail_from
        results = transport.send(sender, context.recipients, self._message(context))
        _failed(results, f"relay {relay_id}")
        return f"relayed via {relay_id} (MAIL FROM <{sender}>)"

    def _Send(self, action: RuleAction, context: ActionContext) -> str:  # noqa: N802
        outbound = self.service.targets.outbound
        if outbound is None:
            raise PermanentError(
                "Send: no outbound mailbox host is configured (`outbound:` in the local "
                "configuration); nothing was sent"
            )
        results = outbound.send(self.envelope.mail_from, context.recipients, self._message(context))
        _failed(results, "Send")
        return "sent to the outbound mailbox host"

    def _DeliverToMailbox(self, action: RuleAction, context: ActionContext) -> str:  # noqa: N802
        params = action.DeliverToMailbox
        assert params is not None
        organization = safe_name(params.MailboxArn.rsplit("/", 1)[-1].rsplit(":", 1)[-1])
        maildir = MaildirHandler(self.service.targets.home / "workmail", organization)
        message = self._message(context)
        for recipient in context.recipients:
            trace = f"Return-Path: <{self.envelope.mail_from}>\r\nDelivered-To: {recipient}\r\n"
            maildir.store(recipient, trace.encode() + message)
        return f"delivered to workmail/{organization}/"

    def _DeliverToQBusiness(self, action: RuleAction, context: ActionContext) -> str:  # noqa: N802
        params = action.DeliverToQBusiness
        assert params is not None
        raise PermanentError(
            "DeliverToQBusiness: Amazon Q Business is not available on this machine; nothing was "
            f"indexed (application {params.ApplicationId}, index {params.IndexId})"
        )

    # --------------------------------------------------------------------------- notifications

    def _Bounce(self, action: RuleAction, context: ActionContext) -> str:  # noqa: N802
        params = action.Bounce
        assert params is not None
        if not self.envelope.mail_from:
            return "no DSN: the envelope sender is null (RFC 5321 6.2)"
        outbound = self.service.targets.outbound
        if outbound is None:
            raise PermanentError(
                "Bounce: no outbound mailbox host is configured (`outbound:` in the local "
                "configuration); no DSN was sent"
            )
        report = BounceReport(
            reporting_mta=self.service.targets.hostname,
            sender=params.Sender,
            envelope_sender=self.envelope.mail_from,
            recipients=context.recipients,
            status=params.StatusCode,
            smtp_reply_code=params.SmtpReplyCode,
            diagnostic=params.DiagnosticMessage,
            explanation=params.Message,
            arrival_date=self.received_at,
            original_subject=self.facts.subject,
        )
        dsn = delivery_status_notification(report, self.raw, self.service.clock.now())
        results = outbound.send("", [self.envelope.mail_from], dsn)  # a DSN has a null sender
        _failed(results, "Bounce")
        return f"DSN sent to {self.envelope.mail_from}"

    @property
    def received_at(self) -> datetime:
        try:
            return datetime.fromisoformat(self.envelope.received_at)
        except ValueError:
            return self.service.clock.now()

    def _mail(self, header_limit: int) -> dict[str, Any]:
        return mail_object(
            message_id=self.envelope.message_id,
            envelope_sender=self.envelope.mail_from,
            destination=self.envelope.recipients,
            received_at=self.received_at,
            raw=self.raw,
            header_limit=header_limit,
        )

    def _receipt(self, context: ActionContext, action: dict[str, Any]) -> dict[str, Any]:
        return receipt_object(
            recipients=context.recipients,
            facts=self.facts,
            received_at=self.received_at,
            now=self.service.clock.now(),
            action=action,
        )

    def _PublishToSns(self, action: RuleAction, context: ActionContext) -> str:  # noqa: N802
        params = action.PublishToSns
        assert params is not None
        encoding = params.Encoding or "UTF-8"
        payload = params.PayloadType or "CONTENT"
        limit = SNS_CONTENT_HEADER_LIMIT if payload == "CONTENT" else SNS_HEADERS_LIMIT
        notification: dict[str, Any] = {
            "notificationType": "Received",
            "mail": self._mail(limit),
            "receipt": self._receipt(
                context, {"type": "SNS", "topicArn": params.TopicArn, "encoding": encoding}
            ),
        }
        if payload == "CONTENT":
            notification["content"] = sns_content(self._message(context), encoding)
        message = json.dumps(notification, ensure_ascii=False)
        if len(message.encode()) > SNS_MESSAGE_LIMIT:
            raise PermanentError(
                f"PublishToSns: the notification is {len(message.encode())} bytes, over SNS's "
                f"{SNS_MESSAGE_LIMIT} byte limit (PayloadType HEADERS sends the headers only)"
            )
        topic = params.TopicArn.rsplit(":", 1)[-1]
        record = {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": params.TopicArn,
            "Subject": "Amazon SES Email Receipt Notification",
            "Message": message,
            "Timestamp": ses_timestamp(self.service.clock.now()),
        }
        path = self.service.targets.home / "sns" / f"{safe_name(topic)}.jsonl"
        _append_line(path, json.dumps(record, ensure_ascii=False))
        return f"published to sns/{path.name} ({payload}, {encoding})"

    def _InvokeLambda(self, action: RuleAction, context: ActionContext) -> str:  # noqa: N802
        params = action.InvokeLambda
        assert params is not None
        invocation = "Event" if params.InvocationType == "EVENT" else "RequestResponse"
        event = lambda_event(
            self._mail(LAMBDA_HEADER_LIMIT),
            self._receipt(
                context,
                {
                    "type": "Lambda",
                    "functionArn": params.FunctionArn,
                    "invocationType": invocation,
                },
            ),
        )
        lambdas = self.service.lambdas
        lambdas.handler(params.FunctionArn)  # a function that cannot be loaded fails the action
        try:
            result = lambdas.invoke(params.FunctionArn, event)
        except Exception as error:  # whatever the function raises
            reason = f"{type(error).__name__}: {error}"
            if params.InvocationType == "EVENT":
                # Lambda accepted the event; a handler error is the function's own (as on AWS).
                log.warning("lambda handler failed", extra={"function": params.FunctionArn})
                return f"invoked (EVENT); the handler raised {reason}"
            raise PermanentError(f"InvokeLambda: the handler raised {reason}") from error
        shown = json.dumps(result, default=str)[:200] if result is not None else "null"
        return f"invoked ({params.InvocationType}), returned {shown}"


def _append_line(path: Path, line: str) -> None:
    """One write() of one line in append mode: readers never see half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LocalMailManager:
    def __init__(
        self,
        *,
        config: MailManagerConfig,
        rule_sets: Mapping[str, RuleSet],  # by ingress point logical id
        book: AddressBook,
        objects: ObjectStore,
        timeline: Timeline,
        logs: VendedLogs,
        clock: Clock,
        targets: LocalTargets,
        start_workflow: Callable[[str, str], None],
        authenticator: Authenticator | None = None,
    ) -> None:
        self.config = config
        self.rule_sets = rule_sets
        self.book = book
        self.objects = objects
        self.timeline = timeline
        self.logs = logs
        self.clock = clock
        self.targets = targets
        self.start_workflow = start_workflow
        self.lambdas = LocalLambdas(config)
        self.authenticator = authenticator  # SPF, DKIM, DMARC verdicts for the rule set

    def rule_set_for(self, envelope: Envelope) -> tuple[str, RuleSet]:
        """The rule set of the ingress point that accepted the message (spool files written
        before ingress points were recorded belong to the first one)."""
        ingress = envelope.ingress_point or next(iter(self.rule_sets))
        if ingress not in self.rule_sets:
            raise PermanentError(f"message came through unknown ingress point {ingress!r}")
        return ingress, self.rule_sets[ingress]

    def process(self, envelope: Envelope, raw: bytes) -> RuleSetOutcome:
        """Run the rule set for one accepted message and perform its actions."""
        ingress, rule_set = self.rule_set_for(envelope)
        authentication = None
        if self.authenticator is not None:  # Mail Manager judges the sender before the rules
            authentication = self.authenticator.authenticate(
                io.BytesIO(raw),
                client_ip=envelope.source_ip,
                mail_from=envelope.mail_from,
                helo=envelope.helo,
            )
            log.info(
                "authenticated",
                extra={"message_id": envelope.message_id, "verdicts": authentication.summary()},
            )
        facts = message_facts(envelope, raw, authentication)
        executor = LocalActionExecutor(self, envelope, raw, facts)
        outcome = run_rule_set(rule_set, facts, envelope.recipients, self.book, executor)
        now = self.clock.now()
        for record in outcome.records:
            self.logs.write(
                RULE_SET,
                {
                    "timestamp": now.isoformat(),
                    "message_id": envelope.message_id,
                    "ingress_point_id": ingress,
                    "rule_set_id": self._rule_set_id(ingress),
                    **record.as_log(),
                },
            )
        self.timeline.record_many(
            [
                TimelineEvent(
                    message_id=envelope.message_id,
                    at=now,
                    stage=Stage.RULES,
                    recipient=trail.recipient,
                    detail=f"rules {trail.matched_rules or 'none'} -> actions {trail.actions or 'none'}"
                    + (
                        f" -> replaced with {[t.recipient for t in trail.replaced_with]}"
                        if trail.replaced_with is not None
                        else ""
                    ),
                )
                for trail in outcome.all_trails()
            ]
        )
        self._settle_all(envelope, outcome, executor.written)
        for (bucket, key), recipients in executor.written.objects.items():
            store_envelope(
                self.objects,
                bucket,
                envelope.model_copy(update={"recipients": list(dict.fromkeys(recipients))}),
                key,
            )
            self.timeline.record(
                TimelineEvent(
                    message_id=envelope.message_id,
                    at=self.clock.now(),
                    stage=Stage.STORED,
                    detail=f"s3://{bucket}/{key}",
                )
            )
            self.start_workflow(bucket, key)
        return outcome

    def _rule_set_id(self, ingress: str) -> str:
        point = self.config.ingress_points.get(ingress)
        return logical_id_of(point.RuleSetId) if point is not None else ""

    def _settle_all(self, envelope: Envelope, outcome: RuleSetOutcome, written: _Written) -> None:
        """Every recipient ends in exactly one terminal state. What a WriteToS3 stored goes on
        to the workflow, which decides (even if a later rule dropped the recipient: the object
        is written, as on AWS); otherwise the first terminal action that succeeded decides,
        then a Drop; a recipient no action took anywhere is dropped."""
        handed_on = {r for recipients in written.objects.values() for r in recipients}
        succeeded: dict[str, list[str]] = {}
        for record in outcome.records:
            if record.action_status == "SUCCESS":
                for address in record.recipients_matched:
                    succeeded.setdefault(address, []).append(record.action_name)
        for trail in outcome.all_trails():
            address = trail.recipient
            if trail.replaced_with is not None:
                new = [t.recipient for t in trail.replaced_with]
                if address not in new:
                    self._settle(
                        envelope,
                        address,
                        Outcome.DROPPED,
                        f"replaced with {new} by rule {trail.replaced_by} (ReplaceRecipient); "
                        "their outcomes are recorded under their own addresses",
                    )
                continue
            if address in handed_on:
                continue  # the workflow decides
            done = [a for a in succeeded.get(address, []) if a in _TERMINAL_BY_ACTION]
            if done:
                self._settle(
                    envelope, address, _TERMINAL_BY_ACTION[done[0]], f"rule action {done[0]}"
                )
            elif trail.dropped_by is not None:
                self._settle(envelope, address, Outcome.DROPPED, trail.dropped_by)
            else:
                actions = ", ".join(trail.actions) or "none"
                self._settle(
                    envelope, address, Outcome.DROPPED, f"no rule delivered it (actions: {actions})"
                )

    def _settle(self, envelope: Envelope, recipient: str, outcome: Outcome, detail: str) -> None:
        self.timeline.settle(
            RecipientState(
                message_id=envelope.message_id,
                recipient=recipient,
                outcome=outcome,
                at=self.clock.now(),
                route="rules",
                detail=detail,
            )
        )
