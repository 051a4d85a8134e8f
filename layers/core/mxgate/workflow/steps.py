"""The steps the state machine runs. Each takes its input document and the services, and
returns its output document; the Lambda handlers and the local interpreter both call these."""

from __future__ import annotations

from collections import defaultdict
from email.utils import format_datetime

from mxgate.authn.check import Authenticator
from mxgate.authn.model import Authentication
from mxgate.authn.results import HEADER as RESULTS_HEADER
from mxgate.authn.results import authentication_results
from mxgate.errors import PermanentError, TransientError
from mxgate.message.attachments import ObjectStoreAttachments
from mxgate.message.headers import prepend_headers, remove_authentication_results
from mxgate.message.parse import parse_message, parse_stream
from mxgate.routing.classify import RouteKind, classify
from mxgate.timeline import Outcome, RecipientState, Stage, TimelineEvent
from mxgate.workflow.envelope import message_id_of, read_envelope
from mxgate.workflow.model import (
    DeadLetterInput,
    DeliverInput,
    Delivery,
    DeliveryResult,
    Envelope,
    MessageRef,
    ProcessInput,
    ProcessOutput,
    QuarantineInput,
    RecipientResult,
)
from mxgate.workflow.services import Services

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


def idempotency_key(delivery: Delivery, recipient: str) -> str:
    return (
        f"{delivery.message.digest}:{recipient.casefold()}:{delivery.kind}:{delivery.destination}"
    )


def process(request: ProcessInput, services: Services) -> ProcessOutput:
    """Read, parse, authenticate and classify one stored message, and plan its deliveries."""
    store = ObjectStoreAttachments(services.objects, request.bucket)
    with services.objects.open(request.bucket, request.key) as stream:  # never whole in memory
        parsed = parse_stream(stream, limits=services.message_limits, store=store)
    envelope = read_envelope(services.objects, request.bucket, request.key, parsed, services.routes)
    authentication = _authenticate(request, envelope, services)
    message_id = envelope.message_id
    ref = MessageRef(
        message_id=message_id,
        bucket=request.bucket,
        key=request.key,
        digest=parsed.sha256,
        envelope_sender=envelope.mail_from,
        size=parsed.size,
        subject=parsed.subject[:200],
    )
    events = [
        _event(
            services,
            message_id,
            Stage.PARSED,
            f"{len(parsed.attachments)} attachments, {len(parsed.defects)} defects"
            + ("; envelope taken from headers" if envelope.source == "headers" else "")
            + (f"; {authentication.summary()}" if authentication else ""),
        ),
    ]
    if parsed.unreadable is not None:  # not understood: kept where it is, never dropped
        services.timeline.record_many(events)
        for recipient in envelope.recipients:
            _settle(
                services,
                message_id,
                recipient,
                outcome=Outcome.QUARANTINED,
                route="quarantine",
                detail=f"message not understood: {parsed.unreadable}",
            )
        return ProcessOutput(message=ref, deliveries=[], authentication=authentication)
    groups: dict[tuple[RouteKind, str], list[str]] = defaultdict(list)
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
    trace = [received]
    if authentication is not None:  # on top, as a verifying MTA adds it (RFC 8601 5)
        trace.insert(0, (RESULTS_HEADER, authentication_results(authentication)))
    deliveries = []
    for (kind, destination), recipients in groups.items():
        for start in range(0, len(recipients), MAX_RECIPIENTS_PER_DELIVERY):
            chunk = recipients[start : start + MAX_RECIPIENTS_PER_DELIVERY]
            deliveries.append(
                Delivery(
                    delivery_id=f"{message_id}.{destination}.{start // MAX_RECIPIENTS_PER_DELIVERY}",
                    message=ref,
                    kind=kind.value,
                    destination=destination,
                    recipients=chunk,
                    prepend=trace if kind is RouteKind.MAILBOX else [],
                )
            )
    return ProcessOutput(message=ref, deliveries=deliveries, authentication=authentication)


def _authenticate(
    request: ProcessInput, envelope: Envelope, services: Services
) -> Authentication | None:
    """SPF, DKIM and DMARC for the message, when the runtime gave us DNS."""
    if services.resolver is None:
        return None
    authenticator = Authenticator(services.resolver, services.gateway_host)
    with services.objects.open(request.bucket, request.key) as stream:
        return authenticator.authenticate(
            stream, client_ip=envelope.source_ip, mail_from=envelope.mail_from, helo=envelope.helo
        )


