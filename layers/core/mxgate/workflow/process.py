"""The Process step (read, parse, authenticate and classify one stored message, and plan its
deliveries), and the Quarantine step for a message Process could not handle."""

from __future__ import annotations

import base64
import hashlib
import shutil
import tempfile
from collections import defaultdict
from datetime import timedelta
from typing import BinaryIO, Literal, cast

from mxgate.authn.model import Authentication
from mxgate.errors import FailureKind, PermanentError, kind_named
from mxgate.message.attachments import ObjectStoreAttachments
from mxgate.message.model import Address, ParsedMessage
from mxgate.message.parse import parse_stream
from mxgate.ports import Deferrals
from mxgate.records import (
    UNKNOWN_RECIPIENTS,
    DeferredProcessing,
    Envelope,
    HeldRecipient,
    MessageRef,
    MessageSummary,
    QuarantineRecord,
    Stage,
    message_id_of,
    variant_of,
)
from mxgate.routing.classify import RouteKind, classify
from mxgate.routing.quarantine import auth_verdicts, facts_of, quarantine_rule
from mxgate.workflow.defer import backoff
from mxgate.workflow.model import (
    DeliveryResult,
    ProcessInput,
    ProcessOutput,
    QuarantineInput,
    RecipientResult,
)
from mxgate.workflow.planning import plan_deliveries
from mxgate.workflow.quarantine import expiry
from mxgate.workflow.received import HEADER as RECEIVED
from mxgate.workflow.received import received_value
from mxgate.workflow.services import Services

SPOOL_IN_MEMORY = 8 * 1024 * 1024  # bytes of a message kept in memory; the rest on disk
COPY_CHUNK = 1024 * 1024
# Messages this small travel inside the delivery documents (base64), as long as all of a
# message's deliveries together stay well inside Step Functions' 256 KB per document.
INLINE_MAX = 48 * 1024
INLINE_BUDGET = 120 * 1024


