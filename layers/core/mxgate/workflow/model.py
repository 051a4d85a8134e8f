"""The documents the state machine passes between steps (JSON on Step Functions)."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field

from mxgate.authn.model import Authentication
from mxgate.records import Delivery, Envelope, MessageRef, StateDetail


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProcessInput(Frozen):
    """The input of a message's execution: the stored message and its envelope."""

    bucket: str
    key: str
    envelope: Envelope | None = None  # None: none arrived (Process quarantines the message)


class StoredObject(Frozen):
    bucket: str
    key: str


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


class ProcessOutput(Frozen):
    message: MessageRef
    deliveries: list[Delivery]
    authentication: Authentication | None = None  # the sender checks, for routes to use


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


class QuarantineInput(Frozen):
    bucket: str
    key: str
    error: StepError
    envelope: Envelope | None = None
