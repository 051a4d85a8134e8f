"""The Process step: read, parse, authenticate and classify one stored message, judge each
recipient (a loop is bounced; own-domain spoofing, an unknown address and the quarantine
rules hold it: workflow/judgement.py), and plan its deliveries. A message Process cannot
handle is retried, deferred and dead-lettered as a whole (workflow/unprocessed.py)."""

from __future__ import annotations

import base64
import tempfile
from collections import defaultdict
from collections.abc import Mapping
from typing import BinaryIO, Literal, cast

from pydantic import Field

from mxgate.authn.model import Authentication
from mxgate.errors import PermanentError
from mxgate.message.attachments import AttachmentStore, ObjectStoreAttachments
from mxgate.message.model import Address, ParsedMessage
from mxgate.message.parse import parse_stream
from mxgate.records import (
    MAX_RECIPIENTS_PER_DELIVERY,
    BounceNotice,
    Delivery,
    Envelope,
    HeldRecipient,
    MessageRef,
    MessageSummary,
    Stage,
    variant_of,
)
from mxgate.routing.classify import RouteKind, classify
from mxgate.routing.loops import HEADER as LOOP_HEADER
from mxgate.routing.loops import LOOP_STATUS, loop_token
from mxgate.workflow.judgement import judge
from mxgate.workflow.model import Frozen, ProcessInput
from mxgate.workflow.planning import plan_deliveries
from mxgate.workflow.quarantine import hold
from mxgate.workflow.received import HEADER as RECEIVED
from mxgate.workflow.received import received_value
from mxgate.workflow.services import Services

SPOOL_IN_MEMORY = 8 * 1024 * 1024  # bytes of a message kept in memory; the rest on disk
COPY_CHUNK = 1024 * 1024
# Messages this small travel inside the delivery documents (base64), as long as all of a
# message's deliveries together stay well inside Step Functions' 256 KB per document.
INLINE_MAX = 48 * 1024
INLINE_BUDGET = 120 * 1024


