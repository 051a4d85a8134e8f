"""The steps the state machine runs. Each takes its input document and the services, and
returns its output document; the Lambda handlers and the local interpreter both call these.
The delivery steps live in `workflow.delivery`."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from email.utils import format_datetime

from mxgate.message.parse import parse_message
from mxgate.routing.classify import RouteKind, classify
from mxgate.routing.quarantine import facts_of, quarantine_rule
from mxgate.timeline import Outcome, RecipientState, Stage, TimelineEvent
from mxgate.workflow.delivery import dead_letter, defer, deliver, idempotency_key
from mxgate.workflow.envelope import message_id_of, read_envelope
from mxgate.workflow.model import (
    Delivery,
    DeliveryResult,
    MessageRef,
    ProcessInput,
    ProcessOutput,
    QuarantineInput,
    RecipientResult,
)
from mxgate.workflow.services import Services

__all__ = [
    "dead_letter",
    "defer",
    "deliver",
    "idempotency_key",
    "plan_deliveries",
    "process",
    "quarantine",
]

MAX_RECIPIENTS_PER_DELIVERY = 50  # SES sending takes at most 50 recipients per message


def _event(
    services: Services,
    message_id: str,
    stage: Stage,
    detail: str = "",
    recipient: str | None = None,
) -> TimelineEvent:
    return TimelineEvent(
        message_id=message_id,
        at=services.clock.now(),
        stage=stage,
        recipient=recipient,
        detail=detail,
    )


def _settle(
    services: Services,
    message_id: str,
    recipient: str,
    *,
    outcome: Outcome,
    route: str,
    detail: str,
) -> bool:
    state = RecipientState(
        message_id=message_id,
        recipient=recipient,
        outcome=outcome,
        at=services.clock.now(),
        route=route,
        detail=detail,
    )
    return services.timeline.settle(state)


def process(request: ProcessInput, services: Services) -> ProcessOutput:
    """Read, parse and classify one stored message, and plan its deliveries."""
    raw = services.objects.get(request.bucket, request.key)
    parsed = parse_message(raw)
    envelope = read_envelope(services.objects, request.bucket, request.key, parsed, services.routes)
    message_id = envelope.message_id
    ref = MessageRef(
        message_id=message_id,
        bucket=request.bucket,
        key=request.key,
        digest=hashlib.sha256(raw).hexdigest(),
        envelope_sender=envelope.mail_from,
        size=len(raw),
        subject=parsed.subject[:200],
    )
    events = [
        _event(
            services,
            message_id,
            Stage.PARSED,
            f"{len(parsed.attachments)} attachments, {len(parsed.defects)} defects"
            + ("; envelope taken from headers" if envelope.source == "headers" else ""),
        ),
    ]
    groups: dict[tuple[RouteKind, str], list[str]] = defaultdict(list)
    facts = facts_of(parsed)  # authentication verdicts join here once that step exists
    for recipient in envelope.recipients:
        route = classify(recipient, services.routes)
        events.append(
            _event(
                services,
                message_id,
                Stage.CLASSIFIED,
                f"{route.kind.value}:{route.name} ({route.reason})",
                recipient,
            )
        )
        if route.kind is RouteKind.UNKNOWN:
            _settle(
                services,
                message_id,
                recipient,
                outcome=Outcome.QUARANTINED,
                route="unknown",
                detail=route.reason,
            )
            continue
        held = quarantine_rule(services.routes.quarantine, route.name, facts)
        if held is not None:
            rule, why = held
            _settle(
                services,
                message_id,
                recipient,
                outcome=Outcome.QUARANTINED,
                route=f"quarantine:{rule.name}",
                detail=f"rule {rule.name}: {why}; kept at {request.bucket}/{request.key}",
            )
            continue
        groups[(route.kind, route.name)].append(recipient)
    services.timeline.record_many(events)

    received = (
        "Received",
        (
            f"from {envelope.helo or 'unknown'} ({envelope.source_ip or 'unknown'}) "
            f"by {services.gateway_host} (mxgate) with ESMTP id {message_id}; "
            f"{format_datetime(services.clock.now())}"
        ),
    )
    deliveries = [
        delivery
        for (kind, destination), recipients in groups.items()
        for delivery in plan_deliveries(
            ref,
            kind,
            destination,
            recipients,
            services=services,
            prepend=[received] if kind is RouteKind.MAILBOX else [],
        )
    ]
    return ProcessOutput(message=ref, deliveries=deliveries)


def plan_deliveries(
    ref: MessageRef,
    kind: RouteKind,
    destination: str,
    recipients: list[str],
    *,
    services: Services,
    prepend: list[tuple[str, str]],
) -> list[Delivery]:
    """A route's deliveries, at most 50 recipients each: the delivery itself, the app's
    webhook if it has one, and one per post-ingress hook the route lists."""
    routes = services.routes
    app = routes.apps.get(destination) if kind is RouteKind.APP else None
    planned: list[Delivery] = []
    for start in range(0, len(recipients), MAX_RECIPIENTS_PER_DELIVERY):
        chunk = recipients[start : start + MAX_RECIPIENTS_PER_DELIVERY]
        number = start // MAX_RECIPIENTS_PER_DELIVERY
        base = f"{ref.message_id}.{destination}"
        planned.append(
            Delivery(
                delivery_id=f"{base}.{number}",
                message=ref,
                kind=kind.value,
                destination=destination,
                recipients=chunk,
                prepend=prepend,
            )
        )
        if app is not None and app.webhook is not None:
            planned.append(
                Delivery(
                    delivery_id=f"{base}.webhook.{number}",
                    message=ref,
                    kind="webhook",
                    destination=destination,
                    recipients=chunk,
                )
            )
        planned += [
            Delivery(
                delivery_id=f"{base}.hook-{hook}.{number}",
                message=ref,
                kind="hook",
                destination=hook,
                recipients=chunk,
                route=destination,
            )
            for hook in routes.route_hooks(destination)
        ]
    return planned


def quarantine(request: QuarantineInput, services: Services) -> DeliveryResult:
    """A message the pipeline could not process: keep it where it is, and say why."""
    message_id = message_id_of(request.key)
    reason = f"processing failed: {request.error.Error}: {request.error.Cause}"[:500]
    try:
        envelope = read_envelope(
            services.objects, request.bucket, request.key, None, services.routes
        )
        recipients = envelope.recipients
    except Exception:  # noqa: BLE001 -- without an envelope the message is quarantined whole
        recipients = []
    services.timeline.record(_event(services, message_id, Stage.TERMINAL, reason))
    results = []
    for recipient in recipients or ["(unknown recipients)"]:
        _settle(
            services,
            message_id,
            recipient,
            outcome=Outcome.QUARANTINED,
            route="quarantine",
            detail=reason,
        )
        results.append(
            RecipientResult(recipient=recipient, outcome=Outcome.QUARANTINED.value, detail=reason)
        )
    return DeliveryResult(delivery_id=f"{message_id}.quarantine", results=results)
