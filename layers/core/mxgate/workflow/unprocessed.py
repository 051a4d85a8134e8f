"""A stored message that Process could not handle.

The state machine retries Process; what still fails transiently (DynamoDB throttling, S3 or DNS
out for longer than the retries last) is deferred: the deferred queue runs the message through
Process again later, on the deliveries' schedule (the routes' top-level delivery policy), until
the queue lifetime runs out. What fails for good, or outlives the lifetime, is dead-lettered:
its recipients end `dead_lettered` with the reason, and `mxgate dlq redrive` runs it again.

Never a quarantine: quarantine is a decision about a message's content, made inside Process,
and nothing is known to be wrong with a message whose processing failed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from mxgate.errors import PermanentError
from mxgate.ports import Clock, DeadLetters, Deferrals, Timeline
from mxgate.timeline import Outcome, Stage, TimelineEvent
from mxgate.workflow import records
from mxgate.workflow.delivery import backoff, reason_of
from mxgate.workflow.envelope import message_id_of, read_envelope, variant_of
from mxgate.workflow.model import (
    Deferral,
    DeferredProcessing,
    DeliveryResult,
    ProcessingFailure,
    ProcessInput,
    RecipientResult,
    StepError,
)
from mxgate.workflow.services import Services

PROCESSING = "processing"  # the dead-letter kind of a message Process could not handle
UNKNOWN_RECIPIENTS = "(unknown recipients)"  # when not even the envelope can be read


def processing_id(stored: ProcessInput) -> str:
    """`<message id>[.variant-<n>].processing`: one per stored object."""
    return f"{message_id_of(stored.key)}{variant_of(stored.key)}.{PROCESSING}"


def _recipients(stored: ProcessInput, services: Services) -> list[str]:
    """The envelope's recipients, as far as they can be known without Process (an envelope
    kept beside the message is looked for on every runtime: this is rare, and one request)."""
    envelope = stored.envelope or read_envelope(
        services.objects, stored.bucket, stored.key, None, services.routes
    )
    return envelope.recipients or [UNKNOWN_RECIPIENTS]


def defer_processing(request: ProcessingFailure, services: Services) -> DeliveryResult:
    """Schedule another run of Process for the message, or dead-letter it once its lifetime
    has run out (or where this runtime has no deferred queue)."""
    stored = request.stored
    message_id = message_id_of(stored.key)
    reason = reason_of(request.error)
    policy = services.routes.delivery
    now = services.clock.now()
    previous = request.deferral
    first = datetime.fromisoformat(previous.first_deferred_at) if previous else now
    attempts = (previous.attempts if previous else 0) + 1
    give_up = first + timedelta(seconds=policy.queue_lifetime)
    if services.deferrals is None:
        cause = f"{reason}; no deferred queue here"
        return _dead_letter(request, StepError(Error="TransientError", Cause=cause), services)
    if now >= give_up:
        waited = (now - first).total_seconds() / 3600
        cause = f"gave up after {waited:.1f}h deferred; last error {reason}"
        return _dead_letter(request, StepError(Error="Expired", Cause=cause), services)
    base = processing_id(stored)
    due = min(now + timedelta(seconds=backoff(policy, attempts, base)), give_up)
    record = DeferredProcessing(
        record_id=f"{base}#{attempts}",
        due_at=due.isoformat(),
        stored=stored,
        deferral=Deferral(
            first_deferred_at=first.isoformat(), attempts=attempts, last_error=reason[:500]
        ),
    )
    services.deferrals.schedule(record.record_id, due, record.model_dump(mode="json"))
    detail = (
        f"processing: {reason}; deferral {attempts}, next attempt "
        f"{due.isoformat(timespec='seconds')}, gives up {give_up.isoformat(timespec='seconds')}"
    )
    services.timeline.record(records.event(services, message_id, Stage.DEFERRED, detail))
    return DeliveryResult(delivery_id=base, results=[])


def dead_letter_processing(request: ProcessingFailure, services: Services) -> DeliveryResult:
    """Process failed for good: a dead letter, and every recipient still open dead-lettered."""
    return _dead_letter(request, request.error, services)


def _dead_letter(
    request: ProcessingFailure, error: StepError, services: Services
) -> DeliveryResult:
    stored = request.stored
    message_id = message_id_of(stored.key)
    record_id = processing_id(stored)
    reason = reason_of(error)
    recipients = _recipients(stored, services)
    services.dead_letters.put(
        record_id,
        {
            "kind": PROCESSING,
            "message_id": message_id,
            "stored": stored.model_dump(mode="json"),
            "message": {"bucket": stored.bucket, "key": stored.key},
            "destination": "Process",
            "recipients": recipients,
            "error": error.Error,
            "cause": error.Cause,
            "reason": reason[:1000],
            "at": services.clock.now().isoformat(),
        },
    )
    detail = f"dead letter {record_id}: processing failed: {reason}"
    results = []
    for recipient in recipients:
        records.settle(
            services,
            message_id,
            recipient,
            outcome=Outcome.DEAD_LETTERED,
            route=PROCESSING,
            detail=detail,
        )
        results.append(
            RecipientResult(
                recipient=recipient, outcome=Outcome.DEAD_LETTERED.value, detail=detail[:500]
            )
        )
    return DeliveryResult(delivery_id=record_id, results=results)


def redrive_processing(
    record_id: str,
    *,
    dead_letters: DeadLetters,
    deferrals: Deferrals,
    timeline: Timeline,
    clock: Clock,
) -> DeferredProcessing:
    """Run a dead-lettered message through Process again, due now, with a fresh lifetime: its
    dead-lettered recipients are reopened, so the new run settles them anew."""
    record = dead_letters.get(record_id)
    if record is None or record.get("kind") != PROCESSING:
        raise PermanentError(f"no dead letter {record_id!r} of a message Process could not handle")
    stored = ProcessInput.model_validate(record["stored"])
    message_id = message_id_of(stored.key)
    states = {s.recipient.casefold(): s for s in timeline.states(message_id)}
    for recipient in states.values():
        if recipient.outcome is Outcome.DEAD_LETTERED and recipient.route == PROCESSING:
            timeline.reopen(message_id, recipient.recipient)
    now = clock.now()
    queued = DeferredProcessing(
        record_id=f"{processing_id(stored)}#redrive-{now.strftime('%Y%m%dT%H%M%S%f')}",
        due_at=now.isoformat(),
        stored=stored,
    )
    deferrals.schedule(queued.record_id, now, queued.model_dump(mode="json"))
    timeline.record(
        TimelineEvent(
            message_id=message_id,
            at=now,
            stage=Stage.REDRIVEN,
            detail=f"dead letter {record_id} redriven: the message goes through Process again",
        )
    )
    dead_letters.remove(record_id)
    return queued
