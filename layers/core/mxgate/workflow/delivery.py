"""The delivery steps of the state machine, and redrive.

- `deliver`: one attempt of one delivery; safe to repeat (idempotency keys, settled recipients
  are skipped). Per recipient: success settles it; a permanent refusal next to transient ones
  is dead-lettered at once (as Postfix bounces it at once) while the rest are retried.
- `defer`: after the state machine's quick retries, the delivery waits in the deferred queue
  for its next attempt, on a doubling schedule, until the route's queue lifetime runs out;
  then the sender gets a DSN (RFC 3464) if the route asks for one, or it is dead-lettered.
- `dead_letter`: the delivery's record goes to the dead letters, for `mxgate dlq`.
- `redrive`: a dead letter goes back to the deferred queue, due now.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from mxgate.delivery.appevent import app_event, fit_event
from mxgate.delivery.claimcheck import claim_check_stub
from mxgate.delivery.dsn import expiry_dsn, should_notify
from mxgate.delivery.sender import apply_sender_policy
from mxgate.errors import PermanentError, PolicyError, TransientError
from mxgate.message.attachments import ObjectStoreAttachments
from mxgate.message.dsn import BounceReport, delivery_status_notification
from mxgate.message.headers import prepend_headers, remove_authentication_results
from mxgate.message.model import ParsedMessage
from mxgate.message.parse import parse_message, parse_stream
from mxgate.ports import Clock, DeadLetters, Deferrals, SendResult, Timeline, Transport
from mxgate.routing.config import DeliveryPolicy
from mxgate.timeline import Outcome, Stage, TimelineEvent
from mxgate.workflow import records
from mxgate.workflow.model import (
    DeadLetterInput,
    DeferInput,
    Deferral,
    DeferredDelivery,
    DeliverInput,
    Delivery,
    DeliveryResult,
    MessageRef,
    RecipientResult,
    StepError,
)
from mxgate.workflow.services import Services

DEFERRED = "deferred"  # a RecipientResult outcome: not terminal, waiting in the deferred queue


def idempotency_key(delivery: Delivery, recipient: str) -> str:
    return (
        f"{delivery.message.digest}:{recipient.casefold()}:{delivery.kind}:{delivery.destination}"
    )


def _settle(
    services: Services, delivery: Delivery, recipient: str, outcome: Outcome, detail: str
) -> None:
    """A recipient of this delivery reaches its terminal state, on the delivery's route."""
    records.settle(
        services,
        delivery.message.message_id,
        recipient,
        outcome=outcome,
        route=delivery.destination,
        detail=detail,
    )


def _pending(delivery: Delivery, services: Services) -> tuple[list[RecipientResult], list[str]]:
    """(recipients already done, recipients still to do).

    A delivery that settles recipients is done for those with a terminal state: that state is
    its idempotency record (one write, so no window between "sent" and "recorded" beyond the
    send itself). Webhooks and hooks settle nothing and keep idempotency keys instead."""
    if delivery.settles:
        settled = {
            s.recipient.casefold(): s for s in services.timeline.states(delivery.message.message_id)
        }
    done: list[RecipientResult] = []
    pending: list[str] = []
    for recipient in delivery.recipients:
        if delivery.settles:
            state = settled.get(recipient.casefold())
            if state is None:
                pending.append(recipient)
            else:
                done.append(
                    RecipientResult(
                        recipient=recipient, outcome=state.outcome.value, detail="already settled"
                    )
                )
            continue
        previous = services.idempotency.seen(idempotency_key(delivery, recipient))
        if previous is None:
            pending.append(recipient)
        else:
            done.append(
                RecipientResult(recipient=recipient, outcome=previous, detail="already done")
            )
    return done, pending


def reason_of(error: StepError) -> str:
    """The error message of a Catch's Cause (JSON from Lambda and the local runner), or it all."""
    try:
        cause = json.loads(error.Cause)
    except ValueError:
        cause = None
    message = cause.get("errorMessage") if isinstance(cause, dict) else None
    return f"{error.Error}: {message or error.Cause}".strip().rstrip(":")


# ------------------------------------------------------------------------------- deliver