def deliver(request: DeliverInput, services: Services) -> DeliveryResult:
    """Hand one delivery to its mailbox host or application; safe to repeat."""
    delivery = request.delivery
    message_id = delivery.message.message_id
    done: list[RecipientResult] = []
    pending: list[str] = []
    for recipient in delivery.recipients:
        previous = services.idempotency.seen(idempotency_key(delivery, recipient))
        if previous is not None:
            done.append(
                RecipientResult(recipient=recipient, outcome=previous, detail="already done")
            )
        else:
            pending.append(recipient)
    if not pending:
        return DeliveryResult(delivery_id=delivery.delivery_id, results=done)
    if delivery.kind == "app":
        return DeliveryResult(
            delivery_id=delivery.delivery_id,
            results=done + _hand_to_app(delivery, pending, services),
        )

    transport = services.transports.get(delivery.destination)
    if transport is None:
        raise PermanentError(f"no transport for mailbox host {delivery.destination!r}")
    raw = services.objects.get(delivery.message.bucket, delivery.message.key)
    raw = remove_authentication_results(raw, services.gateway_host)  # forged "ours" never pass
    outgoing = prepend_headers(raw, delivery.prepend)
    results = transport.send(delivery.message.envelope_sender, pending, outgoing)
    transient: list[str] = []
    permanent: list[str] = []
    for recipient in pending:
        result = results[recipient]
        if result.ok:
            services.idempotency.remember(
                idempotency_key(delivery, recipient), Outcome.DELIVERED.value
            )
            _settle(
                services,
                message_id,
                recipient,
                outcome=Outcome.DELIVERED,
                route=delivery.destination,
                detail=result.detail,
            )
            done.append(
                RecipientResult(
                    recipient=recipient, outcome=Outcome.DELIVERED.value, detail=result.detail
                )
            )
        else:
            (transient if result.transient else permanent).append(f"{recipient}: {result.detail}")
    if transient or permanent:
        services.timeline.record(
            _event(
                services,
                message_id,
                Stage.ATTEMPT,
                f"{delivery.destination}: " + "; ".join(transient + permanent),
            )
        )
    if transient:
        raise TransientError("; ".join(transient + permanent))
    if permanent:
        raise PermanentError("; ".join(permanent))
    return DeliveryResult(delivery_id=delivery.delivery_id, results=done)


def _hand_to_app(
    delivery: Delivery, recipients: list[str], services: Services
) -> list[RecipientResult]:
    ref = delivery.message
    parsed = parse_message(services.objects.get(ref.bucket, ref.key))
    results = []
    for recipient in recipients:
        event = {
            "message_id": ref.message_id,
            "app": delivery.destination,
            "recipient": recipient,
            "envelope_sender": ref.envelope_sender,
            "received_at": services.clock.now().isoformat(),
            "raw": services.objects.link(ref.bucket, ref.key),
            "message": parsed.model_dump(mode="json", by_alias=True),
        }
        where = services.app_events.publish(
            delivery.destination, f"{ref.message_id}.{recipient}", event
        )
        services.idempotency.remember(
            idempotency_key(delivery, recipient), Outcome.HANDED_TO_APP.value
        )
        _settle(
            services,
            ref.message_id,
            recipient,
            outcome=Outcome.HANDED_TO_APP,
            route=delivery.destination,
            detail=where,
        )
        results.append(
            RecipientResult(recipient=recipient, outcome=Outcome.HANDED_TO_APP.value, detail=where)
        )
    return results


def dead_letter(request: DeadLetterInput, services: Services) -> DeliveryResult:
    """Record a delivery that cannot be completed, with its failure, for `mxgate dlq`."""
    delivery = request.delivery
    left = [
        r
        for r in delivery.recipients
        if services.idempotency.seen(idempotency_key(delivery, r)) is None
    ]
    services.dead_letters.put(
        delivery.delivery_id,
        {
            "delivery": delivery.model_dump(mode="json"),
            "error": request.error.Error,
            "cause": request.error.Cause,
            "recipients": left,
            "at": services.clock.now().isoformat(),
        },
    )
    results = []
    for recipient in left:
        _settle(
            services,
            delivery.message.message_id,
            recipient,
            outcome=Outcome.DEAD_LETTERED,
            route=delivery.destination,
            detail=f"{request.error.Error}: {request.error.Cause}"[:500],
        )
        results.append(
            RecipientResult(
                recipient=recipient, outcome=Outcome.DEAD_LETTERED.value, detail=request.error.Error
            )
        )
    return DeliveryResult(delivery_id=delivery.delivery_id, results=results)


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
