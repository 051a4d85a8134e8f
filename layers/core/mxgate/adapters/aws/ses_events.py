"""What SES reports about the mail it sent for us: configuration set events, as the event
destination publishes them to EventBridge (source `aws.ses`, detail-type `Email Delivered`,
`Email Bounced`, ...), read into the core's ProviderEvent.

The detail is SES's event publishing record (SES Developer Guide, "Contents of event data that
Amazon SES publishes": `eventType`, `mail` with the message tags, and one object named after
the event type). Each delivery SES sends carries two message tags (`mxgate-message`,
`mxgate-route`, set by SesTransport), so an event names our message and the route whose
routing domain the recipients were rewritten to. Only the fields used are read; SES adds more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mxgate.errors import PermanentError
from mxgate.workflow.model import ProviderEvent

MESSAGE_TAG = "mxgate-message"
ROUTE_TAG = "mxgate-route"

DETAIL_TYPES = (
    "Email Delivered",
    "Email Bounced",
    "Email Complaint Received",
    "Email Rejected",
    "Email Delivery Delayed",
)


class _Read(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore", populate_by_name=True)


class SesMail(_Read):
    message_id: str = Field(alias="messageId")
    timestamp: datetime
    tags: dict[str, list[str]] = Field(default_factory=dict)


class Delivery(_Read):
    timestamp: datetime
    recipients: list[str]
    smtp_response: str = Field(default="", alias="smtpResponse")
    reporting_mta: str = Field(default="", alias="reportingMTA")


class BouncedRecipient(_Read):
    email_address: str = Field(alias="emailAddress")
    status: str = ""
    diagnostic_code: str = Field(default="", alias="diagnosticCode")


class Bounce(_Read):
    timestamp: datetime
    bounce_type: str = Field(alias="bounceType")  # Permanent | Transient | Undetermined
    bounce_sub_type: str = Field(default="", alias="bounceSubType")
    bounced_recipients: list[BouncedRecipient] = Field(alias="bouncedRecipients")
    reporting_mta: str = Field(default="", alias="reportingMTA")


class ComplainedRecipient(_Read):
    email_address: str = Field(alias="emailAddress")


class Complaint(_Read):
    timestamp: datetime
    complained_recipients: list[ComplainedRecipient] = Field(alias="complainedRecipients")
    feedback_type: str = Field(default="", alias="complaintFeedbackType")


class Reject(_Read):
    reason: str


class DelayedRecipient(_Read):
    email_address: str = Field(alias="emailAddress")
    status: str = ""
    diagnostic_code: str = Field(default="", alias="diagnosticCode")


class DeliveryDelay(_Read):
    timestamp: datetime
    delay_type: str = Field(default="", alias="delayType")
    delayed_recipients: list[DelayedRecipient] = Field(alias="delayedRecipients")


class SesEventRecord(_Read):
    event_type: Literal["Delivery", "Bounce", "Complaint", "Reject", "DeliveryDelay"] = Field(
        alias="eventType"
    )
    mail: SesMail
    delivery: Delivery | None = None
    bounce: Bounce | None = None
    complaint: Complaint | None = None
    reject: Reject | None = None
    delivery_delay: DeliveryDelay | None = Field(default=None, alias="deliveryDelay")


class SesEventBridgeEvent(_Read):
    source: Literal["aws.ses"]
    detail_type: str = Field(alias="detail-type")
    detail: SesEventRecord


def _reasons(recipients: Sequence[BouncedRecipient | DelayedRecipient]) -> dict[str, str]:
    """Each recipient's status and diagnostic, as the reporting MTA gave them."""
    return {
        r.email_address: " ".join(filter(None, (r.status, r.diagnostic_code))) for r in recipients
    }


def _tag(mail: SesMail, name: str) -> str | None:
    values = mail.tags.get(name) or []
    return values[0] if values else None


def provider_event(event: Mapping[str, Any]) -> ProviderEvent | None:
    """The event, read; None for mail that is not ours (no tags: a DSN, another sender of the
    account using the same configuration set)."""
    try:
        parsed = SesEventBridgeEvent.model_validate(event)
    except ValueError as error:
        raise PermanentError(
            f"not an SES event the ProviderEvents function reads: {error}"
        ) from error
    record = parsed.detail
    message_id, route = _tag(record.mail, MESSAGE_TAG), _tag(record.mail, ROUTE_TAG)
    if message_id is None or route is None:
        return None
    ses_id = record.mail.message_id
    common = {"message_id": message_id, "route": route, "ses_message_id": ses_id}
    if record.delivery is not None:
        delivery = record.delivery
        return ProviderEvent(
            kind="delivered",
            recipients=delivery.recipients,
            at=delivery.timestamp,
            detail=f"{delivery.smtp_response} (reported by {delivery.reporting_mta or 'SES'})",
            **common,
        )
    if record.bounce is not None:
        bounce = record.bounce
        return ProviderEvent(
            kind="bounced",
            recipients=[r.email_address for r in bounce.bounced_recipients],
            at=bounce.timestamp,
            detail=f"{bounce.bounce_type} bounce ({bounce.bounce_sub_type or 'General'})",
            reasons=_reasons(bounce.bounced_recipients),
            **common,
        )
    if record.complaint is not None:
        complaint = record.complaint
        return ProviderEvent(
            kind="complained",
            recipients=[r.email_address for r in complaint.complained_recipients],
            at=complaint.timestamp,
            detail=f"complaint ({complaint.feedback_type or 'no feedback type'})",
            **common,
        )
    if record.reject is not None:
        return ProviderEvent(
            kind="rejected",
            recipients=[],  # all of the send's recipients
            at=record.mail.timestamp,
            detail=f"SES rejected the message: {record.reject.reason}",
            **common,
        )
    if record.delivery_delay is not None:
        delay = record.delivery_delay
        return ProviderEvent(
            kind="delayed",
            recipients=[r.email_address for r in delay.delayed_recipients],
            at=delay.timestamp,
            detail=f"delivery delayed ({delay.delay_type})",
            reasons=_reasons(delay.delayed_recipients),
            **common,
        )
    raise PermanentError(f"SES {record.event_type} event without its {record.event_type} object")
