"""Quarantined mail the operators can act on: the record the process step keeps for each
message it holds (why, the verdicts, where the message is), and what release and delete do.

Release continues the message to its delivery through the normal step code: the held
recipients are reopened and their deliveries, planned as the process step plans them, go to
the deferred queue, due now, where the running gateway (or, on AWS, the Redeliver function)
delivers them like any deferred delivery: once, since a recipient that reached its terminal
state is skipped. The record says who released each recipient and when, so a second release
finds nothing left to do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Literal

from mxgate.errors import PermanentError, PolicyError
from mxgate.ports import Clock, Deferrals, Quarantine, Timeline
from mxgate.recorder import Recorder
from mxgate.records import (
    DeferredDelivery,
    HeldRecipient,
    MessageRef,
    Outcome,
    QuarantineRecord,
    Release,
    Stage,
    variant_of,
)
from mxgate.routing.classify import RouteKind, classify
from mxgate.routing.routes import Routes
from mxgate.workflow.planning import plan_deliveries


def merged(old: QuarantineRecord | None, new: QuarantineRecord) -> QuarantineRecord:
    """A message held again (a retry, another recipient): one record, each recipient once."""
    if old is None:
        return new
    known = {h.recipient.casefold() for h in old.recipients}
    extra = [h for h in new.recipients if h.recipient.casefold() not in known]
    return old.model_copy(update={"recipients": [*old.recipients, *extra]})


def expiry(held_at: datetime, retention_days: int) -> datetime:
    return held_at + timedelta(days=retention_days)


def hold(
    quarantine: Quarantine,
    ref: MessageRef,
    recipients: list[HeldRecipient],
    *,
    held_at: datetime,
    retention_days: int,
    source: Literal["rules", "not_understood", "unreadable_spool_file", "internal_error"] = "rules",
    from_: str = "",
    to: str = "",
    verdicts: str = "",
    attachments: Sequence[str] = (),
    prepend: Sequence[tuple[str, str]] = (),
) -> None:
    """Keep the record an operator lists, reads, releases or deletes: the one place a
    quarantine record is made (the Process step's, and the local pipeline's for a spool file it
    cannot read or process). Its id is the message's (with the stored version's suffix)."""
    quarantine.hold(
        QuarantineRecord(
            quarantine_id=f"{ref.message_id}{variant_of(ref.key)}",
            message_id=ref.message_id,
            held_at=held_at,
            expires_at=expiry(held_at, retention_days),
            message=ref,
            source=source,
            from_=from_,
            to=to,
            verdicts=verdicts,
            attachments=list(attachments),
            prepend=list(prepend),
            recipients=recipients,
        )
    )


def release(
    record: QuarantineRecord,
    *,
    to: str | None,
    by: str,
    routes: Routes,
    quarantine: Quarantine,
    deferrals: Deferrals,
    timeline: Timeline,
    clock: Clock,
) -> list[DeferredDelivery]:
    """Queue the held recipients' deliveries (or one to `to`), due now; [] when there is
    nothing left to release. Raises PolicyError for an address no route takes."""
    now = clock.now()
    if to is not None:
        if any(r.recipient.casefold() == to.casefold() for r in record.released_to):
            return []
        targets = [to]
    else:
        targets = [h.recipient for h in record.held]
    routed: dict[tuple[RouteKind, str], list[str]] = {}
    for recipient in targets:
        route = classify(recipient, routes)
        if route.kind is RouteKind.UNKNOWN:
            raise PolicyError(
                f"{recipient}: no route takes it ({route.reason}); release it to an address of "
                f"ours with --to RECIPIENT"
            )
        routed.setdefault((route.kind, route.name), []).append(recipient)
    held = {h.recipient.casefold(): h for h in record.held}
    for recipient in targets:  # reopened first, or the delivery would skip them as settled
        if recipient.casefold() in held:
            state = next(
                (
                    s
                    for s in timeline.states(record.message_id)
                    if s.recipient.casefold() == recipient.casefold()
                ),
                None,
            )
            if state is not None and state.outcome is Outcome.QUARANTINED:
                timeline.reopen(record.message_id, recipient)
    queued: list[DeferredDelivery] = []
    for (kind, destination), recipients in routed.items():
        for delivery in plan_deliveries(
            record.message,
            kind,
            destination,
            recipients,
            routes=routes,
            prepend=record.prepend if kind is RouteKind.MAILBOX else [],
        ):
            waiting = DeferredDelivery(
                record_id=f"{delivery.delivery_id}#release-{now.strftime('%Y%m%dT%H%M%S%f')}",
                due_at=now,
                delivery=delivery,
            )
            deferrals.schedule(waiting)
            queued.append(waiting)
    records = Recorder(timeline, clock)
    records.record(
        [
            records.event(
                record.message_id,
                Stage.RELEASED,
                f"released from quarantine {record.quarantine_id} by {by}",
                recipient,
            )
            for recipient in targets
        ]
    )
    update: dict[str, object]
    if to is not None and to.casefold() not in held:
        update = {
            "released_to": [
                *record.released_to,
                Release(recipient=to, released_at=now, released_by=by),
            ]
        }
    else:
        chosen = {t.casefold() for t in targets}
        update = {
            "recipients": [
                h.model_copy(update={"released_at": now, "released_by": by})
                if h.recipient.casefold() in chosen
                else h
                for h in record.recipients
            ]
        }
    quarantine.replace(record.model_copy(update=update))
    return queued


def find(quarantine: Quarantine, given: str) -> QuarantineRecord:
    """A record by its id or a unique prefix of it."""
    record = quarantine.get(given)
    if record is not None:
        return record
    found = [r for r in quarantine.records() if r.quarantine_id.startswith(given)]
    if not found:
        raise PermanentError(f"no quarantined message {given!r}")
    if len(found) > 1:
        ids = ", ".join(r.quarantine_id for r in found[:5])
        raise PermanentError(f"{given!r} is ambiguous: {ids}")
    return found[0]


def delete(
    record: QuarantineRecord,
    *,
    by: str,
    quarantine: Quarantine,
    timeline: Timeline,
    clock: Clock,
    delete_object: Callable[[str, str], None],
) -> None:
    """Forget a quarantined message: its recipients stay `quarantined` (their end), the
    timeline says who deleted it, and its bytes go too when no recipient got them or may still
    get them (others' application events may link to them; a released recipient's delivery
    reads them). A record with no settled recipient at all (a torn spool file) loses them."""
    quarantine.remove(record.quarantine_id)
    Recorder(timeline, clock).note(
        record.message_id,
        Stage.DELETED,
        f"deleted from quarantine {record.quarantine_id} by {by}",
    )
    released = record.released_to or len(record.held) < len(record.recipients)
    states = timeline.states(record.message_id)
    if not released and all(s.outcome is Outcome.QUARANTINED for s in states):
        delete_object(record.message.bucket, record.message.key)


def purge(
    quarantine: Quarantine,
    timeline: Timeline,
    clock: Clock,
    delete_object: Callable[[str, str], None],
    *,
    dry_run: bool = False,
) -> list[QuarantineRecord]:
    """Delete (with dry_run: only list) what is past the quarantine's retention."""
    gone = expired(quarantine, clock.now())
    if not dry_run:
        for record in gone:
            delete(
                record,
                by="retention",
                quarantine=quarantine,
                timeline=timeline,
                clock=clock,
                delete_object=delete_object,
            )
    return gone


def expired(quarantine: Quarantine, now: datetime) -> list[QuarantineRecord]:
    return [r for r in quarantine.records() if r.expires_at is not None and r.expires_at <= now]
