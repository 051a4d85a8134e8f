"""A message reaches the AWS pipeline in two halves, in either order: the object Mail Manager's
WriteToS3 stored (S3 announces it) and the SMTP envelope (Mail Manager's InvokeLambda event).
Each arrival is recorded under the message id; the arrival that completes the pair starts the
message's execution, with the envelope in its input. A half that comes again before the pair is
complete changes nothing; one that comes again after it starts the execution again (the same
name and input: Standard workflows take it as the same execution, and on Express every delivery
skips a recipient that already has its end), which is also what a retry after a failed start
needs. A pair still incomplete some minutes later is found by `check` and reported.

Joined by Mail Manager's message id: the InvokeLambda event's `mail.messageId`, and the last
part of the WriteToS3 object key. That WriteToS3 names objects `<prefix><message id>` is
*unconfirmed* (AWS does not document its key naming): when it does not hold, no pair completes,
`check` reports every message and the alarm on unstarted messages fires. Nothing is lost: the
object stays in the bucket and the envelope in the arrival record.
"""

from __future__ import annotations

from dataclasses import dataclass

from mxgate.ports import ArrivalChecks, Arrivals, Executions
from mxgate.records import Envelope, Stage, StoredObject, message_id_of
from mxgate.workflow.model import Arrival, ArrivalRecord, ProcessInput
from mxgate.workflow.services import Services
from mxgate.workflow.unprocessed import dead_letter_not_arrived


def object_arrival(bucket: str, key: str) -> Arrival:
    return Arrival(message_id=message_id_of(key), stored=StoredObject(bucket=bucket, key=key))


def envelope_arrival(envelope: Envelope) -> Arrival:
    return Arrival(message_id=envelope.message_id, envelope=envelope)


def missing_half(record: ArrivalRecord) -> str | None:
    if record.stored is None:
        return "the stored message (WriteToS3)"
    if record.envelope is None:
        return "the envelope (InvokeLambda)"
    return None


@dataclass(frozen=True)
class Joined:
    """What one arrival did: the message's record, and the execution it started (if it did)."""

    record: ArrivalRecord
    started: str | None = None

    def describe(self) -> str:
        if self.started is not None:
            return f"started execution {self.started}"
        return f"waiting for {missing_half(self.record)}"


def arrive(
    arrival: Arrival, arrivals: Arrivals, executions: Executions, checks: ArrivalChecks
) -> Joined:
    """Record one half; start the execution when the pair is complete."""
    record, new = arrivals.record(arrival)
    if missing_half(record) is not None:
        if new:
            checks.schedule(record.message_id)  # the first half: look again later
        return Joined(record)
    assert record.stored is not None
    document = ProcessInput(
        bucket=record.stored.bucket, key=record.stored.key, envelope=record.envelope
    )
    return Joined(record, executions.start(record.message_id, document.model_dump(mode="json")))


@dataclass(frozen=True)
class Checked:
    record: ArrivalRecord | None
    started: str | None = None  # the execution started now
    problem: str | None = None  # why the message is not started (to report and alarm on)


def check(
    message_id: str,
    *,
    arrivals: Arrivals,
    executions: Executions,
    services: Services,
    raw_bucket: str,
    raw_prefix: str,
) -> Checked:
    """Some minutes after a message's first half arrived: is the pair complete? An envelope whose S3
    event never came is joined with the object under `<prefix><message id>` if there is one.
    Otherwise the message is reported: an envelope alone is a dead letter, its recipients
    `dead_lettered` (there is no message to deliver, and nothing is known to be wrong with its
    content: no quarantine), which a redrive runs through Process once the object is there; an
    object alone has no recipients to settle, and is kept for the operator, with a timeline
    event."""
    record = arrivals.get(message_id)
    if record is None or missing_half(record) is None:  # started, or its start failed and
        return Checked(record)  # Lambda kept the event on the Start function's failure queue
    if record.stored is None and services.objects.exists(raw_bucket, f"{raw_prefix}{message_id}"):
        joined = arrive(
            object_arrival(raw_bucket, f"{raw_prefix}{message_id}"),
            arrivals,
            executions,
            _NoChecks(),
        )
        return Checked(joined.record, joined.started)
    missing = missing_half(record)
    problem = f"not started: {missing} never arrived (first half at {record.first_at})"
    if record.envelope is None:
        services.records.note(record.message_id, Stage.TERMINAL, problem)
    else:
        expected = StoredObject(
            bucket=raw_bucket, key=f"{raw_prefix}{message_id}", envelope=record.envelope
        )
        dead_letter_not_arrived(expected, problem, services)
    return Checked(record, problem=problem)


class _NoChecks:
    def schedule(self, message_id: str) -> None:
        """A check completing a pair needs no further check."""
