"""The local Mail Manager: the template's rule set applied to each accepted message on this
machine, its actions performed through ports (`mailmanager.actions`; the README says how each
behaves here), and each recipient's end decided from what the actions did.

Runs of one message never overlap (`exclusive`): a redrive and a retry of the same message
would write the same objects.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from mxgate.authn.check import Authenticator
from mxgate.errors import PermanentError
from mxgate.local.facts import message_facts
from mxgate.local.logs import RULE_SET, VendedLogs
from mxgate.local.rule_set_failures import OpenRecipient, RuleSetFailures
from mxgate.mailmanager.actions import ActionPorts, ActionRunner, Stored
from mxgate.mailmanager.addresses import AddressBook
from mxgate.mailmanager.models import RuleSet
from mxgate.mailmanager.resources import MailManagerResources
from mxgate.mailmanager.rules import TERMINAL_BY_ACTION, RuleSetOutcome, run_rule_set
from mxgate.mailmanager.template import logical_id_of
from mxgate.message.raw import RawMessage
from mxgate.records import Envelope, Outcome, RuleSetRetry, Stage

log = logging.getLogger("mxgate.mailmanager")

LOCK_SLOTS = 64


@dataclass(frozen=True)
class RuleSetRun:
    """One run of the rule set over a message."""

    envelope: Envelope
    message: RawMessage
    ingress: str  # the ingress point's logical id
    rule_set_id: str
    outcome: RuleSetOutcome
    # what WriteToS3 stored, by (bucket, key), with the envelope of its own recipients: each
    # goes to the workflow with that envelope, as the Start function's join gives it on AWS
    stored: dict[tuple[str, str], Envelope]
    pending: dict[str, OpenRecipient]  # failed for now, not settled: to run again later


@dataclass(frozen=True)
class LocalMailManager:
    resources: MailManagerResources
    rule_sets: Mapping[str, RuleSet]  # by ingress point logical id
    book: AddressBook
    actions: ActionPorts  # where the actions' effects go
    failures: RuleSetFailures  # retries and dead letters
    logs: VendedLogs
    locks: Path  # lock files of `exclusive`
    authenticator: Authenticator | None = None  # SPF, DKIM, DMARC verdicts for the rule set

    def rule_set_for(self, envelope: Envelope) -> tuple[str, RuleSet]:
        """The rule set of the ingress point that accepted the message (spool files written
        before ingress points were recorded belong to the first one)."""
        ingress = envelope.ingress_point or next(iter(self.rule_sets))
        if ingress not in self.rule_sets:
            raise PermanentError(f"message came through unknown ingress point {ingress!r}")
        return ingress, self.rule_sets[ingress]

    def _rule_set_id(self, ingress: str) -> str:
        point = self.resources.ingress_points.get(ingress)
        return logical_id_of(point.RuleSetId) if point is not None else ""

    @contextlib.contextmanager
    def exclusive(self, message_id: str) -> Iterator[None]:
        """An flock on one of 64 lock files, picked by the message id, for one run."""
        slot = int(hashlib.sha256(message_id.encode()).hexdigest()[:4], 16) % LOCK_SLOTS
        path = f"{self.locks}/rule-set-{slot:02d}.lock"
        try:
            lock = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the first run here
            self.locks.mkdir(parents=True, exist_ok=True)
            lock = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
            yield
        finally:
            os.close(lock)

    def apply_rule_set(
        self,
        envelope: Envelope,
        message: RawMessage,
        *,
        retry: RuleSetRetry | None = None,
        fresh: bool = False,
    ) -> RuleSetRun:
        """Run the rule set for the envelope's recipients (the first run, or a retry's) and
        perform its actions. Every recipient is settled, dead-lettered, stored for the
        workflow, or left in `pending`. `fresh`: no run of the message came before, so no
        action is looked up as done already."""
        ingress, rule_set = self.rule_set_for(envelope)
        authentication = None
        if self.authenticator is not None:  # Mail Manager judges the sender before the rules
            with message.open() as stream:
                authentication = self.authenticator.authenticate(
                    stream,
                    client_ip=envelope.source_ip,
                    mail_from=envelope.mail_from,
                    helo=envelope.helo,
                    # so the Process step finds it checked (Authenticator.remember)
                    message_id=envelope.message_id,
                    sha256=message.sha256() if self.authenticator.sealer else "",
                )
            log.info(
                "authenticated",
                extra={"message_id": envelope.message_id, "verdicts": authentication.summary()},
            )
        facts = message_facts(envelope, message, authentication)
        runner = ActionRunner(self.actions, self.resources, envelope, message, facts, fresh=fresh)
        outcome = run_rule_set(rule_set, facts, envelope.recipients, self.book, runner)
        rule_set_id = self._rule_set_id(ingress)
        self._log(envelope, ingress, rule_set_id, outcome)
        self._record_rules(envelope, outcome, retry)
        pending = self._settle_all(envelope, message, rule_set_id, outcome, runner.stored)
        stored = self._keep_stored(envelope, runner.stored)
        return RuleSetRun(envelope, message, ingress, rule_set_id, outcome, stored, pending)

    def retry_open(
        self, run: RuleSetRun, *, spool_file: str = "", retry: RuleSetRetry | None = None
    ) -> RuleSetRetry | None:
        """The retry now scheduled for the run's open recipients; None when every recipient
        has its end (settled, dead-lettered, or with the workflow)."""
        if not run.pending:
            return None
        return self.failures.retry_later(
            run.envelope,
            run.message,
            run.rule_set_id,
            run.pending,
            spool_file=spool_file,
            retry=retry,
        )

    def _log(
        self, envelope: Envelope, ingress: str, rule_set_id: str, outcome: RuleSetOutcome
    ) -> None:
        now = self.actions.clock.now().isoformat()
        self.logs.write_all(
            RULE_SET,
            (
                {
                    "timestamp": now,
                    "message_id": envelope.message_id,
                    "ingress_point_id": ingress,
                    "rule_set_id": rule_set_id,
                    **record.as_log(),
                }
                for record in outcome.records
            ),
        )

    def _record_rules(
        self, envelope: Envelope, outcome: RuleSetOutcome, retry: RuleSetRetry | None
    ) -> None:
        """One `rules` event per recipient; later runs are `retry` events."""
        prefix = ""
        if retry is not None:
            prefix = (
                "rule set redrive: " if retry.is_redrive else f"rule set retry {retry.attempts}: "
            )
        records = self.failures.records
        events = []
        for trail in outcome.all_trails():
            replaced = (
                f" -> replaced with {[t.recipient for t in trail.replaced_with]}"
                if trail.replaced_with is not None
                else ""
            )
            failed = "".join(
                f"; {r.action_name} failed: {r.failure_for(trail.recipient)}"
                for r in outcome.records
                if r.action_status == "FAILURE" and trail.recipient in r.recipients_matched
            )
            events.append(
                records.event(
                    envelope.message_id,
                    Stage.RETRY if retry is not None else Stage.RULES,
                    f"{prefix}rules {trail.matched_rules or 'none'} -> actions "
                    f"{trail.actions or 'none'}{replaced}{failed}",
                    trail.recipient,
                )
            )
        records.record(events)

    def _keep_stored(self, envelope: Envelope, stored: Stored) -> dict[tuple[str, str], Envelope]:
        """Each stored object with the envelope of its own recipients, on the timeline."""
        records = self.failures.records
        enveloped = {}
        for (bucket, key), recipients in stored.objects.items():
            enveloped[bucket, key] = envelope.model_copy(
                update={"recipients": list(dict.fromkeys(recipients))}
            )
            records.note(envelope.message_id, Stage.STORED, f"s3://{bucket}/{key}")
        return enveloped

    def _settle_all(
        self,
        envelope: Envelope,
        message: RawMessage,
        rule_set_id: str,
        outcome: RuleSetOutcome,
        stored: Stored,
    ) -> dict[str, OpenRecipient]:
        """Every recipient ends in exactly one terminal state. What a WriteToS3 stored goes on
        to the workflow, which decides (even if a later rule dropped the recipient: the object
        is written, as on AWS); otherwise the first terminal action that succeeded decides,
        then a Drop (or a failure under ActionFailurePolicy DROP). A recipient for whom an
        action failed and nothing else took it is never dropped: a permanent failure
        dead-letters it, a transient one is returned, open, for a retry. Only a recipient no
        action took, and none failed for, is dropped."""
        handed_on = {r for recipients in stored.objects.values() for r in recipients}
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
        stored.hand_on_envelopes(succeeded)
        records = self.failures.records

        def settle(address: str, outcome: Outcome, detail: str) -> None:
            records.settle(
                envelope.message_id, address, outcome=outcome, route="rules", detail=detail
            )

        open_: dict[str, OpenRecipient] = {}
        for trail in outcome.all_trails():
            address = trail.recipient
            if trail.replaced_with is not None:
                new = [t.recipient for t in trail.replaced_with]
                if address not in new:
                    settle(
                        address,
                        Outcome.DROPPED,
                        f"replaced with {new} by rule {trail.replaced_by} (ReplaceRecipient); "
                        "their outcomes are recorded under their own addresses",
                    )
                continue
            if address in handed_on:
                continue  # the workflow decides
            done = [a for a in succeeded.get(address, []) if a in TERMINAL_BY_ACTION]
            if done:
                settle(address, TERMINAL_BY_ACTION[done[0]], f"rule action {done[0]}")
            elif trail.dropped_by is not None:
                settle(address, Outcome.DROPPED, trail.dropped_by)
            elif address in failed:
                entry = open_.setdefault(
                    address, OpenRecipient([], list(dict.fromkeys(failed[address])), False)
                )
                entry.accepted.append(trail.accepted)
                entry.transient = address in transient
            else:
                actions = ", ".join(trail.actions) or "none"
                settle(address, Outcome.DROPPED, f"no rule delivered it (actions: {actions})")
        if open_:  # one that another run settled meanwhile stays as it is
            timeline = self.failures.timeline
            settled = {s.recipient.casefold() for s in timeline.states(envelope.message_id)}
            open_ = {a: o for a, o in open_.items() if a.casefold() not in settled}
        permanent = {a: o for a, o in open_.items() if not o.transient}
        if permanent:
            self.failures.dead_letter(
                envelope, message, rule_set_id, permanent, error="PermanentError"
            )
        return {a: o for a, o in open_.items() if o.transient}