class ProcessOutput(Frozen):
    """What Process hands the state machine (beside workflow.model's other documents)."""

    message: MessageRef
    deliveries: list[Delivery]
    authentication: Authentication | None = None  # the sender checks, for routes to use
    quarantined: list[str] = Field(default_factory=list)  # recipients held for their content


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
        eight_bit = _copy(stream, copy)
        copy.seek(0)
        parsed = _parse(copy, services, store)
        copy.seek(0)
        authentication, authentication_fields = _authenticate(
            copy, envelope, parsed.sha256, services
        )
        copy.seek(0)
        small = _small(copy, parsed, services)
    message_id = envelope.message_id
    ref = MessageRef(
        message_id=message_id,
        bucket=request.bucket,
        key=request.key,
        digest=parsed.sha256,
        envelope_sender=envelope.mail_from,
        size=parsed.size,
        subject=parsed.subject,
        eight_bit=eight_bit,
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
        return ProcessOutput(
            message=ref,
            deliveries=[],
            authentication=authentication,
            quarantined=list(envelope.recipients),
        )
    judgement = judge(parsed, envelope, authentication, services)
    kept: list[HeldRecipient] = []
    bounced: dict[str, list[str]] = defaultdict(list)  # reason -> recipients
    groups: dict[tuple[RouteKind, str], list[str]] = defaultdict(list)
    for recipient in envelope.recipients:
        route = classify(recipient, services.routes)
        events.append(
            records.event(
                message_id,
                Stage.CLASSIFIED,
                f"{route.kind}:{route.name} ({route.reason})",
                recipient,
            )
        )
        loop = judgement.loop(recipient)
        if loop is not None:  # bounced, whatever the route: a loop is never delivered again
            bounced[loop].append(recipient)
            continue
        held = judgement.hold(route)
        if held is not None:
            unknown = route.kind is RouteKind.UNKNOWN
            records.quarantine(
                message_id,
                [recipient],
                held.detail
                if unknown
                else f"{held.detail}; kept at {request.bucket}/{request.key}",
                route=held.route,
            )
            kept.append(
                HeldRecipient(
                    recipient=recipient,
                    route="unknown" if unknown else route.name,
                    rule=held.rule,
                    reason=held.reason,
                )
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
    deliveries += _bounces(ref, bounced)
    if small is not None and len(small) * len(deliveries) <= INLINE_BUDGET:
        inline = ref.model_copy(update={"inline": base64.b64encode(small).decode("ascii")})
        deliveries = [d.model_copy(update={"message": inline}) for d in deliveries]
    return ProcessOutput(
        message=ref,
        deliveries=deliveries,
        authentication=authentication,
        quarantined=[h.recipient for h in kept],
    )


def _parse(copy: BinaryIO, services: Services, store: AttachmentStore) -> ParsedMessage:
    """The stored message parsed, or the worker's parse of the same bytes (the rule set's
    Archive index made it), where the runtime keeps one (`Services.parses`)."""
    if services.parses is not None:
        return services.parses.parse(copy, limits=services.message_limits, store=store)
    return parse_stream(copy, limits=services.message_limits, store=store)


def _small(copy: BinaryIO, parsed: ParsedMessage, services: Services) -> bytes | None:
    """The message's bytes when it is small enough to travel inside its delivery documents;
    kept for the Deliver steps of this run too, where the runtime keeps a parse (no base64
    to decode there)."""
    if parsed.size > INLINE_MAX:
        return None
    small = copy.read()
    if services.parses is not None:
        services.parses.keep_bytes(small, parsed.sha256)
    return small


def _trace(
    envelope: Envelope, authentication_fields: list[tuple[str, str]], services: Services
) -> list[tuple[str, str]]:
    """The trace fields every mailbox delivery of the message gets on top: the
    authentication's (our ARC set when we seal, then Authentication-Results), as a verifying
    MTA adds them (RFC 8601 5), then Received, and the loop token that names this message
    (routing/loops.py)."""
    received = (
        RECEIVED,
        received_value(envelope, services.gateway_host, envelope.message_id, services.clock.now()),
    )
    trace = [*authentication_fields, received]
    if services.loop_key is not None:
        trace.append((LOOP_HEADER, loop_token(services.loop_key, envelope.message_id)))
    return trace


def _bounces(ref: MessageRef, bounced: Mapping[str, list[str]]) -> list[Delivery]:
    """A DSN to the envelope sender for each reason, at most 50 recipients a DSN."""
    planned: list[Delivery] = []
    for reason, recipients in bounced.items():
        for start in range(0, len(recipients), MAX_RECIPIENTS_PER_DELIVERY):
            planned.append(
                Delivery(
                    delivery_id=f"{ref.message_id}{variant_of(ref.key)}.bounce.{len(planned)}",
                    message=ref,
                    kind="bounce",
                    destination="sender",
                    recipients=recipients[start : start + MAX_RECIPIENTS_PER_DELIVERY],
                    bounce=BounceNotice(status=LOOP_STATUS, diagnostic=reason),
                )
            )
    return planned


def _copy(stream: BinaryIO, copy: BinaryIO) -> bool:
    """Copy the stored message; whether it holds a byte >= 0x80, kept in its MessageRef so a
    delivery need not read the message to know (BODY=8BITMIME)."""
    eight_bit = False
    while chunk := stream.read(COPY_CHUNK):
        eight_bit = eight_bit or not chunk.isascii()
        copy.write(chunk)
    return eight_bit


def _hold(  # noqa: PLR0917 -- what the process step knows at that point
    services: Services,
    ref: MessageRef,
    parsed: ParsedMessage | None,
    authentication: Authentication | None,
    trace: list[tuple[str, str]],
    recipients: list[HeldRecipient],
    *,
    source: Literal["rules", "not_understood"] = "rules",
) -> None:
    """Keep the quarantine record an operator lists, reads, releases or deletes."""
    if services.quarantine is None:
        return

    def addresses(found: list[Address]) -> str:
        return ", ".join(f"{a.name} <{a.address}>" if a.name else a.address for a in found)

    hold(
        services.quarantine,
        ref,
        recipients,
        held_at=services.clock.now(),
        retention_days=services.quarantine_days,
        source=source,
        from_=addresses(parsed.from_) if parsed else "",
        to=addresses(parsed.to) if parsed else "",
        verdicts=authentication.summary() if authentication else "",
        attachments=[
            f"{a.filename or '(unnamed)'} ({a.content_type}, {a.size} bytes)"
            for a in (parsed.attachments if parsed else [])
        ],
        prepend=trace,
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