def deliver(request: DeliverInput, services: Services) -> DeliveryResult:
    """Hand one delivery to its mailbox host, application, webhook or hook; safe to repeat."""
    delivery = request.delivery
    done, pending = _pending(delivery, services)
    if pending:
        if delivery.kind == "mailbox":
            done += _send_to_mailbox(delivery, pending, services)
        elif delivery.kind == "app":
            done += _hand_to_app(delivery, pending, services)
        elif delivery.kind == "bounce":
            done += _send_bounce(delivery, pending, services)
        elif delivery.kind == "webhook":
            done += _post_webhook(delivery, pending, services)
        else:
            done += _call_hook(delivery, pending, services)
    return DeliveryResult(delivery_id=delivery.delivery_id, results=done)


def _links_until(policy: DeliveryPolicy, services: Services) -> datetime:
    """When the download links a delivery hands out stop working (the route's link_lifetime)."""
    return services.clock.now() + timedelta(seconds=policy.link_lifetime)


def _limit(policy: DeliveryPolicy, transport: Transport) -> int | None:
    limits = [n for n in (policy.max_message_bytes, transport.max_message_bytes) if n]
    return min(limits) if limits else None


def _outgoing(
    delivery: Delivery, raw: bytes, transport: Transport, services: Services
) -> tuple[bytes, list[str]]:
    """What goes to the mailbox host: the original bytes, the sender policy applied where the
    transport needs verified senders, trace fields on top; or a claim check if too large."""
    route = delivery.policy_route
    policy = services.routes.policy(route)
    notes: list[str] = []

    def prepared(message: bytes) -> bytes:
        if transport.requires_verified_sender:
            decision = apply_sender_policy(message, route, services.routes)
            if decision.rewritten and decision.detail not in notes:
                notes.append(decision.detail)
            message = decision.raw
        return prepend_headers(message, delivery.prepend)

    outgoing = prepared(raw)
    limit = _limit(policy, transport)
    if limit is None or len(outgoing) <= limit:
        return outgoing, notes
    ref = delivery.message
    if policy.oversize == "dead_letter":
        raise PolicyError(
            f"message of {len(outgoing)} bytes is over the {limit}-byte limit of "
            f"{delivery.destination} (oversize policy: dead_letter)"
        )
    until = None if policy.claim_check_url else _links_until(policy, services)
    link = (
        policy.claim_check_url.format(bucket=ref.bucket, key=ref.key, message_id=ref.message_id)
        if policy.claim_check_url
        else services.objects.link(ref.bucket, ref.key, until)
    )
    stub = claim_check_stub(
        parse_message(raw),
        size=len(outgoing),
        limit=limit,
        link=link,
        gateway_host=services.gateway_host,
        link_expires=until,
    )
    notes.append(f"claim check: {len(outgoing)} bytes over the {limit}-byte limit, stub sent")
    return prepared(stub), notes


def _send_to_mailbox(
    delivery: Delivery, pending: list[str], services: Services
) -> list[RecipientResult]:
    transport = services.transports.get(delivery.destination)
    if transport is None:
        raise PermanentError(f"no transport for mailbox host {delivery.destination!r}")
    ref = delivery.message
    raw = ref.raw(services.objects)
    raw = remove_authentication_results(raw, services.gateway_host)  # a forged "ours" never passes
    outgoing, notes = _outgoing(delivery, raw, transport, services)
    tags = {"mxgate-message": ref.message_id, "mxgate-route": delivery.destination}
    results = transport.send(ref.envelope_sender, pending, outgoing, tags=tags)
    delivered: list[RecipientResult] = []
    transient: list[str] = []
    permanent: list[str] = []
    failures: list[str] = []
    for recipient in pending:
        result = results.get(recipient) or SendResult(ok=False, transient=True, detail="no reply")
        if result.ok:
            detail = "; ".join([result.detail, *notes])
            outcome = Outcome.RELAYED if result.relayed else Outcome.DELIVERED
            _settle(services, delivery, recipient, outcome, detail)
            delivered.append(
                RecipientResult(recipient=recipient, outcome=outcome.value, detail=detail)
            )
            continue
        (transient if result.transient else permanent).append(recipient)
        failures.append(f"{recipient}: {result.detail}")
    if failures:
        services.timeline.record(
            records.event(
                services,
                ref.message_id,
                Stage.ATTEMPT,
                f"{delivery.destination}: " + "; ".join(failures),
            )
        )
    if transient and permanent:
        refused = [f for f in failures if f.split(":", 1)[0] in permanent]
        _dead_letter(
            delivery,
            permanent,
            StepError(Error="PermanentError", Cause="; ".join(refused)),
            services,
        )
    if transient:
        raise TransientError("; ".join(failures))
    if permanent:
        raise PermanentError("; ".join(failures))
    return delivered


