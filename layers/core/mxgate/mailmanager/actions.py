"""Mail Manager's rule actions, performed for one message through ports (MAIL_MANAGER.md says
what each one does): the object store for WriteToS3 and Archive, transports for Relay, Send
and Bounce, and the Functions, Topics and Mailboxes ports for InvokeLambda, PublishToSns and
DeliverToMailbox. The local runtime supplies files, SMTP on loopback and in-process handlers;
another runtime can supply AWS-backed ports and run the same actions.

Actions whose effect leaves the gateway run once per message, rule, action and recipient
(idempotency keys), so a retry or a replay never relays, sends, bounces or publishes twice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from mxgate.archive.entry import archived_message
from mxgate.archive.index import ArchiveIndex
from mxgate.errors import FailureKind, MxgateError, PermanentError, TransientError, kind_of
from mxgate.mailmanager.facts import MessageFacts
from mxgate.mailmanager.models import RuleAction
from mxgate.mailmanager.notifications import (
    LAMBDA_HEADER_LIMIT,
    SNS_CONTENT_HEADER_LIMIT,
    SNS_HEADERS_LIMIT,
    SNS_MESSAGE_LIMIT,
    lambda_event,
    mail_object,
    receipt_object,
    sns_content,
)
from mxgate.mailmanager.resources import MailManagerResources
from mxgate.mailmanager.rules import ActionContext, PartialFailureError
from mxgate.message.dsn import DsnReport, bounce_subject, delivery_status_notification
from mxgate.message.headers import prepend_headers
from mxgate.message.parse import ParseOnce
from mxgate.message.raw import RawMessage
from mxgate.ports import (
    Clock,
    FileLinks,
    Functions,
    Idempotency,
    Mailboxes,
    ObjectStore,
    SendResult,
    Topics,
    Transport,
)
from mxgate.records import Envelope, variant_key

log = logging.getLogger("mxgate.mailmanager")

ARCHIVE_BUCKET = "mxgate-archive"
RESULT_SHOWN = 200  # characters of a function's result in an action's log detail

# Actions whose effect leaves the gateway: each runs once per message, rule, action and
# recipient. WriteToS3 and Archive rewrite the same object with the same bytes instead.
_ONCE = frozenset({"Relay", "Send", "Bounce", "PublishToSns", "InvokeLambda", "DeliverToMailbox"})


@dataclass(frozen=True)
class ActionPorts:
    """Where the actions' effects go."""

    objects: ObjectStore  # WriteToS3, Archive
    idempotency: Idempotency
    clock: Clock
    relays: Mapping[str, Transport]  # by relay logical id
    outbound: Transport | None  # the internet: Send and Bounce
    functions: Functions
    topics: Topics
    mailboxes: Mailboxes
    hostname: str  # names the gateway in DSNs
    replace_mail_from: str  # envelope sender of Relay with MailFrom REPLACE
    archive_index: ArchiveIndex | None = None  # what the Archive action stores, for search
    # the Archive index's parse of a message, kept for its Process step (the worker's)
    parses: ParseOnce = field(default_factory=ParseOnce)

    @cached_property
    def file_links(self) -> FileLinks | None:
        """The object store, when it can take a message's file as an object (the local one)."""
        return self.objects if isinstance(self.objects, FileLinks) else None


def raise_failures(results: Mapping[str, SendResult], what: str) -> None:
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


@dataclass
class Stored:
    """What WriteToS3 stored; the caller hands each object on once the whole rule set has run.
    And the recipients whose envelope InvokeLambda handed to the pipeline's Start function:
    that hands them on with the object, it does not end them."""

    objects: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    enveloped: list[str] = field(default_factory=list)

    def hand_on_envelopes(self, succeeded: dict[str, list[str]]) -> None:
        """Take the InvokeLambda that handed a recipient's envelope on out of the actions that
        may end it: the workflow decides, with the stored object. A recipient is `enveloped`
        only once its invocation is remembered, so each has that InvokeLambda's SUCCESS."""
        for address in self.enveloped:
            succeeded[address].remove("InvokeLambda")


