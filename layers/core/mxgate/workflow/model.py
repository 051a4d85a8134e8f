"""The documents the state machine passes between steps (JSON on Step Functions)."""

from __future__ import annotations

import base64
import io
from typing import BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field

from mxgate.authn.model import Authentication
from mxgate.ports import ObjectStore


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Envelope(Frozen):
    """The SMTP envelope as the ingress saw it: the pipeline's sender and recipients, never the
    header fields'."""

    message_id: str
    mail_from: str
    recipients: list[str]
    helo: str = ""
    source_ip: str = ""
    tls_protocol: str | None = None  # Mail Manager's name: TLS1_2, TLS1_3
    tls_cipher: str | None = None  # e.g. TLS_AES_256_GCM_SHA384
    tls_cipher_bits: int | None = None
    authenticated: bool = False  # SMTP AUTH succeeded (an AUTH ingress point)
    received_at: str = ""
    ingress_point: str = ""  # the Mail Manager ingress point (logical id) that accepted it


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


class MessageRef(Frozen):
    message_id: str
    bucket: str
    key: str
    digest: str  # sha256 of the stored bytes: half of every idempotency key
    envelope_sender: str
    size: int
    subject: str = ""
    # A small message travels with its deliveries (base64), so delivering it reads nothing
    # back from the store: one request fewer per message on AWS (bench/cost.py).
    inline: str | None = None

    def raw(self, objects: ObjectStore) -> bytes:
        """The stored bytes: from the document when they travel in it, else from the store."""
        if self.inline is not None:
            return base64.b64decode(self.inline)
        return objects.get(self.bucket, self.key)

    def open(self, objects: ObjectStore) -> BinaryIO:
        if self.inline is not None:
            return io.BytesIO(base64.b64decode(self.inline))
        return objects.open(self.bucket, self.key)


class Deferral(Frozen):
    """Where a deferred delivery stands: its lifetime counts from the first deferral."""

    first_deferred_at: str
    attempts: int = Field(ge=1)
    last_error: str = ""


class Delivery(Frozen):
    """One hand-off: one message, one destination, up to 50 recipients.

    `mailbox` and `app` deliveries settle their recipients; `webhook` (an app's signed
    webhook) and `hook` (a post-ingress hook) deliveries only record what happened."""

    delivery_id: str
    message: MessageRef
    kind: Literal["mailbox", "app", "webhook", "hook"]
    destination: str  # the mailbox host, the app, or the hook
    recipients: list[str] = Field(min_length=1, max_length=50)
    prepend: list[tuple[str, str]] = Field(default_factory=list)  # trace header fields
    route: str = ""  # whose delivery policy applies, when not the destination's (hooks)
    deferral: Deferral | None = None

    @property
    def settles(self) -> bool:
        return self.kind in ("mailbox", "app")

    @property
    def policy_route(self) -> str:
        return self.route or self.destination


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


class DeferInput(Frozen):
    """What the Defer state gets: the delivery and the transient error its retries ended on."""

    delivery: Delivery
    error: StepError


class Redelivery(Frozen):
    """Input of an execution that re-runs deliveries (deferred or redriven), not a message."""

    deliveries: list[Delivery] = Field(min_length=1)


class DeferredDelivery(Frozen):
    """A record of the deferred queue."""

    record_id: str
    due_at: str
    delivery: Delivery


class QuarantineInput(Frozen):
    bucket: str
    key: str
    error: StepError
    envelope: Envelope | None = None
