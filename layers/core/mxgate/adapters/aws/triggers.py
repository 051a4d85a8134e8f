"""What reaches the Start function, read into the halves of the arrival join (workflow.arrival):

- S3's "Object Created" event as EventBridge delivers it: the object Mail Manager's WriteToS3
  stored (read with a model of the fields the join needs: powertools' parser model of it costs
  a cold start about 70 ms, for fields the join never reads);
- the event of Mail Manager's InvokeLambda action: the SMTP envelope;
- a message of the arrival-check queue (SQS): look again at a message still half-arrived.

The InvokeLambda event is the classic SES receiving event (`Records[].ses.mail/receipt`).
What we read of it, and how sure we are (MAIL_MANAGER.md, docs/deploy.md):

- `mail.messageId`: Mail Manager's message id, the join key.
- `mail.source`: the envelope sender (MAIL FROM), as in every SES receiving event.
- `receipt.recipients`: the envelope recipients (RCPT TO) the rule matched, Bcc included. The
  classic event documents this field as the RCPT TO addresses its rule matched; `mail.
  destination` is documented from the header fields and is never used.
- HELO, the connecting IP and TLS: no field of the documented event carries them
  (*unconfirmed* whether Mail Manager adds any). They are read from the topmost Received field
  of `mail.headers`, and only when its `by` host is Mail Manager's (a name ending in
  `trusted_by`, `.amazonaws.com` by default): a Received field the sender wrote itself never
  counts. Without one they stay unknown and SPF says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from mxgate.errors import PermanentError
from mxgate.message.received import read_received, tls_session
from mxgate.records import Envelope
from mxgate.workflow.arrival import envelope_arrival, object_arrival
from mxgate.workflow.model import Arrival

MAIL_MANAGER_HOSTS = ".amazonaws.com"


class SesHeader(BaseModel):
    name: str
    value: str


class SesMail(BaseModel):
    timestamp: datetime
    source: str  # the envelope sender (MAIL FROM)
    messageId: str  # noqa: N815 -- the event's own spelling
    headers: list[SesHeader] = Field(default_factory=list)


class SesReceipt(BaseModel):
    """powertools' own SesModel pins `action` to a Lambda `Event` invocation, which would refuse
    REQUEST_RESPONSE invocations; this model reads only what the join needs."""

    recipients: list[str] = Field(min_length=1)  # the envelope recipients the rule matched


class SesMessage(BaseModel):
    mail: SesMail
    receipt: SesReceipt


class SesRecord(BaseModel):
    eventSource: Literal["aws:ses"]  # noqa: N815
    ses: SesMessage


class SesReceivingEvent(BaseModel):
    Records: list[SesRecord] = Field(min_length=1, max_length=1)


class S3Bucket(BaseModel):
    name: str


class S3Object(BaseModel):
    key: str  # as S3's EventBridge event writes it (Mail Manager's keys are message ids)


class S3ObjectDetail(BaseModel):
    bucket: S3Bucket
    object: S3Object


class S3ObjectCreated(BaseModel):
    """S3's event on EventBridge: what the join reads of it."""

    source: str
    detail_type: str = Field(alias="detail-type")
    time: datetime  # EventBridge's envelope: an event without one is not S3's
    detail: S3ObjectDetail


class ArrivalCheck(BaseModel):
    arrival_check: str  # the message id


def is_arrival_check(event: Mapping[str, Any]) -> bool:
    records = event.get("Records")
    return isinstance(records, list) and any(
        isinstance(r, Mapping) and r.get("eventSource") == "aws:sqs" for r in records
    )


def read_arrival(event: Mapping[str, Any], trusted_by: str = MAIL_MANAGER_HOSTS) -> Arrival:
    """The half of a message an event brings; a clear PermanentError for anything else."""
    try:
        if "detail-type" in event:
            return _from_eventbridge(event)
        if "Records" in event:
            return envelope_arrival(mail_manager_envelope(event, trusted_by))
    except ValidationError as error:
        raise PermanentError(f"not an event the Start function reads: {error}") from error
    raise PermanentError(
        "not an event the Start function reads: expected S3 Object Created (EventBridge) or "
        f"Mail Manager's InvokeLambda event, got keys {sorted(event)[:10]}"
    )


def _from_eventbridge(event: Mapping[str, Any]) -> Arrival:
    notification = S3ObjectCreated.model_validate(event)
    if notification.source != "aws.s3" or notification.detail_type != "Object Created":
        raise PermanentError(
            f"not an S3 Object Created event: {notification.source} {notification.detail_type}"
        )
    detail = notification.detail
    return object_arrival(detail.bucket.name, detail.object.key)


def mail_manager_envelope(
    event: Mapping[str, Any], trusted_by: str = MAIL_MANAGER_HOSTS
) -> Envelope:
    """The SMTP envelope in Mail Manager's InvokeLambda event (see the module's notes)."""
    ses = SesReceivingEvent.model_validate(event).Records[0].ses
    envelope = Envelope(
        message_id=ses.mail.messageId,
        mail_from="" if ses.mail.source == "<>" else ses.mail.source,
        recipients=list(dict.fromkeys(ses.receipt.recipients)),
        received_at=ses.mail.timestamp,
    )
    received = next((h.value for h in ses.mail.headers if h.name.lower() == "received"), None)
    hop = read_received(received) if received is not None else None
    if received is None or hop is None or not hop.by.endswith(trusted_by.lower()):
        return envelope  # HELO, IP and TLS stay unknown
    tls = tls_session(received) if hop.tls else None
    return envelope.model_copy(
        update={
            "helo": hop.helo,
            "source_ip": hop.ip,
            "tls_protocol": tls.protocol if tls else None,
            "tls_cipher": tls.cipher if tls else None,
            "tls_cipher_bits": tls.bits if tls else None,
            "authenticated": hop.protocol.upper().endswith("A"),
        }
    )


def check_body(message_id: str) -> str:
    return ArrivalCheck(arrival_check=message_id).model_dump_json()
