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

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from mxgate.errors import PermanentError, PolicyError
from mxgate.ports import Clock, Deferrals, Timeline
from mxgate.routing.classify import RouteKind, classify
from mxgate.routing.config import Routes
from mxgate.timeline import Outcome, Stage, TimelineEvent
from mxgate.workflow.model import DeferredDelivery, MessageRef
from mxgate.workflow.planning import plan_deliveries

DETAIL_MAX = 500


class HeldRecipient(BaseModel):
    model_config = ConfigDict(frozen=True)

    recipient: str
    route: str  # the route it had when held ("unknown": none)
    rule: str  # the quarantine rule, or why it was held without one
    reason: str
    released_at: datetime | None = None
    released_by: str = ""


class Release(BaseModel):
    """One release to an address that was not held (`release ID --to RECIPIENT`)."""

    model_config = ConfigDict(frozen=True)

    recipient: str
    released_at: datetime
    released_by: str


class QuarantineRecord(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    quarantine_id: str  # the message id (with the stored version's suffix, if any)
    message_id: str
    held_at: datetime
    expires_at: datetime | None = None  # the quarantine's retention ends here
    message: MessageRef  # where the message is kept, and what it is
    source: Literal["rules", "not_understood", "processing_failed"] = "rules"
    from_: str = Field(default="", alias="from")
    to: str = ""
    verdicts: str = ""  # the authentication summary, when it ran
    attachments: list[str] = Field(default_factory=list)  # "name (type, bytes)"
    prepend: list[tuple[str, str]] = Field(default_factory=list)  # trace fields for mailboxes
    recipients: list[HeldRecipient]
    released_to: list[Release] = Field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join(dict.fromkeys(f"{h.rule}: {h.reason}" for h in self.recipients))

    @property
    def held(self) -> list[HeldRecipient]:
        """Recipients still held (not released)."""
        return [h for h in self.recipients if h.released_at is None]


class Quarantine(Protocol):
    """Where quarantine records are kept (SQLite here, the state table on AWS)."""

    def hold(self, record: QuarantineRecord) -> None:
        """Keep a record; one for the same message already there gains its recipients."""
        ...

    def get(self, quarantine_id: str) -> QuarantineRecord | None: ...

    def records(self) -> Iterator[QuarantineRecord]: ...

    def replace(self, record: QuarantineRecord) -> None: ...

    def remove(self, quarantine_id: str) -> None: ...


def merged(old: QuarantineRecord | None, new: QuarantineRecord) -> QuarantineRecord:
    """A message held again (a retry, another recipient): one record, each recipient once."""
    if old is None:
        return new
    known = {h.recipient.casefold() for h in old.recipients}
    extra = [h for h in new.recipients if h.recipient.casefold() not in known]
    return old.model_copy(update={"recipients": [*old.recipients, *extra]})


def expiry(held_at: datetime, retention_days: int) -> datetime:
    return held_at + timedelta(days=retention_days)


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
                due_at=now.isoformat(),
                delivery=delivery,
            )
            deferrals.schedule(waiting.record_id, now, waiting.model_dump(mode="json"))
            queued.append(waiting)
    timeline.record_many(
        [
            TimelineEvent(
                message_id=record.message_id,
                at=now,
                stage=Stage.RELEASED,
                recipient=recipient,
                detail=f"released from quarantine {record.quarantine_id} by {by}"[:DETAIL_MAX],
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
    timeline says who deleted it, and its bytes go too when no recipient got it (others'
    application events may link to them otherwise)."""
    quarantine.remove(record.quarantine_id)
    timeline.record(
        TimelineEvent(
            message_id=record.message_id,
            at=clock.now(),
            stage=Stage.DELETED,
            detail=f"deleted from quarantine {record.quarantine_id} by {by}"[:DETAIL_MAX],
        )
    )
    states = timeline.states(record.message_id)
    if states and all(s.outcome is Outcome.QUARANTINED for s in states):
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
