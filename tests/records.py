"""Records as the runtimes write them, for tests that need one: a delivery, a dead letter,
deferred work."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mxgate.records import (
    DeferredDelivery,
    DeferredProcessing,
    Delivery,
    DeliveryDeadLetter,
    Envelope,
    MapItem,
    MessageRef,
    RuleSetDeadLetter,
    RuleSetRetry,
    StepRetry,
    StoredMessage,
    SuspendedExecution,
)

AT = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


def a_delivery(
    message_id: str = "m1", recipients: list[str] | None = None, **fields: Any
) -> Delivery:
    destination = fields.pop("destination", "workspace")
    return Delivery(
        delivery_id=fields.pop("delivery_id", f"{message_id}.{destination}.0"),
        message=MessageRef(
            message_id=message_id,
            bucket="mxgate-rawmailbucket",
            key=f"raw/{message_id}",
            digest="d" * 64,
            envelope_sender="bounces@shop.example",
            size=100,
            subject="lunch",
        ),
        kind=fields.pop("kind", "mailbox"),
        destination=destination,
        recipients=recipients or ["alice@nutrition.co"],
        **fields,
    )


def a_dead_letter(
    record_id: str, recipients: list[str] | None = None, at: datetime = AT
) -> DeliveryDeadLetter:
    delivery = a_delivery(recipients=recipients)
    return DeliveryDeadLetter(
        record_id=record_id,
        kind=delivery.kind,
        message_id=delivery.message.message_id,
        destination=delivery.destination,
        recipients=delivery.recipients,
        delivery=delivery,
        error="PermanentError",
        reason="PermanentError: 550 5.1.1 no such user",
        at=at,
    )


def a_rule_set_dead_letter(record_id: str, message_id: str = "m2") -> RuleSetDeadLetter:
    envelope = Envelope(
        message_id=message_id, mail_from="bounces@shop.example", recipients=["bob@nutrition.co"]
    )
    return RuleSetDeadLetter(
        record_id=record_id,
        message_id=message_id,
        destination="RuleSet",
        recipients=["bob@nutrition.co"],
        envelope=envelope,
        message=StoredMessage(bucket="mxgate-dead-letters", key=f"rules/{message_id}"),
        failures={"bob@nutrition.co": ["rule relay: Relay: 550 5.7.1 denied"]},
        error="PermanentError",
        reason="rule relay: Relay: 550 5.7.1 denied",
        at=AT,
    )


def a_deferred_delivery(record_id: str, due_at: datetime = AT, **fields: Any) -> DeferredDelivery:
    return DeferredDelivery(record_id=record_id, due_at=due_at, delivery=a_delivery(**fields))


def a_rule_set_retry(record_id: str, message_id: str = "m3", due_at: datetime = AT) -> RuleSetRetry:
    return RuleSetRetry(
        record_id=record_id,
        due_at=due_at,
        envelope=Envelope(
            message_id=message_id,
            mail_from="bounces@shop.example",
            recipients=["carol@nutrition.co"],
        ),
        recipients=["carol@nutrition.co"],
        spool_file=f"{message_id}.msg",
        first_failed_at=due_at,
        attempts=1,
        last_error="rule relay: Relay: 451 4.3.0 try later",
    )


def deferred_processing(
    record_id: str, message_id: str = "m4", due_at: datetime = AT
) -> DeferredProcessing:
    return DeferredProcessing(
        record_id=record_id,
        due_at=due_at,
        message_id=message_id,
        bucket="mxgate-rawmailbucket",
        key=f"raw/{message_id}",
        envelope=Envelope(
            message_id=message_id,
            mail_from="bounces@shop.example",
            recipients=["erin@nutrition.co"],
        ),
        first_failed_at=due_at,
        attempts=1,
        last_error="TransientError: state database full",
    )


def a_step_retry(record_id: str, message_id: str = "m5", due_at: datetime = AT) -> StepRetry:
    delivery = a_delivery(message_id)
    return StepRetry(
        record_id=record_id,
        due_at=due_at,
        message_id=message_id,
        recipients=delivery.recipients,
        error="TransientError",
        attempt=1,
        execution=SuspendedExecution(
            name=message_id,
            items=[MapItem(state="Deliver", index=0)],
            state="DeliverOne",
            document={"delivery": delivery.model_dump(mode="json")},
            context={"Map": {"Item": {"Index": 0}}},
            attempts={0: 1},
        ),
    )