def process(request: ProcessInput, services: Services) -> ProcessOutput:
    """Read, parse, authenticate and classify one stored message, and plan its deliveries."""
    envelope = request.envelope
    if envelope is None:  # the pipeline never guesses recipients from header fields
        raise PermanentError(
            f"no SMTP envelope came with {request.bucket}/{request.key}: its recipients are "
            "not known"
        )
    store = ObjectStoreAttachments(services.objects, request.bucket)
    # One read of the stored message, kept in a spooled file (on disk past a few MB, never whole
    # in memory) for the two passes: the parse, then sender authentication.
    with (
        services.objects.open(request.bucket, request.key) as stream,
        tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spooled,
    ):
        copy = cast("BinaryIO", spooled)  # a file like any other, whatever typeshed says
        shutil.copyfileobj(stream, copy, COPY_CHUNK)
        copy.seek(0)
        parsed = parse_stream(copy, limits=services.message_limits, store=store)
        copy.seek(0)
        authentication, authentication_fields = _authenticate(
            copy, envelope, parsed.sha256, services
        )
        copy.seek(0)
        small = copy.read() if parsed.size <= INLINE_MAX else None
    message_id = envelope.message_id
    ref = MessageRef(
        message_id=message_id,
        bucket=request.bucket,
        key=request.key,
        digest=parsed.sha256,
        envelope_sender=envelope.mail_from,
        size=parsed.size,
        subject=parsed.subject,
    )
    records = services.records
    events = [
        records.event(
            message_id,
            Stage.PARSED,
            f"{len(parsed.attachments)} attachments, {len(parsed.defects)} defects"
            + (f"; {authentication.summary()}" if authentication else ""),
            summary=MessageSummary(
                envelope_sender=envelope.mail_from,
                from_=", ".join(a.address for a in parsed.from_),
                recipients=envelope.recipients,
                subject=parsed.subject,
            ),
        ),
    ]
    trace = _trace(envelope, authentication_fields, services)
    if parsed.unreadable is not None:  # not understood: kept where it is, never dropped
        records.record(events)
        reason = f"message not understood: {parsed.unreadable}"
        records.quarantine(
            message_id, envelope.recipients, reason, kept_at=f"{request.bucket}/{request.key}"
        )
        _hold(
            services,
            ref,
            parsed,
            authentication,
            trace,
            [
                HeldRecipient(recipient=r, route="quarantine", rule="not understood", reason=reason)
                for r in envelope.recipients
            ],
            source="not_understood",
        )
        return ProcessOutput(message=ref, deliveries=[], authentication=authentication)
    kept: list[HeldRecipient] = []
    groups: dict[tuple[RouteKind, str], list[str]] = defaultdict(list)
    facts = facts_of(parsed, auth_verdicts(authentication))
    for recipient in envelope.recipients:
        route = classify(recipient, services.routes)
        events.append(
            records.event(
                message_id,
                Stage.CLASSIFIED,
                f"{route.kind.value}:{route.name} ({route.reason})",
                recipient,
            )
        )
        if route.kind is RouteKind.UNKNOWN:
            records.quarantine(message_id, [recipient], route.reason, route="unknown")
            kept.append(
                HeldRecipient(
                    recipient=recipient, route="unknown", rule="no route", reason=route.reason
                )
            )
            continue
        held = quarantine_rule(services.routes.quarantine, route.name, facts)
        if held is not None:
            rule, why = held
            records.quarantine(
                message_id,
                [recipient],
                f"rule {rule.name}: {why}; kept at {request.bucket}/{request.key}",
                route=f"quarantine:{rule.name}",
            )
            kept.append(
                HeldRecipient(recipient=recipient, route=route.name, rule=rule.name, reason=why)
            )
            continue
        groups[(route.kind, route.name)].append(recipient)
    records.record(events)
    if kept:
        _hold(services, ref, parsed, authentication, trace, kept)
    deliveries = [
        delivery
        for (kind, destination), recipients in groups.items()
        for delivery in plan_deliveries(
            ref,
            kind,
            destination,
            recipients,
            routes=services.routes,
            prepend=trace if kind is RouteKind.MAILBOX else [],
        )
    ]
    if small is not None and len(small) * len(deliveries) <= INLINE_BUDGET:
        inline = ref.model_copy(update={"inline": base64.b64encode(small).decode("ascii")})
        deliveries = [d.model_copy(update={"message": inline}) for d in deliveries]
    return ProcessOutput(message=ref, deliveries=deliveries, authentication=authentication)


def _trace(
    envelope: Envelope, authentication_fields: list[tuple[str, str]], services: Services
) -> list[tuple[str, str]]:
    """The trace fields every mailbox delivery of the message gets on top: the
    authentication's (our ARC set when we seal, then Authentication-Results), as a verifying
    MTA adds them (RFC 8601 5), then Received."""
    received = (
        RECEIVED,
        received_value(envelope, services.gateway_host, envelope.message_id, services.clock.now()),
    )
    return [*authentication_fields, received]


def _hold(  # noqa: PLR0917 -- what the process step knows at that point
    services: Services,
    ref: MessageRef,
    parsed: ParsedMessage | None,
    authentication: Authentication | None,
    trace: list[tuple[str, str]],
    recipients: list[HeldRecipient],
    *,
    source: Literal["rules", "not_understood", "processing_failed"] = "rules",
) -> None:
    """Keep the quarantine record an operator lists, reads, releases or deletes."""
    if services.quarantine is None:
        return
    now = services.clock.now()

    def addresses(found: list[Address]) -> str:
        return ", ".join(f"{a.name} <{a.address}>" if a.name else a.address for a in found)

    services.quarantine.hold(
        QuarantineRecord(
            quarantine_id=f"{ref.message_id}{variant_of(ref.key)}",
            message_id=ref.message_id,
            held_at=now,
            expires_at=expiry(now, services.quarantine_days),
            message=ref,
            source=source,
            from_=addresses(parsed.from_) if parsed else "",
            to=addresses(parsed.to) if parsed else "",
            verdicts=authentication.summary() if authentication else "",
            attachments=[
                f"{a.filename or '(unnamed)'} ({a.content_type}, {a.size} bytes)"
                for a in (parsed.attachments if parsed else [])
            ],
            prepend=trace,
            recipients=recipients,
        )
    )


