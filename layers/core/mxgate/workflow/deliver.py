"""The Deliver step: one attempt of one delivery, to a mailbox host, an application, an app's
webhook or a post-ingress hook; safe to repeat (settled recipients and idempotency keys are
skipped). Per recipient: success settles it; a permanent refusal next to transient ones is
dead-lettered at once (as Postfix bounces it at once) while the rest are retried."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from mxgate.delivery.appevent import app_event, fit_event
from mxgate.delivery.claimcheck import claim_check_stub
from mxgate.delivery.sender import apply_sender_policy
from mxgate.errors import PermanentError, PolicyError, TransientError
from mxgate.message.attachments import ObjectStoreAttachments
from mxgate.message.headers import prepend_headers, remove_authentication_results
from mxgate.message.model import ParsedMessage
from mxgate.message.parse import parse_message, parse_stream
from mxgate.ports import SendResult, Transport
from mxgate.records import Delivery, MessageRef, Outcome, Stage
from mxgate.routing.routes import DeliveryPolicy
from mxgate.workflow.dead_letter import dead_letter_recipients
from mxgate.workflow.model import DeliverInput, DeliveryResult, RecipientResult, StepError
from mxgate.workflow.pending import idempotency_key, pending
from mxgate.workflow.services import Services


def deliver(request: DeliverInput, services: Services) -> DeliveryResult:
    """Hand one delivery to its mailbox host, application, webhook or hook; safe to repeat."""
    delivery = request.delivery
    done, left = pending(delivery, services)
    if left:
        if delivery.kind == "mailbox":
            done += send_to_mailbox(delivery, left, services)
        elif delivery.kind == "app":
            done += hand_to_app(delivery, left, services)
        elif delivery.kind == "webhook":
            done += post_webhook(delivery, left, services)
        else:
            done += call_hook(delivery, left, services)
    return DeliveryResult(delivery_id=delivery.delivery_id, results=done)


def _settle(
    services: Services, delivery: Delivery, recipient: str, outcome: Outcome, detail: str
) -> RecipientResult:
    """A recipient of this delivery reaches its terminal state, on the delivery's route."""
    services.records.settle(
        delivery.message.message_id,
        recipient,
        outcome=outcome,
        route=delivery.destination,
        detail=detail,
    )
    return RecipientResult(recipient=recipient, outcome=outcome.value, detail=detail)


# ----------------------------------------------------------------------------- mailbox hosts


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
    link = (
        policy.claim_check_url.format(bucket=ref.bucket, key=ref.key, message_id=ref.message_id)
        if policy.claim_check_url
        else services.objects.link(ref.bucket, ref.key)
    )
    stub = claim_check_stub(
        parse_message(raw),
        size=len(outgoing),
        limit=limit,
        link=link,
        gateway_host=services.gateway_host,
    )
    notes.append(f"claim check: {len(outgoing)} bytes over the {limit}-byte limit, stub sent")
    return prepared(stub), notes


def send_to_mailbox(
    delivery: Delivery, recipients: list[str], services: Services
) -> list[RecipientResult]:
    """The message, as received plus trace fields, through the mailbox host's transport."""
    transport = services.transports.get(delivery.destination)
    if transport is None:
        raise PermanentError(f"no transport for mailbox host {delivery.destination!r}")
    ref = delivery.message
    raw = ref.raw(services.objects)
    raw = remove_authentication_results(raw, services.gateway_host)  # a forged "ours" never passes
    outgoing, notes = _outgoing(delivery, raw, transport, services)
    replies = transport.send(ref.envelope_sender, recipients, outgoing)
    delivered: list[RecipientResult] = []
    transient: list[str] = []
    refused: dict[str, str] = {}
    failures: list[str] = []
    for recipient in recipients:
        reply = replies.get(recipient) or SendResult(ok=False, transient=True, detail="no reply")
        if reply.ok:
            detail = "; ".join([reply.detail, *notes])
            try:
                delivered.append(_settle(services, delivery, recipient, Outcome.DELIVERED, detail))
            except TransientError as unrecorded:  # the state is the idempotency record
                raise TransientError(
                    f"{recipient}: delivered to {delivery.destination}, but its state was not "
                    f"recorded ({unrecorded}); the retry may deliver it again"
                ) from unrecorded
            continue
        failure = f"{recipient}: {reply.detail}"
        failures.append(failure)
        if reply.transient:
            transient.append(recipient)
        else:
            refused[recipient] = failure
    if failures:
        services.records.note(
            ref.message_id, Stage.ATTEMPT, f"{delivery.destination}: " + "; ".join(failures)
        )
    if transient and refused:
        error = StepError(Error="PermanentError", Cause="; ".join(refused.values()))
        dead_letter_recipients(delivery, list(refused), error, services)
    if transient:
        raise TransientError("; ".join(failures))
    if refused:
        raise PermanentError("; ".join(failures))
    return delivered


# ----------------------------------------------------------------------------- applications


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
    for recipient in recipients:
        event = app_event(
            ref=ref,
            parsed=parsed,
            fields={"app": delivery.destination, "recipient": recipient},
            recipients=[recipient],
            objects=services.objects,
            received_at=services.clock.now().isoformat(),
        )
        name = f"{ref.message_id}.{recipient.replace('/', '_')}"
        yield recipient, fit_event(event, objects=services.objects, bucket=ref.bucket, name=name)


def hand_to_app(
    delivery: Delivery, recipients: list[str], services: Services
) -> list[RecipientResult]:
    """One event per recipient on the app's queue (EventBridge on AWS, files here)."""
    results = []
    for recipient, event in _app_events(delivery, recipients, services):
        where = services.app_events.publish(
            delivery.destination, f"{delivery.message.message_id}.{recipient}", event
        )
        results.append(_settle(services, delivery, recipient, Outcome.HANDED_TO_APP, where))
    return results


def post_webhook(
    delivery: Delivery, recipients: list[str], services: Services
) -> list[RecipientResult]:
    """The same events, POSTed signed to the app's webhook (recorded, not settled)."""
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
        services.records.note(
            delivery.message.message_id, Stage.ATTEMPT, f"webhook: {answer}", recipient
        )
        results.append(RecipientResult(recipient=recipient, outcome="posted", detail=answer))
    return results


def call_hook(
    delivery: Delivery, recipients: list[str], services: Services
) -> list[RecipientResult]:
    """A post-ingress hook, called once for the delivery's recipients (recorded, not settled)."""
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
        ),
        objects=services.objects,
        bucket=ref.bucket,
        name=f"{ref.message_id}.hook-{delivery.destination}.{delivery.delivery_id[-8:]}",
    )
    answer = services.hooks.call(delivery.destination, delivery.delivery_id, event)
    for recipient in recipients:
        services.idempotency.remember(idempotency_key(delivery, recipient), "hooked")
    services.records.note(ref.message_id, Stage.ATTEMPT, f"hook {delivery.destination}: {answer}")
    return [RecipientResult(recipient=r, outcome="hooked", detail=answer) for r in recipients]
