"""The documents the state machine passes between steps (JSON on Step Functions)."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from datetime import datetime
from typing import BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field

from mxgate.authn.model import Authentication
from mxgate.ports import ObjectStore


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Envelope(Frozen):
    """The SMTP envelope as the ingress saw it."""

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
    source: Literal["envelope", "headers"] = "envelope"  # headers: no envelope was recorded
    ingress_point: str = ""  # the Mail Manager ingress point (logical id) that accepted it


class ProcessInput(Frozen):
    bucket: str
    key: str
    envelope: Envelope | None = None  # when the trigger carries it (InvokeLambda's event)


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


class BounceNotice(Frozen):
    """Why the recipients of a `bounce` delivery are bounced: the DSN's status and reason."""

    status: str  # enhanced status code (RFC 3463), e.g. 5.4.6
    diagnostic: str


class Delivery(Frozen):
    """One hand-off: one message, one destination, up to 50 recipients.

    `mailbox` and `app` deliveries settle their recipients, and so does `bounce` (a DSN to
    the envelope sender for recipients that cannot be delivered, such as a loop's); `webhook`
    (an app's signed webhook) and `hook` (a post-ingress hook) deliveries only record what
    happened."""

    delivery_id: str
    message: MessageRef
    kind: Literal["mailbox", "app", "webhook", "hook", "bounce"]
    destination: str  # the mailbox host, the app, the hook, or the sender (bounce)
    recipients: list[str] = Field(min_length=1, max_length=50)
    prepend: list[tuple[str, str]] = Field(default_factory=list)  # trace header fields
    route: str = ""  # whose delivery policy applies, when not the destination's (hooks)
    deferral: Deferral | None = None
    bounce: BounceNotice | None = None  # kind bounce: why

    @property
    def settles(self) -> bool:
        return self.kind in ("mailbox", "app", "bounce")

    @property
    def policy_route(self) -> str:
        return self.route or self.destination


class ProcessOutput(Frozen):
    message: MessageRef
    deliveries: list[Delivery]
    authentication: Authentication | None = None  # the sender checks, for routes to use
    quarantined: list[str] = Field(default_factory=list)  # recipients held for their content


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

    stored: ProcessInput
    deferral: Deferral | None = None  # how long it has waited; None for a redrive


class ProcessingFailure(Frozen):
    """What DeferProcessing and DeadLetterProcessing get: the stored message Process could not
    handle, how long it has been deferred, and the error its retries ended on."""

    stored: ProcessInput
    deferral: Deferral | None = None
    error: StepError


class DeferredProcessing(Frozen):
    """A record of the deferred queue that runs a stored message through Process again."""

    record_id: str
    due_at: str
    stored: ProcessInput
    deferral: Deferral | None = None

    @staticmethod
    def describes(document: Mapping[str, object]) -> bool:
        return "stored" in document
