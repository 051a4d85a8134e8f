"""The Deliver step: one attempt of one delivery, to a mailbox host, an application, an app's
webhook, a post-ingress hook, or the envelope sender (a DSN for recipients bounced by the loop
guard); safe to repeat (settled recipients and idempotency keys are
skipped). Per recipient: success settles it; a permanent refusal next to transient ones is
dead-lettered at once (as Postfix bounces it at once) while the rest are retried.

A mailbox delivery, the common one, reads no more than the header section: the parser, the
sender policy, DSNs and app events are imported by the paths that use them, which keeps them
out of the Deliver function's cold start (docs/benchmarks.md, Cold start)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from mxgate.errors import PermanentError, PolicyError, TransientError
from mxgate.message.headers import prepend_headers, remove_authentication_results
from mxgate.message.raw import RawMessage
from mxgate.ports import SendResult, Transport
from mxgate.records import Delivery, MessageRef, Outcome, Stage
from mxgate.routing.routes import DeliveryPolicy
from mxgate.workflow.dead_letter import dead_letter_recipients
from mxgate.workflow.model import DeliverInput, DeliveryResult, RecipientResult, StepError
from mxgate.workflow.pending import idempotency_key, pending
from mxgate.workflow.services import Services

if TYPE_CHECKING:
    from mxgate.message.model import ParsedMessage


def deliver(request: DeliverInput, services: Services) -> DeliveryResult:
    """Hand one delivery to its mailbox host, application, webhook or hook; safe to repeat."""
    delivery = request.delivery
    done, left = pending(delivery, services)
    if left:
        if delivery.kind == "mailbox":
            done += send_to_mailbox(delivery, left, services)
        elif delivery.kind == "app":
            done += hand_to_app(delivery, left, services)
        elif delivery.kind == "bounce":
            done += send_bounce(delivery, left, services)
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


def _links_until(policy: DeliveryPolicy, services: Services) -> datetime:
    """When the download links a delivery hands out stop working (the route's link_lifetime)."""
    return services.clock.now() + timedelta(seconds=policy.link_lifetime)


# ----------------------------------------------------------------------------- mailbox hosts


def _limit(policy: DeliveryPolicy, transport: Transport) -> int | None:
    limits = [n for n in (policy.max_message_bytes, transport.max_message_bytes) if n]
    return min(limits) if limits else None


def _outgoing(
    delivery: Delivery, raw: RawMessage, transport: Transport, services: Services
) -> tuple[RawMessage, list[str]]:
    """What goes to the mailbox host: the original bytes, the sender policy applied where the
    transport needs verified senders, trace fields on top; or a claim check if too large.
    Only the header section is edited: the body goes as stored, read in chunks."""
    route = delivery.policy_route
    policy = services.routes.policy(route)
    notes: list[str] = []

    def prepared(message: RawMessage) -> RawMessage:
        header = message.header
        if transport.requires_verified_sender:
            from mxgate.delivery.sender import apply_sender_policy  # noqa: PLC0415 -- SES's

            decision = apply_sender_policy(header, route, services.routes)
            if decision.rewritten and decision.detail not in notes:
                notes.append(decision.detail)
            header = decision.raw
        return message.with_header(prepend_headers(header, delivery.prepend))

    outgoing = prepared(raw)
    limit = _limit(policy, transport)
    if limit is None or outgoing.size <= limit:
        return outgoing, notes
    ref = delivery.message
    if policy.oversize == "dead_letter":
        raise PolicyError(
            f"message of {outgoing.size} bytes is over the {limit}-byte limit of "
            f"{delivery.destination} (oversize policy: dead_letter)"
        )
    until = None if policy.claim_check_url else _links_until(policy, services)
    link = (
        policy.claim_check_url.format(bucket=ref.bucket, key=ref.key, message_id=ref.message_id)
        if policy.claim_check_url
        else services.objects.link(ref.bucket, ref.key, until)
    )
    from mxgate.delivery.claimcheck import claim_check_stub  # noqa: PLC0415 -- oversize
    from mxgate.message.parse import parse_stream  # noqa: PLC0415

    with raw.open() as stream:
        parsed = parse_stream(stream)
    stub = claim_check_stub(
        parsed,
        size=outgoing.size,
        limit=limit,
        link=link,
        gateway_host=services.gateway_host,
        link_expires=until,
    )
    notes.append(f"claim check: {outgoing.size} bytes over the {limit}-byte limit, stub sent")
    return prepared(RawMessage.of(stub)), notes


def send_to_mailbox(
    delivery: Delivery, recipients: list[str], services: Services
) -> list[RecipientResult]:
    """The message, as received plus trace fields, through the mailbox host's transport."""
    transport = services.transports.get(delivery.destination)
    if transport is None:
        raise PermanentError(f"no transport for mailbox host {delivery.destination!r}")
    ref = delivery.message
    known = services.parses.kept_bytes(ref.digest) if services.parses is not None else None
    raw = RawMessage.referenced(ref, services.objects, known=known)
    # a forged "ours" never passes
    raw = raw.with_header(remove_authentication_results(raw.header, services.gateway_host))
    outgoing, notes = _outgoing(delivery, raw, transport, services)
    tags = {"mxgate-message": ref.message_id, "mxgate-route": delivery.destination}
    replies = transport.send(ref.envelope_sender, recipients, outgoing, tags=tags)
    delivered: list[RecipientResult] = []
    transient: list[str] = []
    refused: dict[str, str] = {}
    failures: list[str] = []
    for recipient in recipients:
        reply = replies.get(recipient) or SendResult(ok=False, transient=True, detail="no reply")
        if reply.ok:
            detail = "; ".join([reply.detail, *notes])
            # relayed: the provider's side has yet to say (workflow/provider.py)
            outcome = Outcome.RELAYED if reply.relayed else Outcome.DELIVERED
            try:
                delivered.append(_settle(services, delivery, recipient, outcome, detail))
            except TransientError as unrecorded:  # the state is the idempotency record
                raise TransientError(
                    f"{recipient}: {outcome.value} to {delivery.destination}, but its state was "
                    f"not recorded ({unrecorded}); the retry may deliver it again"
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


# ----------------------------------------------------------------------------- bounces


def send_bounce(
    delivery: Delivery, recipients: list[str], services: Services
) -> list[RecipientResult]:
    """A DSN (RFC 3464) to the envelope sender for recipients that cannot be delivered (a
    loop): they end `bounced`. No DSN goes to the null sender or a postmaster, which would
    loop again: those are dead-lettered with the reason (the DeadLetter step)."""
    from mxgate.message.dsn import (  # noqa: PLC0415 -- bounces alone
        DsnReport,
        bounce_subject,
        delivery_status_notification,
        should_notify,
    )

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
    listed = "\n".join(f"  <{r}>" for r in recipients)
    report = DsnReport(
        reporting_mta=services.gateway_host,
        sender=f"Mail Delivery System <{services.routes.dsn_sender}>",
        envelope_sender=ref.envelope_sender,
        recipients=recipients,
        status=notice.status,
        diagnostic=f"554 {notice.status} {notice.diagnostic}",
        explanation=(
            f"This is the mail system at host {services.gateway_host}.\n\n"
            f"Your message could not be delivered to the recipients below.\n\n{listed}\n\n"
            f"Reason: {notice.diagnostic}\n"
        ),
        subject=bounce_subject(ref.subject),
        last_attempt=now,
        envelope_id=ref.message_id,
    )
    dsn = delivery_status_notification(report, RawMessage.referenced(ref, services.objects).header)
    replies = services.bounces.send("", [ref.envelope_sender], RawMessage.of(dsn))
    result = replies.get(ref.envelope_sender)
    if result is None or not result.ok:
        detail = result.detail if result is not None else "no reply"
        failure = TransientError if result is None or result.transient else PermanentError
        raise failure(f"DSN to {ref.envelope_sender}: {detail}")
    detail = f"{notice.status} {notice.diagnostic}; DSN sent to {ref.envelope_sender}"
    return [_settle(services, delivery, r, Outcome.BOUNCED, detail) for r in recipients]


# ----------------------------------------------------------------------------- applications


def _parsed_with_attachments(ref: MessageRef, services: Services) -> ParsedMessage:
    """The parsed message with each attachment stored content-addressed (`attachments/<sha256>`,
    where the process step put them already: stored once, whoever asks)."""
    from mxgate.message.attachments import ObjectStoreAttachments  # noqa: PLC0415 -- apps
    from mxgate.message.parse import parse_stream  # noqa: PLC0415

    store = ObjectStoreAttachments(services.objects, ref.bucket)
    with RawMessage.referenced(ref, services.objects).open() as stream:
        return parse_stream(stream, limits=services.message_limits, store=store)


def _app_events(
    delivery: Delivery, recipients: list[str], services: Services
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(recipient, event) for each recipient: what the app's queue and its webhook receive."""
    from mxgate.delivery.appevent import app_event, fit_event  # noqa: PLC0415 -- apps alone

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
    from mxgate.delivery.appevent import app_event, fit_event  # noqa: PLC0415 -- hooks alone

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
    services.records.note(ref.message_id, Stage.ATTEMPT, f"hook {delivery.destination}: {answer}")
    return [RecipientResult(recipient=r, outcome="hooked", detail=answer) for r in recipients]
