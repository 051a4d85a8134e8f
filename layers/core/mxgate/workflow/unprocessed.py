"""A stored message that Process could not handle.

The state machine retries Process; what still fails transiently (DynamoDB throttling, S3 or DNS
out for longer than the retries last) is deferred: the deferred queue runs the message through
Process again later, on the deliveries' schedule (the routes' top-level delivery policy), until
the queue lifetime runs out. What fails for good, or outlives the lifetime, is dead-lettered:
its recipients end `dead_lettered` with the reason, and `mxgate dlq redrive` runs it again
(`workflow.dead_letter.redrive`).

Never a quarantine: quarantine is a decision about a message's content, made inside Process,
and nothing is known to be wrong with a message whose processing failed.
"""

from __future__ import annotations

from mxgate.records import (
    UNKNOWN_RECIPIENTS,
    DeferredProcessing,
    Outcome,
    ProcessingDeadLetter,
    Stage,
    StoredObject,
)
from mxgate.workflow.defer import Schedule
from mxgate.workflow.model import DeliveryResult, ProcessingFailure, RecipientResult, StepError
from mxgate.workflow.services import Services

PROCESSING = "processing"  # the route of a recipient dead-lettered because Process failed
NOT_ARRIVED = "NotArrived"  # the error of the dead letter of an envelope without its object


def _recipients(stored: StoredObject) -> list[str]:
    """The envelope's recipients: the execution's input carries the envelope (a message that
    came without one fails for good, its recipients unknown)."""
    return (stored.envelope.recipients if stored.envelope else []) or [UNKNOWN_RECIPIENTS]


def defer_processing(request: ProcessingFailure, services: Services) -> DeliveryResult:
    """Schedule another run of Process for the message, or dead-letter it once its lifetime
    has run out (or where this runtime has no deferred queue)."""
    stored = request.stored
    reason = request.error.reason
    policy = services.routes.delivery
    schedule = Schedule.after(request.deferral, policy, services.clock.now())
    attempts, give_up = schedule.attempts, schedule.give_up
    if services.deferrals is None:
        cause = f"{reason}; no deferred queue here"
        return _dead_letter(request, StepError(Error="TransientError", Cause=cause), services)
    if schedule.expired:
        waited = (schedule.now - schedule.first).total_seconds() / 3600
        cause = f"gave up after {waited:.1f}h deferred; last error {reason}"
        return _dead_letter(request, StepError(Error="Expired", Cause=cause), services)
    base = stored.processing_id
    due = schedule.due(policy, base)
    services.deferrals.schedule(
        DeferredProcessing(
            record_id=f"{base}#{attempts}",
            due_at=due,
            stored=stored,
            deferral=schedule.deferral(reason),
        )
    )
    detail = (
        f"processing: {reason}; deferral {attempts}, next attempt "
        f"{due.isoformat(timespec='seconds')}, gives up {give_up.isoformat(timespec='seconds')}"
    )
    services.records.note(stored.message_id, Stage.DEFERRED, detail)
    return DeliveryResult(delivery_id=base, results=[])


def dead_letter_processing(request: ProcessingFailure, services: Services) -> DeliveryResult:
    """Process failed for good: a dead letter, and every recipient still open dead-lettered."""
    return _dead_letter(request, request.error, services)


def dead_letter_not_arrived(
    stored: StoredObject, problem: str, services: Services
) -> DeliveryResult:
    """An envelope whose stored message never arrived (`problem` says so): its own dead letter
    (error NotArrived), which a redrive runs through Process once the object is there. Nothing
    failed: the reason is the problem, not a processing failure's."""
    error = StepError(Error=NOT_ARRIVED, Cause=problem)
    return _dead_letter(ProcessingFailure(stored=stored, error=error), error, services, problem)


def _dead_letter(
    request: ProcessingFailure, error: StepError, services: Services, why: str | None = None
) -> DeliveryResult:
    """`why`: the dead letter's reason, as the recipients' states say it too (by default a
    processing failure's: its error and cause)."""
    stored = request.stored
    record_id = stored.processing_id
    reason = why or error.reason
    recipients = _recipients(stored)
    services.dead_letters.put(
        ProcessingDeadLetter(
            record_id=record_id,
            message_id=stored.message_id,
            stored=stored,
            destination="Process",
            recipients=recipients,
            error=error.Error,
            cause=error.Cause,
            reason=reason,
            at=services.clock.now(),
        )
    )
    detail = f"dead letter {record_id}: {why or f'processing failed: {reason}'}"
    results = []
    for recipient in recipients:
        services.records.settle(
            stored.message_id,
            recipient,
            outcome=Outcome.DEAD_LETTERED,
            route=PROCESSING,
            detail=detail,
        )
        results.append(
            RecipientResult(recipient=recipient, outcome=Outcome.DEAD_LETTERED.value, detail=detail)
        )
    return DeliveryResult(delivery_id=record_id, results=results)
