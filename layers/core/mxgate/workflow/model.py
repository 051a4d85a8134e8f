"""The documents the state machine passes between steps (JSON on Step Functions)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from mxgate.records import Deferral, Delivery, Envelope, StateDetail, StoredObject


class Frozen(BaseModel):
    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")


# What Process gets: the stored message and its envelope (from the Start function on AWS, from
# the rule set's run locally); a deferred or redriven message carries the same.
# Without an envelope Process fails for good: the pipeline never guesses recipients.
ProcessInput = StoredObject


class Arrival(Frozen):
    """One half of a message reaching the AWS pipeline (workflow.arrival)."""

    message_id: str
    stored: StoredObject | None = None  # WriteToS3's object, from S3's Object Created event
    envelope: Envelope | None = None  # the SMTP envelope, from the InvokeLambda event


class ArrivalRecord(Frozen):
    """What is known of a message's arrival: the halves so far."""

    message_id: str
    stored: StoredObject | None = None
    envelope: Envelope | None = None
    first_at: str = ""  # when the first half arrived


# Process's output (ProcessOutput) is in workflow.process: its sender checks are the authn
# models, which no other function needs to import.


class RecipientResult(Frozen):
    recipient: str
    outcome: str  # an Outcome, or what a delivery that settles nothing did ("posted", ...)
    detail: StateDetail = ""


class DeliveryResult(Frozen):
    delivery_id: str
    results: list[RecipientResult]


class StepError(Frozen):
    """What a Catch puts in the document: the error name and its cause."""

    Error: str
    Cause: str = ""

    @property
    def reason(self) -> str:
        """The error and its message (a Cause is Lambda's JSON, and the local runner's), or the
        whole Cause when it is not JSON."""
        try:
            cause = json.loads(self.Cause)
        except ValueError:
            cause = None
        message = cause.get("errorMessage") if isinstance(cause, dict) else None
        return f"{self.Error}: {message or self.Cause}".strip().rstrip(":")


class DeadLetterInput(Frozen):
    delivery: Delivery
    error: StepError


class DeliverInput(Frozen):
    delivery: Delivery


class DeferInput(Frozen):
    """What the Defer state gets: the delivery and the transient error its retries ended on."""

    delivery: Delivery
    error: StepError


class Redelivery(Frozen):
    """Input of an execution that re-runs deliveries (deferred or redriven), not a message."""

    deliveries: list[Delivery] = Field(min_length=1)


class ProviderEvent(Frozen):
    """What the mailbox provider's side did with a delivery SES sent, as SES reports it."""

    kind: Literal["delivered", "bounced", "complained", "rejected", "delayed"]
    message_id: str  # ours
    route: str  # the destination whose routing domain the recipients were sent to
    recipients: list[str]  # as SES had them (routed addresses); empty: all of the send's
    at: datetime
    detail: str
    reasons: dict[str, str] = Field(default_factory=dict)  # per recipient, when SES says
    ses_message_id: str = ""


class Reprocessing(Frozen):
    """Input of an execution that runs a stored message through Process again (deferred after
    transient failures, or a redriven dead letter), not an S3 event."""

    stored: StoredObject
    deferral: Deferral | None = None  # how long it has waited; None for a redrive


class ProcessingFailure(Frozen):
    """What DeferProcessing and DeadLetterProcessing get: the stored message Process could not
    handle, how long it has been deferred, and the error its retries ended on."""

    stored: StoredObject
    deferral: Deferral | None = None
    error: StepError
    envelope: Envelope | None = None


# The Defer and DeadLetter steps serve a delivery (in the Map) and a message Process could not
# handle (DeferProcessing, DeadLetterProcessing): the input says which.
DEFER_INPUT: TypeAdapter[DeferInput | ProcessingFailure] = TypeAdapter(
    DeferInput | ProcessingFailure, config=ConfigDict(defer_build=True)
)
DEAD_LETTER_INPUT: TypeAdapter[DeadLetterInput | ProcessingFailure] = TypeAdapter(
    DeadLetterInput | ProcessingFailure, config=ConfigDict(defer_build=True)
)