def _send_bounce(
    delivery: Delivery, pending: list[str], services: Services
) -> list[RecipientResult]:
    """A DSN (RFC 3464) to the envelope sender for recipients that cannot be delivered (a
    loop): they end `bounced`. No DSN goes to the null sender or a postmaster, which would
    loop again: those are dead-lettered with the reason (the DeadLetter step)."""
    ref = delivery.message
    notice = delivery.bounce
    if notice is None:
        raise PermanentError(f"bounce {delivery.delivery_id} says no reason")
    if not should_notify(ref.envelope_sender):
        sender = ref.envelope_sender or "the null sender"
        raise PolicyError(f"{notice.status} {notice.diagnostic}; no DSN to {sender}")
    if services.bounces is None:
        raise PermanentError(f"{notice.diagnostic}; no transport for DSNs on this runtime")
    now = services.clock.now()
    report = BounceReport(
        reporting_mta=services.gateway_host,
        sender=services.routes.dsn_sender,
        envelope_sender=ref.envelope_sender,
        recipients=pending,
        status=notice.status,
        smtp_reply_code="554",
        diagnostic=notice.diagnostic,
        explanation=None,
        arrival_date=now,
        original_subject=ref.subject,
    )
    dsn = delivery_status_notification(report, ref.raw(services.objects), now)
    result = services.bounces.send("", [ref.envelope_sender], dsn).get(ref.envelope_sender)
    if result is None or not result.ok:
        detail = result.detail if result is not None else "no reply"
        failure = TransientError if result is None or result.transient else PermanentError
        raise failure(f"DSN to {ref.envelope_sender}: {detail}")
    detail = f"{notice.status} {notice.diagnostic}; DSN sent to {ref.envelope_sender}"
    return _bounced(delivery, pending, detail, services)


def _bounced(
    delivery: Delivery, recipients: list[str], detail: str, services: Services
) -> list[RecipientResult]:
    """The recipients end `bounced`: the DSN that says so went to the envelope sender."""
    for recipient in recipients:
        _settle(services, delivery, recipient, Outcome.BOUNCED, detail)
    return [
        RecipientResult(recipient=r, outcome=Outcome.BOUNCED.value, detail=detail[:500])
        for r in recipients
    ]


def _parsed_with_attachments(ref: MessageRef, services: Services) -> ParsedMessage:
    """The parsed message with each attachment stored content-addressed (`attachments/<sha256>`,
    where the process step put them already: stored once, whoever asks)."""
    store = ObjectStoreAttachments(services.objects, ref.bucket)
    with ref.open(services.objects) as stream:
        return parse_stream(stream, limits=services.message_limits, store=store)