def _authenticate(
    message: BinaryIO, envelope: Envelope, sha256: str, services: Services
) -> tuple[Authentication | None, list[tuple[str, str]]]:
    """SPF, DKIM, DMARC and ARC for the message, when the runtime gave us DNS, and the fields
    a mailbox delivery carries on top: Authentication-Results, after our ARC set if we seal."""
    authenticator = services.authenticator
    if authenticator is None:
        return None, []
    return authenticator.trace_fields(
        message,
        client_ip=envelope.source_ip,
        mail_from=envelope.mail_from,
        helo=envelope.helo,
        message_id=envelope.message_id,
        sha256=sha256,
    )


def quarantine(request: QuarantineInput, services: Services) -> DeliveryResult:
    """A message the pipeline could not process: keep it where it is, and say why. When it
    failed only for now (its retries ran out on a full disk, a busy database, a throttled
    store), it is processed again later instead, until the delivery lifetime runs out."""
    envelope = request.envelope
    message_id = envelope.message_id if envelope is not None else message_id_of(request.key)
    reason = f"processing failed: {request.error.Error}: {request.error.Cause}"
    deferrals = services.deferrals
    if kind_named(request.error.Error) is FailureKind.TRANSIENT and deferrals is not None:
        later = _process_later(request, message_id, services, deferrals)
        if later is not None:
            return later
        reason = f"gave up processing it for now: {reason}"
    recipients = envelope.recipients if envelope is not None else []
    if envelope is not None and recipients and services.objects.exists(request.bucket, request.key):
        raw = services.objects.get(request.bucket, request.key)
        ref = MessageRef(
            message_id=message_id,
            bucket=request.bucket,
            key=request.key,
            digest=hashlib.sha256(raw).hexdigest(),
            envelope_sender=envelope.mail_from,
            size=len(raw),
        )
        held_recipients = [
            HeldRecipient(recipient=r, route="quarantine", rule="processing failed", reason=reason)
            for r in recipients
        ]
        trace = _trace(envelope, [], services)
        _hold(services, ref, None, None, trace, held_recipients, source="processing_failed")
    held = services.records.quarantine(
        message_id,
        recipients or [UNKNOWN_RECIPIENTS],
        reason,
        kept_at=f"{request.bucket}/{request.key}",
    )
    return DeliveryResult(
        delivery_id=f"{message_id}.quarantine",
        results=[
            RecipientResult(recipient=s.recipient, outcome=s.outcome.value, detail=s.detail)
            for s in held
        ],
    )


def _process_later(
    request: QuarantineInput, message_id: str, services: Services, deferrals: Deferrals
) -> DeliveryResult | None:
    """Schedule a new execution of the stored message on the deferral schedule of the
    top-level delivery policy; None once its lifetime has run out. Earlier attempts are the
    message's own `deferred` events (a delivery's name their recipients)."""
    policy = services.routes.delivery
    now = services.clock.now()
    earlier = [
        e
        for e in services.timeline.events(message_id)
        if e.stage is Stage.DEFERRED and e.recipient is None
    ]
    first = earlier[0].at if earlier else now
    attempts = len(earlier) + 1
    give_up = first + timedelta(seconds=policy.queue_lifetime)
    if now >= give_up:
        return None
    # one id per attempt: the run of the last one deletes its own record, not this one
    record_id = f"{message_id}{variant_of(request.key)}#processing#{attempts}"
    due = min(now + timedelta(seconds=backoff(policy, attempts, record_id)), give_up)
    deferrals.schedule(
        DeferredProcessing(
            record_id=record_id,
            due_at=due,
            message_id=message_id,
            bucket=request.bucket,
            key=request.key,
            envelope=request.envelope,
            first_failed_at=first,
            attempts=attempts,
            last_error=request.error.reason,
        )
    )
    services.records.note(
        message_id,
        Stage.DEFERRED,
        f"processing failed for now ({request.error.reason}); attempt {attempts}, next "
        f"{due.isoformat(timespec='seconds')}, gives up {give_up.isoformat(timespec='seconds')}",
    )
    return DeliveryResult(delivery_id=f"{message_id}.processing", results=[])