class ActionRunner:
    """Performs the rule actions for one message (the rule set walk's ActionExecutor)."""

    def __init__(
        self,
        ports: ActionPorts,
        resources: MailManagerResources,
        envelope: Envelope,
        message: RawMessage,
        facts: MessageFacts,
        *,
        fresh: bool = False,
    ) -> None:
        self.ports = ports
        self.resources = resources
        self.envelope = envelope
        self.message = message
        self.facts = facts
        self.fresh = fresh  # the message's first run ever: no action of it was done before
        self.stored = Stored()
        self._handing_on: list[str] = []  # the envelopes an action hands on, once remembered
        self._stored: dict[tuple[str, str], bytes] = {}  # each object's header section

    def _message(self, context: ActionContext) -> RawMessage:
        # AddHeader fields are prepended newest first, as an MTA adds trace fields.
        header = prepend_headers(self.message.header, reversed(context.added_headers))
        return self.message.with_header(header)

    def execute(self, action: RuleAction, context: ActionContext) -> str:
        once = action.kind in _ONCE
        done: list[str] = []
        if once and not self.fresh:  # a retry or a replay: what was done is not done again
            done = [r for r in context.recipients if self._seen(action, context, r)]
            if done and len(done) == len(context.recipients):
                return f"already done for {len(done)} recipient(s); not repeated"
            if done:  # a first run (nearly every one) has the context it was given
                todo = tuple(r for r in context.recipients if r not in done)
                context = dataclasses.replace(context, recipients=todo)
        perform = getattr(self, f"_{action.kind}")
        self._handing_on = []
        try:
            detail: str = perform(action, context)
        except PartialFailureError as partial:
            if once:
                self._remember(action, context, set(context.recipients) - set(partial.failed))
            raise
        except OSError as error:  # a local file or socket problem: it may pass
            raise TransientError(f"{action.kind}: {type(error).__name__}: {error}") from error
        if once:
            try:
                self._remember(action, context, context.recipients)
            except MxgateError as error:  # the state database full: done, but not known done
                raise TransientError(
                    f"{action.kind}: done, but not remembered ({error}); a retry may repeat it"
                ) from error
        # An envelope handed on counts only with its action's SUCCESS: a FAILURE hands nothing on.
        self.stored.enveloped.extend(self._handing_on)
        return detail + (f" (already done for {len(done)} recipient(s))" if done else "")

    def _key(self, action: RuleAction, context: ActionContext, recipient: str) -> str:
        return (
            f"rule-action:{self.envelope.message_id}:{context.rule_index}.{context.rule_name}:"
            f"{context.action_index}.{action.kind}:{recipient.casefold()}"
        )

    def _seen(self, action: RuleAction, context: ActionContext, recipient: str) -> bool:
        return self.ports.idempotency.seen(self._key(action, context, recipient)) is not None

    def _remember(
        self, action: RuleAction, context: ActionContext, recipients: Iterable[str]
    ) -> None:
        for recipient in recipients:
            self.ports.idempotency.remember(self._key(action, context, recipient), "done")

    # --------------------------------------------------------------------------- storage

    def _WriteToS3(self, action: RuleAction, context: ActionContext) -> str:  # noqa: N802
        params = action.WriteToS3
        assert params is not None
        key = variant_key(f"{params.S3Prefix or ''}{self.envelope.message_id}", context.variant)
        self._store(params.S3Bucket, key, self._message(context))
        self.stored.objects.setdefault((params.S3Bucket, key), []).extend(context.recipients)
        return f"s3://{params.S3Bucket}/{key}"

    def _store(self, bucket: str, key: str, message: RawMessage) -> None:
        """The message as an object: its spool file itself when the message is unchanged and
        the store can take a file (a hard link on one machine: no byte written, no inode
        made), else copied from its file in chunks; the same bytes stored again in this run
        (Archive and WriteToS3 both take a message with the same header fields) are a copy of
        the first object, which the store makes itself (a hard link on one machine), so the
        bytes are written once. Each object is still deleted alone."""
        header = message.header  # the body is always the message's own
        if self._stored.get((bucket, key)) == header:
            return
        first = next((where for where, held in self._stored.items() if held == header), None)
        if first is not None:
            try:
                self.ports.objects.copy(*first, bucket, key)
            except PermanentError:  # the first one is gone since: write the bytes
                first = None
        if first is None and not self._link(bucket, key, message):
            with message.open() as stream:
                self.ports.objects.put(bucket, key, stream)
        self._stored[bucket, key] = header

    def _link(self, bucket: str, key: str, message: RawMessage) -> bool:
        """Whether the message's own file became the object (it has one only while unchanged;
        False on any failure of the link: the bytes are written instead)."""
        links = self.ports.file_links
        return (
            message.file is not None
            and links is not None
            and links.link_file(message.file, bucket, key)
        )

    def _Archive(self, action: RuleAction, context: ActionContext) -> str:  # noqa: N802
        params = action.Archive
        assert params is not None
        archive = self.resources.archive_id(params.TargetArchive)
        key = f"{variant_key(f'{archive}/{self.envelope.message_id}', context.variant)}.eml"
        message = self._message(context)
        self._store(ARCHIVE_BUCKET, key, message)
        if self.ports.archive_index is not None:
            self.ports.archive_index.add(
                archived_message(
                    archive_id=archive,
                    archived_message_id=key.rsplit("/", 1)[-1].removesuffix(".eml"),
                    key=key,
                    message=message,
                    envelope=self.envelope,
                    recipients=list(context.recipients),
                    archived_at=self.ports.clock.now(),
                    parses=self.ports.parses,
                )
            )
        return f"archived in {archive}"

    # --------------------------------------------------------------------------- delivery

    def _Relay(self, action: RuleAction, context: ActionContext) -> str:  # noqa: N802
        params = action.Relay
        assert params is not None
        relay_id, relay = self.resources.relay(params.Relay)
        transport = self.ports.relays.get(relay_id)
        if transport is None:
            raise PermanentError(
                f"relay {relay_id} points at {relay.ServerName}:{relay.ServerPort}, which is not "
                "on this machine: map it to a mailbox host under `relays:` in the local "
                "configuration"
            )
        sender = self.envelope.mail_from
        if params.MailFrom == "REPLACE":
            sender = self.ports.replace_mail_from
        results = transport.send(sender, context.recipients, self._message(context))
        raise_failures(results, f"relay {relay_id}")
        return f"relayed via {relay_id} (MAIL FROM <{sender}>)"

    def _Send(self, action: RuleAction, context: ActionContext) -> str:  # noqa: N802
        outbound = self.ports.outbound
        if outbound is None:
            raise PermanentError(
                "Send: no outbound mailbox host is configured (`outbound:` in the local "
                "configuration); nothing was sent"
            )
        results = outbound.send(self.envelope.mail_from, context.recipients, self._message(context))
        raise_failures(results, "Send")
        return "sent to the outbound mailbox host"

    def _DeliverToMailbox(self, action: RuleAction, context: ActionContext) -> str:  # noqa: N802
        params = action.DeliverToMailbox
        assert params is not None
        message = self._message(context)
        failed: dict[str, str] = {}
        where = ""
        for recipient in context.recipients:  # one by one: a retry repeats only the failed
            try:
                where = self.ports.mailboxes.deliver(
                    params.MailboxArn, self.envelope.mail_from, recipient, message
                )
            except (OSError, TransientError) as error:
                failed[recipient] = f"{type(error).__name__}: {error}"
        if failed:
            raise PartialFailureError(failed, transient=failed)
        return f"delivered to {where}"

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
        sender = self.envelope.mail_from
        if not sender:
            return "no DSN: the envelope sender is null (RFC 5321 6.2)"
        outbound = self.ports.outbound
        if outbound is None:
            raise PermanentError(
                "Bounce: no outbound mailbox host is configured (`outbound:` in the local "
                "configuration); no DSN was sent"
            )
        reply = f"{params.SmtpReplyCode} {params.StatusCode} {params.DiagnosticMessage}"
        listed = "\n".join(f"  {recipient}" for recipient in context.recipients)
        explanation = params.Message or (
            f"This is the mail gateway at {self.ports.hostname}.\n\n"
            f"Your message could not be delivered to:\n\n{listed}\n\nReason: {reply}\n"
        )
        report = DsnReport(
            reporting_mta=self.ports.hostname,
            sender=params.Sender,
            envelope_sender=sender,
            recipients=context.recipients,
            status=params.StatusCode,
            diagnostic=reply,
            explanation=explanation,
            subject=bounce_subject(self.facts.subject),
            last_attempt=self.ports.clock.now(),
            arrival_date=self.received_at,
        )
        dsn = delivery_status_notification(report, self.message.header)
        results = outbound.send("", [sender], RawMessage.of(dsn))  # a DSN has a null sender
        raise_failures(results, "Bounce")
        return f"DSN sent to {sender}"

    @property
    def received_at(self) -> datetime:
        return self.envelope.received_at or self.ports.clock.now()

    def _mail(self, header_limit: int) -> dict[str, Any]:
        return mail_object(
            message_id=self.envelope.message_id,
            envelope_sender=self.envelope.mail_from,
            destination=self.envelope.recipients,
            received_at=self.received_at,
            header=self.message.header,
            header_limit=header_limit,
        )

    def _receipt(self, context: ActionContext, action: dict[str, Any]) -> dict[str, Any]:
        return receipt_object(
            recipients=context.recipients,
            facts=self.facts,
            received_at=self.received_at,
            now=self.ports.clock.now(),
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
        size = 0
        if payload == "CONTENT":
            content = self._message(context)
            size = content.size  # never read whole what cannot be sent anyway
            if size <= SNS_MESSAGE_LIMIT:
                notification["content"] = sns_content(content.read(), encoding)
        message = json.dumps(notification, ensure_ascii=False)
        size = max(size, len(message.encode()))
        if size > SNS_MESSAGE_LIMIT:
            raise PermanentError(
                f"PublishToSns: the notification is {size} bytes or more, over SNS's "
                f"{SNS_MESSAGE_LIMIT} byte limit (PayloadType HEADERS sends the headers only)"
            )
        where = self.ports.topics.publish(
            params.TopicArn, "Amazon SES Email Receipt Notification", message
        )
        return f"published to {where} ({payload}, {encoding})"

    def _InvokeLambda(self, action: RuleAction, context: ActionContext) -> str:  # noqa: N802
        params = action.InvokeLambda
        assert params is not None
        invocation = "Event" if params.InvocationType == "EVENT" else "RequestResponse"

        def event() -> dict[str, Any]:  # built only for a function that reads it
            return lambda_event(
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

        functions = self.ports.functions
        functions.check(params.FunctionArn)  # a function that cannot be loaded fails the action
        try:
            result = functions.invoke(params.FunctionArn, event)
        except Exception as error:  # whatever the function raises
            reason = f"{type(error).__name__}: {error}"
            if params.InvocationType == "EVENT":
                # Lambda accepted the event; a handler error is the function's own (as on AWS).
                log.warning("lambda handler failed", extra={"function": params.FunctionArn})
                return f"invoked (EVENT); the handler raised {reason}"
            failure = TransientError if kind_of(error) is FailureKind.TRANSIENT else PermanentError
            raise failure(f"InvokeLambda: the handler raised {reason}") from error
        source = self.resources.function(params.FunctionArn)
        if source is not None and source.starts_pipeline:
            self._handing_on.extend(context.recipients)
        shown = json.dumps(result, default=str)[:RESULT_SHOWN] if result is not None else "null"
        return f"invoked ({params.InvocationType}), returned {shown}"