def _app_events(
    delivery: Delivery, recipients: list[str], services: Services
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(recipient, event) for each recipient: what the app's queue and its webhook receive."""
    ref = delivery.message
    parsed = _parsed_with_attachments(ref, services)
    until = _links_until(services.routes.policy(delivery.policy_route), services)
    for recipient in recipients:
        event = app_event(
            ref=ref,
            parsed=parsed,
            fields={"app": delivery.destination, "recipient": recipient},
            recipients=[recipient],
            objects=services.objects,
            received_at=services.clock.now().isoformat(),
            links_until=until,
        )
        name = f"{ref.message_id}.{recipient.replace('/', '_')}"
        yield recipient, fit_event(event, objects=services.objects, bucket=ref.bucket, name=name)


def _hand_to_app(
    delivery: Delivery, recipients: list[str], services: Services
) -> list[RecipientResult]:
    results = []
    for recipient, event in _app_events(delivery, recipients, services):
        where = services.app_events.publish(
            delivery.destination, f"{delivery.message.message_id}.{recipient}", event
        )
        _settle(services, delivery, recipient, Outcome.HANDED_TO_APP, where)
        results.append(
            RecipientResult(recipient=recipient, outcome=Outcome.HANDED_TO_APP.value, detail=where)
        )
    return results


def _post_webhook(
    delivery: Delivery, recipients: list[str], services: Services
) -> list[RecipientResult]:
    app = services.routes.apps.get(delivery.destination)
    webhook = app.webhook if app is not None else None
    if webhook is None:
        raise PermanentError(f"app {delivery.destination} has no webhook")
    if services.webhooks is None:
        raise PermanentError("webhooks are not set up on this runtime")
    results = []
    for recipient, event in _app_events(delivery, recipients, services):
        answer = services.webhooks.post(
            webhook.url,
            webhook.secret_env,
            f"{delivery.message.message_id}.{recipient}",  # the app event's id too
            json.dumps(event, ensure_ascii=False).encode(),
            webhook.timeout,
        )
        services.idempotency.remember(idempotency_key(delivery, recipient), "posted")
        services.timeline.record(
            records.event(
                services,
                delivery.message.message_id,
                Stage.ATTEMPT,
                f"webhook: {answer}",
                recipient,
            )
        )
        results.append(RecipientResult(recipient=recipient, outcome="posted", detail=answer))
    return results


def _call_hook(
    delivery: Delivery, recipients: list[str], services: Services
) -> list[RecipientResult]:
    if services.hooks is None:
        raise PermanentError("hooks are not set up on this runtime")
    ref = delivery.message
    event = fit_event(
        app_event(
            ref=ref,
            parsed=_parsed_with_attachments(ref, services),
            fields={"hook": delivery.destination, "route": delivery.policy_route},
            recipients=recipients,
            objects=services.objects,
            received_at=services.clock.now().isoformat(),
            links_until=_links_until(services.routes.policy(delivery.policy_route), services),
        ),
        objects=services.objects,
        bucket=ref.bucket,
        name=f"{ref.message_id}.hook-{delivery.destination}.{delivery.delivery_id[-8:]}",
    )
    answer = services.hooks.call(delivery.destination, delivery.delivery_id, event)
    for recipient in recipients:
        services.idempotency.remember(idempotency_key(delivery, recipient), "hooked")
    services.timeline.record(
        records.event(
            services, ref.message_id, Stage.ATTEMPT, f"hook {delivery.destination}: {answer}"
        )
    )
    return [RecipientResult(recipient=r, outcome="hooked", detail=answer) for r in recipients]


# ------------------------------------------------------------------------------- dead letters


def recipients_digest(recipients: list[str]) -> str:
    """Eight hex digits naming a set of recipients, whatever their order and case."""
    folded = sorted({r.casefold() for r in recipients})
    return hashlib.sha256(",".join(folded).encode()).hexdigest()[:8]


def _dead_letter_id(delivery: Delivery, recipients: list[str], services: Services) -> str:
    """`<delivery id>` for a record of all the delivery's recipients, `<delivery id>.<digest>`
    for a part of them. A record is written over by one of the same id, so the plain id goes to
    a whole delivery only when it is free or holds these same recipients (the step repeated):
    a redriven part that fails again is a whole delivery by itself, and must not take the place
    of the rest of its delivery, dead-lettered meanwhile."""
    plain = delivery.delivery_id
    if recipients_digest(recipients) == recipients_digest(delivery.recipients):
        existing = services.dead_letters.get(plain)
        held = existing.get("recipients") if existing is not None else None
        if existing is None or (
            isinstance(held, list)
            and recipients_digest([str(r) for r in held]) == recipients_digest(recipients)
        ):
            return plain
    return f"{plain}.{recipients_digest(recipients)}"


def _dead_letter(
    delivery: Delivery, recipients: list[str], error: StepError, services: Services
) -> list[RecipientResult]:
    if not recipients:
        return []
    reason = reason_of(error)
    record_id = _dead_letter_id(delivery, recipients, services)
    services.dead_letters.put(
        record_id,
        {
            "delivery": delivery.model_copy(update={"recipients": recipients}).model_dump(
                mode="json"
            ),
            "message_id": delivery.message.message_id,
            "kind": delivery.kind,
            "destination": delivery.destination,
            "recipients": recipients,
            "error": error.Error,
            "cause": error.Cause,
            "reason": reason[:1000],
            "at": services.clock.now().isoformat(),
        },
    )
    detail = f"dead letter {record_id}: {reason}"
    if delivery.settles:
        for recipient in recipients:
            _settle(services, delivery, recipient, Outcome.DEAD_LETTERED, detail)
    else:
        services.timeline.record(
            records.event(
                services,
                delivery.message.message_id,
                Stage.ATTEMPT,
                f"{delivery.kind} {delivery.destination}: {detail}",
            )
        )
    return [
        RecipientResult(recipient=r, outcome=Outcome.DEAD_LETTERED.value, detail=detail[:500])
        for r in recipients
    ]


def dead_letter(request: DeadLetterInput, services: Services) -> DeliveryResult:
    """Record a delivery that cannot be completed, with its failure, for `mxgate dlq`."""
    delivery = request.delivery
    done, left = _pending(delivery, services)
    results = _dead_letter(delivery, left, request.error, services)
    return DeliveryResult(delivery_id=delivery.delivery_id, results=done + results)


# ------------------------------------------------------------------------------- deferral


def backoff(policy: DeliveryPolicy, attempts: int, seed: str) -> float:
    """Seconds until the next attempt: doubling from backoff_min up to backoff_max, with a
    ±10% spread (seeded by the delivery, so it is repeatable) so a host that comes back is not
    hit by every deferred delivery at once."""
    base = min(policy.backoff_max, policy.backoff_min * 2 ** min(attempts - 1, 30))
    return float(base) * random.Random(f"{seed}#{attempts}").uniform(0.9, 1.1)  # noqa: S311 -- not crypto


def defer(request: DeferInput, services: Services) -> DeliveryResult:
    """Schedule the delivery's next attempt, or expire it once its lifetime has run out."""
    delivery = request.delivery
    done, left = _pending(delivery, services)
    if not left:
        return DeliveryResult(delivery_id=delivery.delivery_id, results=done)
    reason = reason_of(request.error)
    policy = services.routes.policy(delivery.policy_route)
    now = services.clock.now()
    previous = delivery.deferral
    first = datetime.fromisoformat(previous.first_deferred_at) if previous else now
    attempts = (previous.attempts if previous else 0) + 1
    give_up = first + timedelta(seconds=policy.queue_lifetime)
    if services.deferrals is None:
        error = StepError(Error="TransientError", Cause=f"{reason}; no deferred queue here")
        return DeliveryResult(
            delivery_id=delivery.delivery_id,
            results=done + _dead_letter(delivery, left, error, services),
        )
    if now >= give_up:
        return DeliveryResult(
            delivery_id=delivery.delivery_id,
            results=done + _expire(delivery, left, reason, first, services),
        )
    due = min(now + timedelta(seconds=backoff(policy, attempts, delivery.delivery_id)), give_up)
    waiting = delivery.model_copy(
        update={
            "recipients": left,
            "deferral": Deferral(
                first_deferred_at=first.isoformat(), attempts=attempts, last_error=reason[:500]
            ),
        }
    )
    # Named by the recipients too: a redriven part of this delivery counts its own attempts,
    # and a record is written over by one of the same id.
    record_id = f"{delivery.delivery_id}#{recipients_digest(left)}#{attempts}"
    services.deferrals.schedule(
        record_id,
        due,
        DeferredDelivery(record_id=record_id, due_at=due.isoformat(), delivery=waiting).model_dump(
            mode="json"
        ),
    )
    detail = (
        f"{delivery.kind} {delivery.destination}: {reason}; deferral {attempts}, next attempt "
        f"{due.isoformat(timespec='seconds')}, gives up {give_up.isoformat(timespec='seconds')}"
    )
    services.timeline.record_many(
        [
            records.event(services, delivery.message.message_id, Stage.DEFERRED, detail, r)
            for r in left
        ]
    )
    return DeliveryResult(
        delivery_id=delivery.delivery_id,
        results=done
        + [RecipientResult(recipient=r, outcome=DEFERRED, detail=detail[:500]) for r in left],
    )


def _expire(
    delivery: Delivery, left: list[str], reason: str, first: datetime, services: Services
) -> list[RecipientResult]:
    """The lifetime ran out: a DSN to the sender if the route asks for one, else a dead letter."""
    ref = delivery.message
    policy = services.routes.policy(delivery.policy_route)
    waited = services.clock.now() - first
    why = f"gave up after {waited.total_seconds() / 3600:.1f}h deferred; last error {reason}"
    if not (delivery.settles and policy.dsn_on_expiry and should_notify(ref.envelope_sender)):
        return _dead_letter(delivery, left, StepError(Error="Expired", Cause=why), services)
    if services.bounces is None:
        cause = f"{why}; no transport for DSNs here"
        return _dead_letter(delivery, left, StepError(Error="Expired", Cause=cause), services)
    original = ref.raw(services.objects)
    dsn = expiry_dsn(
        original=original,
        envelope_sender=ref.envelope_sender,
        recipients=left,
        diagnostic=reason,
        reporting_mta=services.gateway_host,
        dsn_from=services.routes.dsn_sender,
        arrival=None,
        last_attempt=services.clock.now(),
        envelope_id=ref.message_id,
    )
    result = services.bounces.send("", [ref.envelope_sender], dsn).get(ref.envelope_sender)
    if result is None or not result.ok:
        detail = result.detail if result is not None else "no reply"
        if result is None or result.transient:
            raise TransientError(f"DSN to {ref.envelope_sender}: {detail}")
        cause = f"{why}; the DSN to {ref.envelope_sender} was refused: {detail}"
        return _dead_letter(delivery, left, StepError(Error="Expired", Cause=cause), services)
    return _bounced(delivery, left, f"{why}; DSN sent to {ref.envelope_sender}", services)


# ------------------------------------------------------------------------------- redrive


def redrive(
    record_id: str,
    *,
    dead_letters: DeadLetters,
    deferrals: Deferrals,
    timeline: Timeline,
    clock: Clock,
) -> DeferredDelivery:
    """Put a dead letter back in the deferred queue, due now, with a fresh lifetime. Its
    dead-lettered recipients are reopened (a success settles them anew); recipients delivered
    in the meantime keep their state, which the delivery skips, so nothing is sent twice."""
    record = dead_letters.get(record_id)
    if record is None:
        raise PermanentError(f"no dead letter {record_id!r}")
    delivery = Delivery.model_validate(record["delivery"])
    recipients = record.get("recipients")
    if isinstance(recipients, list) and recipients:
        delivery = delivery.model_copy(update={"recipients": [str(r) for r in recipients]})
    delivery = delivery.model_copy(update={"deferral": None})
    now = clock.now()
    if delivery.settles:
        states = {s.recipient.casefold(): s for s in timeline.states(delivery.message.message_id)}
        for recipient in delivery.recipients:
            state = states.get(recipient.casefold())
            if state is not None and state.outcome is Outcome.DEAD_LETTERED:
                timeline.reopen(delivery.message.message_id, recipient)
    queued = DeferredDelivery(
        record_id=f"{delivery.delivery_id}#redrive-{now.strftime('%Y%m%dT%H%M%S%f')}",
        due_at=now.isoformat(),
        delivery=delivery,
    )
    deferrals.schedule(queued.record_id, now, queued.model_dump(mode="json"))
    timeline.record(
        TimelineEvent(
            message_id=delivery.message.message_id,
            at=now,
            stage=Stage.REDRIVEN,
            detail=f"dead letter {record_id} redriven: {len(delivery.recipients)} recipient(s) "
            f"queued for {delivery.kind} {delivery.destination}",
        )
    )
    dead_letters.remove(record_id)
    return queued
