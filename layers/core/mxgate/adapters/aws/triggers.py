"""What may start the Process function, read into one `ProcessInput`.

- the document the state machine passes: `{"bucket": ..., "key": ...}`;
- the S3 "Object Created" event as EventBridge delivers it (for a direct EventBridge ->
  Lambda target), read with the powertools parser model;
- the classic SES receiving event, the payload of Mail Manager's InvokeLambda action. It names
  no object, so the message is the one WriteToS3 stored under the raw prefix and the SES message
  id (an assumption: AWS does not document WriteToS3's key naming), unless its action names a
  bucket and key. It does carry the SMTP envelope, which WriteToS3 does not store: that is kept
  beside the message, as the local ingress keeps it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import S3EventNotificationEventBridgeModel
from pydantic import BaseModel, Field, ValidationError

from mxgate.errors import PermanentError
from mxgate.ports import ObjectStore
from mxgate.records import Envelope, message_id_of
from mxgate.workflow.envelope import store_envelope
from mxgate.workflow.model import ProcessInput


class SesReceiptAction(BaseModel):
    """`receipt.action`: `Lambda` for InvokeLambda; an `S3` action names the stored object.

    powertools' own SesModel pins this to a Lambda `Event` invocation, which would refuse Mail
    Manager's `REQUEST_RESPONSE` invocations; this model reads only what Process needs.
    """

    type: str
    bucketName: str | None = None  # noqa: N815 -- the event's own spelling
    objectKey: str | None = None  # noqa: N815


class SesMail(BaseModel):
    timestamp: datetime
    source: str  # the envelope sender (MAIL FROM)
    messageId: str  # noqa: N815


class SesReceipt(BaseModel):
    recipients: list[str] = Field(min_length=1)  # the envelope recipients this action serves
    action: SesReceiptAction


class SesMessage(BaseModel):
    mail: SesMail
    receipt: SesReceipt


class SesRecord(BaseModel):
    eventSource: Literal["aws:ses"]  # noqa: N815
    ses: SesMessage


class SesReceivingEvent(BaseModel):
    Records: list[SesRecord] = Field(min_length=1, max_length=1)


@dataclass(frozen=True)
class Trigger:
    request: ProcessInput
    envelope: Envelope | None = None  # the SMTP envelope, when the event carries one


def read_trigger(event: Mapping[str, Any], raw_bucket: str, raw_prefix: str) -> Trigger:
    """The message an event is about; a clear PermanentError for anything else."""
    try:
        if "detail-type" in event:
            return _from_eventbridge(event)
        if "Records" in event:
            return _from_ses(event, raw_bucket, raw_prefix)
        return Trigger(ProcessInput.model_validate(event))
    except ValidationError as error:
        raise PermanentError(f"not an event the Process function reads: {error}") from error


def _from_eventbridge(event: Mapping[str, Any]) -> Trigger:
    notification = parse(event=dict(event), model=S3EventNotificationEventBridgeModel)
    if notification.source != "aws.s3" or notification.detail_type != "Object Created":
        raise PermanentError(
            f"not an S3 Object Created event: {notification.source} {notification.detail_type}"
        )
    detail = notification.detail
    return Trigger(ProcessInput(bucket=detail.bucket.name, key=detail.object.key))


def _from_ses(event: Mapping[str, Any], raw_bucket: str, raw_prefix: str) -> Trigger:
    ses = parse(event=dict(event), model=SesReceivingEvent).Records[0].ses
    action = ses.receipt.action
    if action.bucketName and action.objectKey:
        bucket, key = action.bucketName, action.objectKey
    else:
        bucket, key = raw_bucket, f"{raw_prefix}{ses.mail.messageId}"
    envelope = Envelope(
        message_id=message_id_of(key),
        mail_from=ses.mail.source,
        recipients=ses.receipt.recipients,
        received_at=ses.mail.timestamp,
    )
    return Trigger(ProcessInput(bucket=bucket, key=key, envelope=envelope), envelope)


def keep_envelope(objects: ObjectStore, trigger: Trigger) -> None:
    """Store the event's envelope beside the message (the same bytes again on a replay)."""
    if trigger.envelope is not None:
        store_envelope(objects, trigger.request.bucket, trigger.envelope, trigger.request.key)
