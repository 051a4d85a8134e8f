"""The documents the state machine passes between steps (JSON on Step Functions)."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field

from mxgate.authn.model import Authentication
from mxgate.records import Delivery, Envelope, MessageRef, StateDetail


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProcessInput(Frozen):
    bucket: str
    key: str
    envelope: Envelope | None = None  # when the trigger carries it (InvokeLambda's event)


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
