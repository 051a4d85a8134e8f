"""The local Mail Manager: the template's rule set applied to each accepted message, with
every action performed on this machine (MAIL_MANAGER.md describes what each one does; the
README says how each behaves here).

An action that fails for now (a 4xx reply, a local file or socket problem) leaves its
recipient open when nothing else took it: the message is run through the rule set again for
those recipients later, on the workflow's deferral schedule, until the delivery policy's
lifetime runs out. A permanent failure, or a retry past its lifetime, dead-letters the
recipient with a copy of the message kept for `mxgate dlq redrive`. Actions that leave the
machine run once per message, rule, action and recipient (idempotency keys), so a retry or
a replay after a crash never relays, sends, bounces or publishes twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import ipaddress
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from mxgate.adapters.local.archive import ARCHIVE_BUCKET, SqliteArchive
from mxgate.adapters.local.files import safe_name
from mxgate.archive.entry import archived_message
from mxgate.authn.check import Authenticator
from mxgate.errors import FailureKind, PermanentError, TransientError, kind_of
from mxgate.local.facts import message_facts
from mxgate.local.lambdas import Lambdas, LocalLambdas, starts_pipeline
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
from mxgate.message.parse import header_values, parse_header_section
from mxgate.ports import (
    Clock,
    DeadLetters,
    Deferrals,
    Idempotency,
    ObjectStore,
    SendResult,
    Timeline,
    Transport,
)
from mxgate.routing.config import DeliveryPolicy
from mxgate.timeline import Outcome, RecipientState, Stage, TimelineEvent
from mxgate.workflow.delivery import backoff
from mxgate.workflow.envelope import store_envelope, variant_key
from mxgate.workflow.model import Envelope

log = logging.getLogger("mxgate.mailmanager")

KEPT_BUCKET = "mxgate-dead-letters"  # messages kept for dead-lettered recipients: `rules/<id>`
DEAD_LETTER_KIND = "rules"  # `kind` of the dead letters the rule set writes
RETRY_KIND = "rule-set-retry"  # `kind` of its records in the deferred queue

# Actions whose effect leaves this machine: each runs once per message, rule, action and
# recipient. WriteToS3 and Archive rewrite the same object with the same bytes instead.
_ONCE = frozenset({"Relay", "Send", "Bounce", "PublishToSns", "InvokeLambda", "DeliverToMailbox"})

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
    """Objects WriteToS3 stored; their workflows start once the whole rule set has run. And
    the recipients whose envelope InvokeLambda handed to the pipeline's Start function: that
    hands them on with the object, it does not end them."""

    objects: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    enveloped: list[str] = field(default_factory=list)

    def hand_on_envelopes(self, succeeded: dict[str, list[str]]) -> None:
        """Take the InvokeLambda that handed a recipient's envelope on out of the actions that
        may end it: the workflow decides, with the stored object."""
        for address in self.enveloped:
            succeeded[address].remove("InvokeLambda")


def _failed(results: Mapping[str, SendResult], what: str) -> None:
    """Raise for the recipients a transport did not take: 4xx replies and broken connections
    are transient, 5xx permanent."""
    failed = {r: res for r, res in results.items() if not res.ok}
    if not failed:
        return
    transient = [r for r, res in failed.items() if res.transient]
    if len(failed) == len(results) and len(transient) in (0, len(failed)):
        error = TransientError if transient else PermanentError
        raise error(f"{what}: " + "; ".join(f"{r}: {res.detail}" for r, res in failed.items()))
    raise PartialFailureError({r: f"{what}: {res.detail}" for r, res in failed.items()}, transient)


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
        once = action.kind in _ONCE
        done: list[str] = []
        if once:  # a retry or a replay: what was done already is not done again
            done = [r for r in context.recipients if self._seen(action, context, r)]
            if done and len(done) == len(context.recipients):
                return f"already done for {len(done)} recipient(s); not repeated"
            todo = tuple(r for r in context.recipients if r not in done)
            context = dataclasses.replace(context, recipients=todo)
        handler = getattr(self, f"_{action.kind}")
        try:
            detail: str = handler(action, context)
        except PartialFailureError as partial:
            if once:
                self._remember(action, context, set(context.recipients) - set(partial.failed))
            raise
        except OSError as error:  # a local file or socket problem: it may pass
            raise TransientError(f"{action.kind}: {type(error).__name__}: {error}") from error
        if once:
            self._remember(action, context, context.recipients)
        return detail + (f" (already done for {len(done)} recipient(s))" if done else "")

    def _key(self, action: RuleAction, context: ActionContext, recipient: str) -> str:
        return (
            f"rule-action:{self.envelope.message_id}:{context.rule_index}.{context.rule_name}:"
            f"{context.action_index}.{action.kind}:{recipient.casefold()}"
        )

    def _seen(self, action: RuleAction, context: ActionContext, recipient: str) -> bool:
        return self.service.idempotency.seen(self._key(action, context, recipient)) is not None

    def _remember(
        self, action: RuleAction, context: ActionContext, recipients: Iterable[str]
    ) -> None:
        for recipient in recipients:
            self.service.idempotency.remember(self._key(action, context, recipient), "done")

    # --------------------------------------------------------------------------- storage

    def _WriteToS3(self, action: RuleAction, context: ActionContext) -> str:  # noqa: N802
        params = action.WriteToS3
        assert params is not None
        key = variant_key(f"{params.S3Prefix or ''}{self.envelope.message_id}", context.variant)
        self.service.objects.put(params.S3Bucket, key, self._message(context))
        self.written.objects.setdefault((params.S3Bucket, key), []).extend(context.recipients)
        return f"s3://{params.S3Bucket}/{key}"

    def _Archive(self, action: RuleAction, context: ActionContext) -> str:  # noqa: N802
        params = action.Archive
        assert params is not None
        archive = self.service.config.archive_id(params.TargetArchive)
        key = f"{variant_key(f'{archive}/{self.envelope.message_id}', context.variant)}.eml"
        message = self._message(context)
        self.service.objects.put(ARCHIVE_BUCKET, key, message)
        if self.service.archive is not None:
            self.service.archive.add(
                archived_message(
                    archive_id=archive,
                    archived_message_id=key.rsplit("/", 1)[-1].removesuffix(".eml"),
                    key=key,
                    raw=message,
                    envelope=self.envelope,
                    recipients=list(context.recipients),
                    archived_at=self.service.clock.now(),
                )
            )
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
        failed: dict[str, str] = {}
        for recipient in context.recipients:  # one by one: a retry repeats only the failed
            trace = f"Return-Path: <{self.envelope.mail_from}>\r\nDelivered-To: {recipient}\r\n"
            try:
                maildir.store(recipient, trace.encode() + message)
            except OSError as error:
                failed[recipient] = f"{type(error).__name__}: {error}"
        if failed:
            raise PartialFailureError(failed, transient=failed)
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
        source, _ = lambdas.handler(params.FunctionArn)  # one that cannot be loaded fails it
        try:
            result = lambdas.invoke(params.FunctionArn, event)
        except Exception as error:  # whatever the function raises
            reason = f"{type(error).__name__}: {error}"
            if params.InvocationType == "EVENT":
                # Lambda accepted the event; a handler error is the function's own (as on AWS).
                log.warning("lambda handler failed", extra={"function": params.FunctionArn})
                return f"invoked (EVENT); the handler raised {reason}"
            failure = TransientError if kind_of(error) is FailureKind.TRANSIENT else PermanentError
            raise failure(f"InvokeLambda: the handler raised {reason}") from error
        if starts_pipeline(source):
            self.written.enveloped.extend(context.recipients)
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


class RuleSetRetry(BaseModel):
    """A deferred-queue record: run the rule set again for some recipients of a message.

    The message is the kept spool file (automatic retries), or the copy a dead letter kept in
    the object store (a redrive). The lifetime counts from the first failure."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["rule-set-retry"] = "rule-set-retry"
    record_id: str
    due_at: str
    envelope: Envelope  # its recipients: the accepted addresses to run through the rule set
    recipients: list[str]  # the addresses still open (a ReplaceRecipient's new ones included)
    spool_file: str = ""  # name in the spool directory
    bucket: str = ""
    key: str = ""
    first_failed_at: str = ""  # empty: a redrive, whose lifetime starts at its first failure
    attempts: int = 0
    last_error: str = ""

    @model_validator(mode="after")
    def _one_source(self) -> RuleSetRetry:
        if bool(self.spool_file) == bool(self.bucket and self.key):
            raise ValueError("a rule set retry names either a spool file or a stored object")
        return self

    @staticmethod
    def describes(document: Mapping[str, object]) -> bool:
        return document.get("kind") == RETRY_KIND


