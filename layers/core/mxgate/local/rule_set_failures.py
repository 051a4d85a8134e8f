"""When rule actions fail on this machine: retries and dead letters of the rule set.

An action that fails for now (a 4xx reply, a local file or socket problem) leaves its recipient
open when nothing else took it: the message is run through the rule set again for those
recipients later, on the workflow's deferral schedule, until the delivery policy's lifetime
runs out. A permanent failure, or a retry past its lifetime, dead-letters the recipient with a
copy of the message kept for `mxgate dlq redrive` (`workflow.dead_letter.redrive`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from mxgate.message.parse import header_values, parse_header_section
from mxgate.message.raw import RawMessage
from mxgate.ports import Clock, DeadLetters, Deferrals, ObjectStore, Timeline
from mxgate.recorder import Recorder
from mxgate.records import (
    Envelope,
    Outcome,
    RuleSetDeadLetter,
    RuleSetRetry,
    Stage,
    StoredMessage,
    recipients_digest,
)
from mxgate.routing.routes import DeliveryPolicy
from mxgate.workflow.defer import backoff

KEPT_BUCKET = "mxgate-dead-letters"  # messages kept for dead-lettered recipients: `rules/<id>`


@dataclass
class OpenRecipient:
    """A recipient the rule set could not finish with: an action failed and none took it."""

    accepted: list[str]  # the envelope recipient(s) it comes from, to run the rule set again
    reasons: list[str]
    transient: bool  # some failure may pass: worth another try


def retry_record_id(message_id: str) -> str:
    """The id of a message's automatic rule set retry (there is at most one: it owns the kept
    spool file)."""
    return f"{message_id}#rules"


def dead_letter_id(message_id: str, recipients: list[str]) -> str:
    return f"{message_id}.rule-set.{recipients_digest(recipients)}"


def _reason(failures: Mapping[str, OpenRecipient]) -> str:
    return "; ".join(dict.fromkeys(r for o in failures.values() for r in o.reasons))


def _accepted(failures: Mapping[str, OpenRecipient]) -> list[str]:
    return list(dict.fromkeys(a for o in failures.values() for a in o.accepted))


def _subject(message: RawMessage) -> str:
    return next(iter(header_values(parse_header_section(message.header), "subject")), "")


@dataclass(frozen=True)
class RuleSetFailures:
    """Retries and dead letters of one runtime's rule set."""

    objects: ObjectStore  # where a dead letter's message is kept
    timeline: Timeline
    dead_letters: DeadLetters
    deferrals: Deferrals
    retry_policy: DeliveryPolicy  # backoff and lifetime of rule set retries
    clock: Clock

    @property
    def records(self) -> Recorder:
        return Recorder(self.timeline, self.clock)

    def retry_later(
        self,
        envelope: Envelope,
        message: RawMessage,
        rule_set_id: str,
        pending: Mapping[str, OpenRecipient],
        *,
        spool_file: str,
        retry: RuleSetRetry | None,
    ) -> RuleSetRetry | None:
        """Schedule the next run for the open recipients on the deferral schedule (backoff_min
        doubling up to backoff_max), or dead-letter them once the lifetime has run out."""
        policy = self.retry_policy
        now = self.clock.now()
        first = retry.first_failed_at if retry is not None and retry.first_failed_at else now
        attempts = (retry.attempts if retry is not None else 0) + 1
        give_up = first + timedelta(seconds=policy.queue_lifetime)
        reason = _reason(pending)
        if now >= give_up:
            hours = (now - first).total_seconds() / 3600
            self.dead_letter(
                envelope,
                message,
                rule_set_id,
                pending,
                error="Expired",
                why=f"gave up after {attempts - 1} rule set retries in {hours:.1f}h",
            )
            return None
        record_id = retry.record_id if retry is not None else retry_record_id(envelope.message_id)
        due = min(now + timedelta(seconds=backoff(policy, attempts, record_id)), give_up)
        source = (
            {"spool_file": retry.spool_file, "bucket": retry.bucket, "key": retry.key}
            if retry is not None
            else {"spool_file": spool_file}
        )
        again = RuleSetRetry(
            record_id=record_id,
            due_at=due,
            envelope=envelope.model_copy(update={"recipients": _accepted(pending)}),
            recipients=list(pending),
            first_failed_at=first,
            attempts=attempts,
            last_error=reason,
            **source,
        )
        self.deferrals.schedule(again)
        detail = (
            f"rule set: {reason}; retry {attempts}, next attempt "
            f"{due.isoformat(timespec='seconds')}, gives up {give_up.isoformat(timespec='seconds')}"
        )
        records = self.records
        records.record(
            [records.event(envelope.message_id, Stage.DEFERRED, detail, a) for a in pending]
        )
        return again

    def dead_letter(
        self,
        envelope: Envelope,
        message: RawMessage,
        rule_set_id: str,
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
        with message.open() as stream:
            self.objects.put(KEPT_BUCKET, key, stream)
        record_id = dead_letter_id(message_id, recipients)
        reason = _reason(failures)
        if why:
            reason = f"{why}; last error: {reason}"
        self.dead_letters.put(
            RuleSetDeadLetter(
                record_id=record_id,
                destination=rule_set_id or "rule set",
                message_id=message_id,
                recipients=recipients,
                envelope=envelope.model_copy(update={"recipients": _accepted(failures)}),
                message=StoredMessage(
                    bucket=KEPT_BUCKET,
                    key=key,
                    subject=_subject(message),
                    envelope_sender=envelope.mail_from,
                ),
                failures={a: o.reasons for a, o in failures.items()},
                error=error,
                reason=reason,
                at=self.clock.now(),
            )
        )
        for address in recipients:
            self.records.settle(
                message_id,
                address,
                outcome=Outcome.DEAD_LETTERED,
                route="rules",
                detail=f"dead letter {record_id}: {reason}",
            )
        return record_id
