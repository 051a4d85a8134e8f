"""The Defer step: after the state machine's quick retries, a delivery waits in the deferred
queue for its next attempt, on a doubling schedule, until the route's queue lifetime runs out;
then the sender gets a DSN (RFC 3464) if the route asks for one, or it is dead-lettered."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from mxgate.errors import TransientError
from mxgate.message.raw import RawMessage
from mxgate.records import (
    Deferral,
    DeferredDelivery,
    Delivery,
    Outcome,
    Stage,
    recipients_digest,
)
from mxgate.routing.routes import DeliveryPolicy
from mxgate.workflow.dead_letter import dead_letter_recipients
from mxgate.workflow.model import DeferInput, DeliveryResult, RecipientResult, StepError
from mxgate.workflow.pending import pending
from mxgate.workflow.services import Services

DEFERRED = "deferred"  # a RecipientResult outcome: not terminal, waiting in the deferred queue


def backoff(policy: DeliveryPolicy, attempts: int, seed: str) -> float:
    """Seconds until the next attempt: doubling from backoff_min up to backoff_max, with a
    ±10% spread (seeded by the delivery, so it is repeatable) so a host that comes back is not
    hit by every deferred delivery at once."""
    base = min(policy.backoff_max, policy.backoff_min * 2 ** min(attempts - 1, 30))
    return float(base) * random.Random(f"{seed}#{attempts}").uniform(0.9, 1.1)  # noqa: S311 -- not crypto


@dataclass(frozen=True, slots=True)
class Schedule:
    """Where deferred work stands: since when it waits, its attempt, and when it gives up."""

    first: datetime
    attempts: int
    give_up: datetime
    now: datetime

    @classmethod
    def after(cls, previous: Deferral | None, policy: DeliveryPolicy, now: datetime) -> Schedule:
        first = previous.first_deferred_at if previous else now
        attempts = (previous.attempts if previous else 0) + 1
        return cls(first, attempts, first + timedelta(seconds=policy.queue_lifetime), now)

    @property
    def expired(self) -> bool:
        return self.now >= self.give_up

    def due(self, policy: DeliveryPolicy, seed: str) -> datetime:
        """The next attempt: the backoff from now, never past the lifetime."""
        return min(self.now + timedelta(seconds=backoff(policy, self.attempts, seed)), self.give_up)

    def deferral(self, reason: str) -> Deferral:
        return Deferral(first_deferred_at=self.first, attempts=self.attempts, last_error=reason)


def defer(request: DeferInput, services: Services) -> DeliveryResult:
    """Schedule the delivery's next attempt, or expire it once its lifetime has run out."""
    delivery = request.delivery
    done, left = pending(delivery, services)
    if not left:
        return DeliveryResult(delivery_id=delivery.delivery_id, results=done)
    reason = request.error.reason
    policy = services.routes.policy(delivery.policy_route)
    schedule = Schedule.after(delivery.deferral, policy, services.clock.now())
    attempts, give_up = schedule.attempts, schedule.give_up
    if services.deferrals is None:
        error = StepError(Error="TransientError", Cause=f"{reason}; no deferred queue here")
        results = dead_letter_recipients(delivery, left, error, services)
    elif schedule.expired:
        results = _expire(delivery, left, reason, schedule.first, services)
    else:
        due = schedule.due(policy, delivery.delivery_id)
        waiting = delivery.model_copy(
            update={"recipients": left, "deferral": schedule.deferral(reason)}
        )
        # Named by the recipients too: a redriven part of this delivery counts its own
        # attempts, and a record is written over by one of the same id.
        record_id = f"{delivery.delivery_id}#{recipients_digest(left)}#{attempts}"
        services.deferrals.schedule(
            DeferredDelivery(record_id=record_id, due_at=due, delivery=waiting)
        )
        detail = (
            f"{delivery.kind} {delivery.destination}: {reason}; deferral {attempts}, next "
            f"attempt {due.isoformat(timespec='seconds')}, gives up "
            f"{give_up.isoformat(timespec='seconds')}"
        )
        records = services.records
        records.record(
            [records.event(delivery.message.message_id, Stage.DEFERRED, detail, r) for r in left]
        )
        results = [RecipientResult(recipient=r, outcome=DEFERRED, detail=detail) for r in left]
    return DeliveryResult(delivery_id=delivery.delivery_id, results=done + results)


def _expire(
    delivery: Delivery, left: list[str], reason: str, first: datetime, services: Services
) -> list[RecipientResult]:
    """The lifetime ran out: a DSN to the sender if the route asks for one, else a dead letter."""
    from mxgate.message.dsn import expiry_dsn, should_notify  # noqa: PLC0415 -- expiry alone

    ref = delivery.message
    policy = services.routes.policy(delivery.policy_route)
    now = services.clock.now()
    why = f"gave up after {(now - first).total_seconds() / 3600:.1f}h deferred; last error {reason}"

    def dead(cause: str) -> list[RecipientResult]:
        return dead_letter_recipients(
            delivery, left, StepError(Error="Expired", Cause=cause), services
        )

    if not (delivery.settles and policy.dsn_on_expiry and should_notify(ref.envelope_sender)):
        return dead(why)
    if services.bounces is None:
        return dead(f"{why}; no transport for DSNs here")
    dsn = expiry_dsn(
        original=RawMessage.referenced(ref, services.objects).header,
        envelope_sender=ref.envelope_sender,
        recipients=left,
        diagnostic=reason,
        reporting_mta=services.gateway_host,
        dsn_from=services.routes.dsn_sender,
        last_attempt=now,
        envelope_id=ref.message_id,
    )
    replies = services.bounces.send("", [ref.envelope_sender], RawMessage.of(dsn))
    result = replies.get(ref.envelope_sender)
    if result is None or not result.ok:
        detail = result.detail if result is not None else "no reply"
        if result is None or result.transient:
            raise TransientError(f"DSN to {ref.envelope_sender}: {detail}")
        return dead(f"{why}; the DSN to {ref.envelope_sender} was refused: {detail}")
    detail = f"{why}; DSN sent to {ref.envelope_sender}"
    for recipient in left:
        services.records.settle(
            ref.message_id,
            recipient,
            outcome=Outcome.BOUNCED,
            route=delivery.destination,
            detail=detail,
        )
    return [
        RecipientResult(recipient=r, outcome=Outcome.BOUNCED.value, detail=detail) for r in left
    ]