def retry_record_id(message_id: str) -> str:
    """The id of a message's automatic rule set retry (there is at most one: it owns the kept
    spool file)."""
    return f"{message_id}#rules"


def dead_letter_id(message_id: str, recipients: Sequence[str]) -> str:
    digest = hashlib.sha256(",".join(sorted(r.casefold() for r in recipients)).encode())
    return f"{message_id}.rule-set.{digest.hexdigest()[:8]}"


@dataclass
class OpenRecipient:
    """A recipient the rule set could not finish with: an action failed and none took it."""

    accepted: list[str]  # the envelope recipient(s) it comes from, to run the rule set again
    reasons: list[str]
    transient: bool  # some failure may pass: worth another try


@dataclass(frozen=True)
class RuleSetRun:
    outcome: RuleSetOutcome
    pending: dict[str, OpenRecipient]  # failed for now, not settled: the caller retries them


class LocalMailManager:
    def __init__(
        self,
        *,
        config: MailManagerConfig,
        rule_sets: Mapping[str, RuleSet],  # by ingress point logical id
        book: AddressBook,
        objects: ObjectStore,
        timeline: Timeline,
        idempotency: Idempotency,
        dead_letters: DeadLetters,
        deferrals: Deferrals,
        retry_policy: DeliveryPolicy,  # backoff and lifetime of rule set retries
        logs: VendedLogs,
        clock: Clock,
        targets: LocalTargets,
        start_workflow: Callable[[str, str], None],
        authenticator: Authenticator | None = None,
        archive: SqliteArchive | None = None,  # indexes what the Archive action stores
        lambdas: Lambdas | None = None,
    ) -> None:
        self.config = config
        self.rule_sets = rule_sets
        self.book = book
        self.objects = objects
        self.timeline = timeline
        self.idempotency = idempotency
        self.dead_letters = dead_letters
        self.deferrals = deferrals
        self.retry_policy = retry_policy
        self.logs = logs
        self.clock = clock
        self.targets = targets
        self.start_workflow = start_workflow
        self.lambdas = lambdas or LocalLambdas(config)
        self.authenticator = authenticator  # SPF, DKIM, DMARC verdicts for the rule set
        self.archive = archive

    def rule_set_for(self, envelope: Envelope) -> tuple[str, RuleSet]:
        """The rule set of the ingress point that accepted the message (spool files written
        before ingress points were recorded belong to the first one)."""
        ingress = envelope.ingress_point or next(iter(self.rule_sets))
        if ingress not in self.rule_sets:
            raise PermanentError(f"message came through unknown ingress point {ingress!r}")
        return ingress, self.rule_sets[ingress]

    # --------------------------------------------------------------------------- one run

    def take(
        self,
        envelope: Envelope,
        raw: bytes,
        *,
        spool_file: str = "",
        retry: RuleSetRetry | None = None,
    ) -> RuleSetRetry | None:
        """Run the rule set for the envelope's recipients (the spooled message's first run, or
        a retry) and decide what is left open: the retry now scheduled for it, or None when
        every recipient has its end (settled, dead-lettered, or with the workflow)."""
        again = ""
        if retry is not None:
            again = f"retry {retry.attempts}" if retry.first_failed_at else "redrive"
        with self._one_run_at_a_time(envelope.message_id):
            run = self.process(envelope, raw, again=again)
            if not run.pending:
                return None
            return self._retry_later(envelope, raw, run.pending, spool_file, retry)

    @contextlib.contextmanager
    def _one_run_at_a_time(self, message_id: str) -> Iterator[None]:
        """Runs of one message never overlap (a redrive and a retry of the same message would
        write the same objects): an flock on one of 64 lock files, picked by the message id."""
        directory = self.targets.home / "locks"
        directory.mkdir(parents=True, exist_ok=True)
        slot = int(hashlib.sha256(message_id.encode()).hexdigest()[:4], 16) % 64
        with (directory / f"rule-set-{slot:02d}.lock").open("ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
            yield

    def process(self, envelope: Envelope, raw: bytes, *, again: str = "") -> RuleSetRun:
        """Run the rule set for one accepted message and perform its actions. Every recipient
        is settled, dead-lettered, handed to the workflow, or left in `pending`. `again` names
        a later run ("retry 2", "redrive")."""
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
        # Later runs are `retry` events, so each recipient has one `rules` event.
        prefix = f"rule set {again}: " if again else ""
        self.timeline.record_many(
            [
                TimelineEvent(
                    message_id=envelope.message_id,
                    at=now,
                    stage=Stage.RETRY if again else Stage.RULES,
                    recipient=trail.recipient,
                    detail=f"{prefix}rules {trail.matched_rules or 'none'} -> actions "
                    f"{trail.actions or 'none'}"
                    + (
                        f" -> replaced with {[t.recipient for t in trail.replaced_with]}"
                        if trail.replaced_with is not None
                        else ""
                    )
                    + "".join(
                        f"; {r.action_name} failed: {r.failure_for(trail.recipient)}"
                        for r in outcome.records
                        if r.action_status == "FAILURE" and trail.recipient in r.recipients_matched
                    )[:1000],
                )
                for trail in outcome.all_trails()
            ]
        )
        pending = self._settle_all(envelope, raw, ingress, outcome, executor.written)
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
        return RuleSetRun(outcome, pending)

    def _rule_set_id(self, ingress: str) -> str:
        point = self.config.ingress_points.get(ingress)
        return logical_id_of(point.RuleSetId) if point is not None else ""

    def _settle_all(
        self,
        envelope: Envelope,
        raw: bytes,
        ingress: str,
        outcome: RuleSetOutcome,
        written: _Written,
    ) -> dict[str, OpenRecipient]:
        """Every recipient ends in exactly one terminal state. What a WriteToS3 stored goes on
        to the workflow, which decides (even if a later rule dropped the recipient: the object
        is written, as on AWS); otherwise the first terminal action that succeeded decides,
        then a Drop (or a failure under ActionFailurePolicy DROP). A recipient for whom an
        action failed and nothing else took it is never dropped: a permanent failure
        dead-letters it, a transient one is returned, open, for a retry. Only a recipient no
        action took, and none failed for, is dropped."""
        handed_on = {r for recipients in written.objects.values() for r in recipients}
        succeeded: dict[str, list[str]] = {}
        failed: dict[str, list[str]] = {}
        transient: set[str] = set()
        for record in outcome.records:
            if record.action_status == "SUCCESS":
                for address in record.recipients_matched:
                    succeeded.setdefault(address, []).append(record.action_name)
            else:
                for address in record.recipients_matched:
                    failed.setdefault(address, []).append(
                        f"rule {record.rule_name}: {record.action_name}: "
                        + record.failure_for(address)
                    )
                transient.update(record.transient)
        written.hand_on_envelopes(succeeded)
        open_: dict[str, OpenRecipient] = {}
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
            elif address in failed:
                entry = open_.setdefault(
                    address, OpenRecipient([], list(dict.fromkeys(failed[address])), False)
                )
                entry.accepted.append(trail.accepted)
                entry.transient = address in transient
            else:
                actions = ", ".join(trail.actions) or "none"
                self._settle(
                    envelope, address, Outcome.DROPPED, f"no rule delivered it (actions: {actions})"
                )
        if open_:  # one that another run settled meanwhile stays as it is
            settled = {s.recipient.casefold() for s in self.timeline.states(envelope.message_id)}
            open_ = {a: o for a, o in open_.items() if a.casefold() not in settled}
        permanent = {a: o for a, o in open_.items() if not o.transient}
        if permanent:
            self.dead_letter(envelope, raw, ingress, permanent, error="PermanentError")
        return {a: o for a, o in open_.items() if o.transient}

    def _settle(self, envelope: Envelope, recipient: str, outcome: Outcome, detail: str) -> None:
        self.timeline.settle(
            RecipientState(
                message_id=envelope.message_id,
                recipient=recipient,
                outcome=outcome,
                at=self.clock.now(),
                route="rules",
                detail=detail[:500],
            )
        )

    # --------------------------------------------------------------------------- retries

    def _retry_later(
        self,
        envelope: Envelope,
        raw: bytes,
        pending: dict[str, OpenRecipient],
        spool_file: str,
        retry: RuleSetRetry | None,
    ) -> RuleSetRetry | None:
        """Schedule the next run for the open recipients on the deferral schedule (backoff_min
        doubling up to backoff_max), or dead-letter them once the lifetime has run out."""
        policy = self.retry_policy
        now = self.clock.now()
        first = (
            datetime.fromisoformat(retry.first_failed_at)
            if retry is not None and retry.first_failed_at
            else now
        )
        attempts = (retry.attempts if retry is not None else 0) + 1
        give_up = first + timedelta(seconds=policy.queue_lifetime)
        reason = _reason(pending)
        ingress, _ = self.rule_set_for(envelope)
        if now >= give_up:
            hours = (now - first).total_seconds() / 3600
            self.dead_letter(
                envelope,
                raw,
                ingress,
                pending,
                error="Expired",
                why=f"gave up after {attempts - 1} rule set retries in {hours:.1f}h",
            )
            return None
        record_id = retry.record_id if retry is not None else retry_record_id(envelope.message_id)
        due = min(now + timedelta(seconds=backoff(policy, attempts, record_id)), give_up)
        accepted = list(dict.fromkeys(a for o in pending.values() for a in o.accepted))
        source: dict[str, str] = (
            {"spool_file": retry.spool_file, "bucket": retry.bucket, "key": retry.key}
            if retry is not None
            else {"spool_file": spool_file}
        )
        again = RuleSetRetry(
            record_id=record_id,
            due_at=due.isoformat(),
            envelope=envelope.model_copy(update={"recipients": accepted}),
            recipients=list(pending),
            first_failed_at=first.isoformat(),
            attempts=attempts,
            last_error=reason[:500],
            **source,
        )
        self.deferrals.schedule(record_id, due, again.model_dump(mode="json"))
        detail = (
            f"rule set: {reason}; retry {attempts}, next attempt "
            f"{due.isoformat(timespec='seconds')}, gives up {give_up.isoformat(timespec='seconds')}"
        )
        self.timeline.record_many(
            [
                TimelineEvent(
                    message_id=envelope.message_id,
                    at=now,
                    stage=Stage.DEFERRED,
                    recipient=address,
                    detail=detail[:1000],
                )
                for address in pending
            ]
        )
        return again

    def dead_letter(
        self,
        envelope: Envelope,
        raw: bytes,
        ingress: str,
        failures: Mapping[str, OpenRecipient],
        *,
        error: str,
        why: str = "",
    ) -> str:
        """Keep the message as received in the object store (a redrive runs the rule set again
        from it), record the dead letter, then settle its recipients `dead_lettered`."""
        message_id = envelope.message_id
        recipients = list(failures)
        key = f"rules/{message_id}"
        self.objects.put(KEPT_BUCKET, key, raw)
        record_id = dead_letter_id(message_id, recipients)
        reason = _reason(failures)
        if why:
            reason = f"{why}; last error: {reason}"
        accepted = list(dict.fromkeys(a for o in failures.values() for a in o.accepted))
        self.dead_letters.put(
            record_id,
            {
                "kind": DEAD_LETTER_KIND,
                "destination": self._rule_set_id(ingress) or "rule set",
                "message_id": message_id,
                "recipients": recipients,
                "envelope": envelope.model_copy(update={"recipients": accepted}).model_dump(
                    mode="json"
                ),
                "message": {
                    "bucket": KEPT_BUCKET,
                    "key": key,
                    "subject": _subject(raw)[:200],
                    "envelope_sender": envelope.mail_from,
                },
                "failures": {a: o.reasons for a, o in failures.items()},
                "error": error,
                "reason": reason[:1000],
                "at": self.clock.now().isoformat(),
            },
        )
        for address in recipients:
            self._settle(
                envelope, address, Outcome.DEAD_LETTERED, f"dead letter {record_id}: {reason}"
            )
        return record_id


def _reason(failures: Mapping[str, OpenRecipient]) -> str:
    return "; ".join(dict.fromkeys(r for o in failures.values() for r in o.reasons))


def _subject(raw: bytes) -> str:
    return next(iter(header_values(parse_header_section(raw), "subject")), "")


def redrive_rule_set(
    record_id: str,
    record: Mapping[str, Any],
    *,
    dead_letters: DeadLetters,
    deferrals: Deferrals,
    timeline: Timeline,
    clock: Clock,
) -> RuleSetRetry:
    """Put a rule set dead letter back in the deferred queue, due now, with a fresh lifetime:
    its recipients are reopened and the running gateway takes the kept copy through the rule
    set again for them. Actions already done for a recipient are not repeated."""
    envelope = Envelope.model_validate(record["envelope"])
    recipients = [str(r) for r in record.get("recipients") or []]
    message = record.get("message") or {}
    states = {s.recipient.casefold(): s for s in timeline.states(envelope.message_id)}
    for recipient in recipients:
        state = states.get(recipient.casefold())
        if state is not None and state.outcome is Outcome.DEAD_LETTERED:
            timeline.reopen(envelope.message_id, recipient)
    now = clock.now()
    queued = RuleSetRetry(
        record_id=f"{envelope.message_id}#rules-redrive-{now.strftime('%Y%m%dT%H%M%S%f')}",
        due_at=now.isoformat(),
        envelope=envelope,
        recipients=recipients,
        bucket=str(message.get("bucket", "")),
        key=str(message.get("key", "")),
    )
    deferrals.schedule(queued.record_id, now, queued.model_dump(mode="json"))
    timeline.record(
        TimelineEvent(
            message_id=envelope.message_id,
            at=now,
            stage=Stage.REDRIVEN,
            detail=f"dead letter {record_id} redriven: {len(recipients)} recipient(s) queued "
            "for the rule set",
        )
    )
    dead_letters.remove(record_id)
    return queued
