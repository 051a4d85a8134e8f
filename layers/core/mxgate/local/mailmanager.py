"""The local Mail Manager: the template's rule set applied to each accepted message, with
every action performed on this machine (MAIL_MANAGER.md describes what each one does)."""

from __future__ import annotations

import io
import ipaddress
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mxgate.authn.check import Authenticator
from mxgate.errors import PermanentError
from mxgate.local.facts import message_facts
from mxgate.local.logs import RULE_SET, VendedLogs
from mxgate.mailmanager.addresses import AddressBook
from mxgate.mailmanager.config import MailManagerConfig
from mxgate.mailmanager.models import RuleAction, RuleSet
from mxgate.mailmanager.rules import ActionContext, RuleSetOutcome, run_rule_set
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


@dataclass
class _Written:
    """Objects WriteToS3 stored; their workflows start once the whole rule set has run."""

    objects: dict[tuple[str, str], list[str]] = field(default_factory=dict)


class LocalActionExecutor:
    """Performs rule actions for one message on this machine."""

    def __init__(self, service: LocalMailManager, envelope: Envelope, raw: bytes) -> None:
        self.service = service
        self.envelope = envelope
        self.raw = raw
        self.written = _Written()

    def _message(self, context: ActionContext) -> bytes:
        # AddHeader fields are prepended newest first, as an MTA adds trace fields.
        return prepend_headers(self.raw, reversed(context.added_headers))

    def execute(self, action: RuleAction, context: ActionContext) -> str:
        handler = getattr(self, f"_{action.kind}", None)
        if handler is None:
            raise PermanentError(f"{action.kind} is not available in the local emulator yet")
        detail: str = handler(action, context)
        return detail

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

    def _Relay(self, action: RuleAction, context: ActionContext) -> str:  # noqa: N802
        params = action.Relay
        assert params is not None
        relay_id, relay = self.service.config.relay(params.Relay)
        transport = self.service.relay_transports.get(relay_id)
        if transport is None:
            where = f"{relay.ServerName}:{relay.ServerPort}"
            if not _is_loopback(relay.ServerName):
                raise PermanentError(
                    f"relay {relay_id} points at {where}; the local emulator only relays on loopback: "
                    "map it to a mailbox host under `relays:` in the local configuration"
                )
            raise PermanentError(f"relay {relay_id} ({where}) has no local transport")
        sender = self.envelope.mail_from
        if params.MailFrom == "REPLACE":
            sender = self.service.replace_mail_from
        results = transport.send(sender, context.recipients, self._message(context))
        failed = {r: res for r, res in results.items() if not res.ok}
        if failed:
            raise PermanentError("; ".join(f"{r}: {res.detail}" for r, res in failed.items()))
        return f"relayed via {relay_id}"


def _is_loopback(host: str) -> bool:
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
        rule_set: RuleSet,
        book: AddressBook,
        objects: ObjectStore,
        timeline: Timeline,
        logs: VendedLogs,
        clock: Clock,
        relay_transports: Mapping[str, Transport],
        start_workflow: Callable[[str, str], None],
        replace_mail_from: str,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.config = config
        self.rule_set = rule_set
        self.book = book
        self.objects = objects
        self.timeline = timeline
        self.logs = logs
        self.clock = clock
        self.relay_transports = relay_transports
        self.start_workflow = start_workflow
        self.replace_mail_from = replace_mail_from
        self.authenticator = authenticator  # SPF, DKIM, DMARC verdicts for the rule set

    def process(self, envelope: Envelope, raw: bytes) -> RuleSetOutcome:
        """Run the rule set for one accepted message and perform its actions."""
        executor = LocalActionExecutor(self, envelope, raw)
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
        outcome = run_rule_set(self.rule_set, facts, envelope.recipients, self.book, executor)
        now = self.clock.now()
        for record in outcome.records:
            self.logs.write(
                RULE_SET,
                {
                    "timestamp": now.isoformat(),
                    "message_id": envelope.message_id,
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
                    + (f" -> {trail.addresses}" if trail.addresses != [trail.recipient] else ""),
                )
                for trail in outcome.trails
            ]
        )
        handed_on = {r for recipients in executor.written.objects.values() for r in recipients}
        succeeded: dict[str, list[str]] = {}
        for record in outcome.records:
            if record.action_status == "SUCCESS":
                for address in record.recipients_matched:
                    succeeded.setdefault(address, []).append(record.action_name)
        for trail in outcome.trails:
            for address in trail.addresses:
                if trail.dropped_by is not None:
                    self._settle(envelope, address, Outcome.DROPPED, trail.dropped_by)
                elif address in handed_on:
                    continue  # the workflow decides
                else:
                    done = [a for a in succeeded.get(address, []) if a in _TERMINAL_BY_ACTION]
                    if done:
                        self._settle(
                            envelope,
                            address,
                            _TERMINAL_BY_ACTION[done[0]],
                            f"rule action {done[0]}",
                        )
                    else:
                        self._settle(
                            envelope,
                            address,
                            Outcome.DROPPED,
                            "no rule delivered it (actions: "
                            + (", ".join(trail.actions) or "none")
                            + ")",
                        )
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
