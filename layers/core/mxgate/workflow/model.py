"""The documents the state machine passes between steps (JSON on Step Functions)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mxgate.authn.model import Authentication


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Envelope(Frozen):
    """The SMTP envelope as the ingress saw it."""

    message_id: str
    mail_from: str
    recipients: list[str]
    helo: str = ""
    source_ip: str = ""
    tls_protocol: str | None = None
    received_at: str = ""
    source: Literal["envelope", "headers"] = "envelope"  # headers: no envelope was recorded
    ingress_point: str = ""  # the Mail Manager ingress point (logical id) that accepted it


class ProcessInput(Frozen):
    bucket: str
    key: str


class MessageRef(Frozen):
    message_id: str
    bucket: str
    key: str
    digest: str  # sha256 of the stored bytes: half of every idempotency key
    envelope_sender: str
    size: int
    subject: str = ""


class Delivery(Frozen):
    """One hand-off: one message, one destination, up to 50 recipients."""

    delivery_id: str
    message: MessageRef
    kind: Literal["mailbox", "app"]
    destination: str
    recipients: list[str] = Field(min_length=1, max_length=50)
    prepend: list[tuple[str, str]] = Field(default_factory=list)  # trace header fields


class ProcessOutput(Frozen):
    message: MessageRef
    deliveries: list[Delivery]
    authentication: Authentication | None = None  # the sender checks, for routes to use


class RecipientResult(Frozen):
    recipient: str
    outcome: str
    detail: str = ""


class DeliveryResult(Frozen):
    delivery_id: str
    results: list[RecipientResult]


class StepError(Frozen):
    """What a Catch puts in the document: the error name and its cause."""

    Error: str
    Cause: str = ""


class DeadLetterInput(Frozen):
    delivery: Delivery
    error: StepError


class DeliverInput(Frozen):
    delivery: Delivery


class QuarantineInput(Frozen):
    bucket: str
    key: str
    error: StepError
