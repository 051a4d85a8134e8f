"""The DeadLetter step, and redrive.

A delivery that cannot be completed goes to the dead letters with its failure, for
`mxgate dlq`; its recipients that settle end `dead_lettered`. A redrive puts a dead letter
back in the deferred queue, due now, with a fresh lifetime: a delivery's to be delivered
again, a rule set's (local runtime) to run the rule set again for its recipients, a stored
message's that Process could not handle (workflow/unprocessed.py) to go through Process
again.
"""

from __future__ import annotations

from mxgate.errors import PermanentError
from mxgate.ports import Clock, DeadLetters, Deferrals, Timeline
from mxgate.recorder import Recorder
from mxgate.records import (
    Deferred,
    DeferredDelivery,
    DeferredProcessing,
    Delivery,
    DeliveryDeadLetter,
    Outcome,
    ProcessingDeadLetter,
    RuleSetDeadLetter,
    RuleSetRetry,
    Stage,
    recipients_digest,
)
from mxgate.workflow.model import DeadLetterInput, DeliveryResult, RecipientResult, StepError
from mxgate.workflow.pending import pending
from mxgate.workflow.services import Services


def dead_letter(request: DeadLetterInput, services: Services) -> DeliveryResult:
    """Record a delivery that cannot be completed, with its failure, for `mxgate dlq`."""
    delivery = request.delivery
    done, left = pending(delivery, services)
    results = dead_letter_recipients(delivery, left, request.error, services)
    return DeliveryResult(delivery_id=delivery.delivery_id, results=done + results)


def dead_letter_id(delivery: Delivery, recipients: list[str], dead_letters: DeadLetters) -> str:
    """`<delivery id>` for a record of all the delivery's recipients, `<delivery id>.<digest>`
    for a part of them. A record is written over by one of the same id, so the plain id goes to
    a whole delivery only when it is free or holds these same recipients (the step repeated):
    a redriven part that fails again is a whole delivery by itself, and must not take the place
    of the rest of its delivery, dead-lettered meanwhile."""
    plain = delivery.delivery_id
    digest = recipients_digest(recipients)
    if digest == recipients_digest(delivery.recipients):
        existing = dead_letters.get(plain)
        if existing is None or recipients_digest(existing.recipients) == digest:
            return plain
    return f"{plain}.{digest}"


def dead_letter_recipients(
    delivery: Delivery, recipients: list[str], error: StepError, services: Services
) -> list[RecipientResult]:
    """Dead-letter some recipients of a delivery: the record first, then their ends."""
    if not recipients:
        return []
    reason = error.reason
    record_id = dead_letter_id(delivery, recipients, services.dead_letters)
    services.dead_letters.put(
        DeliveryDeadLetter(
            record_id=record_id,
            kind=delivery.kind,
            message_id=delivery.message.message_id,
            destination=delivery.destination,
            recipients=recipients,
            delivery=delivery.model_copy(update={"recipients": recipients}),
            error=error.Error,
            cause=error.Cause,
            reason=reason,
            at=services.clock.now(),
        )
    )
    detail = f"dead letter {record_id}: {reason}"
    records = services.records
    if delivery.settles:
        for recipient in recipients:
            records.settle(
                delivery.message.message_id,
                recipient,
                outcome=Outcome.DEAD_LETTERED,
                route=delivery.destination,
                detail=detail,
            )
    else:
        records.note(
            delivery.message.message_id,
            Stage.ATTEMPT,
            f"{delivery.kind} {delivery.destination}: {detail}",
        )
    return [
        RecipientResult(recipient=r, outcome=Outcome.DEAD_LETTERED.value, detail=detail)
        for r in recipients
    ]


def redrive(
    record_id: str,
    *,
    dead_letters: DeadLetters,
    deferrals: Deferrals,
    timeline: Timeline,
    clock: Clock,
) -> Deferred:
    """Put a dead letter back in the deferred queue, due now, with a fresh lifetime, and
    reopen its dead-lettered recipients (a success settles them anew). A delivery's is
    delivered again: recipients delivered in the meantime keep their state, which the delivery
    skips, so nothing is sent twice. A rule set's goes through the rule set again from the kept
    copy: actions already done for a recipient are not repeated. A stored message's goes
    through Process again."""
    record = dead_letters.get(record_id)
    if record is None:
        raise PermanentError(f"no dead letter {record_id!r}")
    now = clock.now()
    when = now.strftime("%Y%m%dT%H%M%S%f")
    queued: Deferred
    if isinstance(record, RuleSetDeadLetter):
        queued = RuleSetRetry(
            record_id=f"{record.message_id}#rules-redrive-{when}",
            due_at=now,
            envelope=record.envelope,
            recipients=record.recipients,
            bucket=record.message.bucket,
            key=record.message.key,
        )
        reopen_dead_lettered(timeline, record.message_id, record.recipients)
        what = "the rule set"
    elif isinstance(record, ProcessingDeadLetter):
        queued = DeferredProcessing(
            record_id=f"{record.stored.processing_id}#redrive-{when}",
            due_at=now,
            stored=record.stored,
        )
        reopen_dead_lettered(timeline, record.message_id, record.recipients)
        what = "Process"
    else:
        delivery = record.delivery.model_copy(
            update={"recipients": record.recipients or record.delivery.recipients, "deferral": None}
        )
        queued = DeferredDelivery(
            record_id=f"{delivery.delivery_id}#redrive-{when}", due_at=now, delivery=delivery
        )
        if delivery.settles:
            reopen_dead_lettered(timeline, record.message_id, delivery.recipients)
        what = f"{delivery.kind} {delivery.destination}"
    deferrals.schedule(queued)
    Recorder(timeline, clock).note(
        record.message_id,
        Stage.REDRIVEN,
        f"dead letter {record_id} redriven: {len(queued.recipients)} recipient(s) queued for "
        f"{what}",
    )
    dead_letters.remove(record_id)
    return queued


def reopen_dead_lettered(timeline: Timeline, message_id: str, recipients: list[str]) -> None:
    """Forget the `dead_lettered` states of these recipients (others keep theirs)."""
    states = {s.recipient.casefold(): s for s in timeline.states(message_id)}
    for recipient in recipients:
        state = states.get(recipient.casefold())
        if state is not None and state.outcome is Outcome.DEAD_LETTERED:
            timeline.reopen(message_id, recipient)
