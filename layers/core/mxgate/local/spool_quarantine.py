"""Spooled messages the worker can never process, quarantined: an unreadable spool file (empty,
its envelope torn), a message from an ingress point the template no longer has, a rule set
run that fails for good.

The record comes first: the bytes are kept as the object `mxgate-quarantine/spool/<file>` (the
message; the whole file when it cannot be read), a quarantine record names it (`mxgate
quarantine list|show|release|delete`), the recipients are quarantined naming that place, and
only then does the spool file go. A crash between leaves the spool file, which the next run
finishes (`quarantined_before`) or processes again.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mxgate.local.spool import Spool, accepted_event
from mxgate.message.raw import RawMessage
from mxgate.ports import ObjectInfo, ObjectStore, Quarantine, Timeline
from mxgate.records import UNKNOWN_RECIPIENTS, Envelope, HeldRecipient, MessageRef, Outcome
from mxgate.routing.classify import classify
from mxgate.workflow.quarantine import hold

if TYPE_CHECKING:
    from mxgate.local.bootstrap import Worker
    from mxgate.routing.routes import Routes

QUARANTINE_BUCKET = "mxgate-quarantine"
log = logging.getLogger("mxgate.worker")


def kept_key(spool_file: str) -> str:
    """Where a quarantined spool file's bytes are kept in QUARANTINE_BUCKET."""
    return f"spool/{spool_file}"


def quarantine_failed(
    worker: Worker,
    envelope: Envelope,
    recipients: list[str],
    error: Exception,
    *,
    path: Path | None,
    message: RawMessage | None,
) -> None:
    """Recipients whose processing failed for good: the message kept (from `message`, else
    the spool file at `path` whole), with its record; the recipients alone when neither is
    left."""
    reason = f"internal error: {type(error).__name__}: {error}"
    spool_file = path.name if path is not None else f"{envelope.message_id}.msg"
    kept: ObjectInfo | None = None
    objects = worker.mail_manager.actions.objects
    if message is not None:
        kept, digest = _keep(objects, spool_file, message)
    elif path is not None and path.exists():
        kept, digest = _keep_whole(objects, path)
    if kept is not None:
        ref = _kept_ref(envelope.message_id, envelope, kept, digest)
        routes = worker.setup.routes
        held = [
            HeldRecipient(
                recipient=r, route=classify(r, routes).name, rule="internal error", reason=reason
            )
            for r in recipients or [UNKNOWN_RECIPIENTS]
        ]
        _hold(worker, ref, held, "internal_error")
    worker.records.quarantine(
        envelope.message_id,
        recipients,
        reason,
        kept_at=f"{kept.bucket}/{kept.key}" if kept is not None else "",
    )
    if path is not None:
        worker.spool.remove(path)


def quarantine_unreadable(worker: Worker, path: Path, error: ValueError) -> None:
    """An empty or torn spool file: kept whole, with a quarantine record and a timeline event
    that name it; if its envelope can still be read, its recipients are quarantined."""
    envelope = Spool.envelope_of(path)
    kept, digest = _keep_whole(worker.mail_manager.actions.objects, path)
    reason = f"spool file {path.name} is unreadable ({type(error).__name__}: {error})"
    if envelope is None:
        reason += "; its envelope cannot be read"
    message_id = envelope.message_id if envelope is not None else path.stem
    recipients = envelope.recipients if envelope is not None else []
    log.error("unreadable spool file quarantined", extra={"spool_file": path.name})
    if envelope is not None:
        worker.state.record_first(accepted_event(path, envelope, None))
    ref = _kept_ref(message_id, envelope, kept, digest)
    held = [  # recipients not known: the record still says why (release needs --to)
        HeldRecipient(recipient=r, route="unknown", rule="unreadable spool file", reason=reason)
        for r in recipients or [UNKNOWN_RECIPIENTS]
    ]
    _hold(worker, ref, held, "unreadable_spool_file")
    worker.records.quarantine(message_id, recipients, reason, kept_at=f"{kept.bucket}/{kept.key}")
    worker.spool.remove(path)


def quarantined_before(worker: Worker, path: Path, envelope: Envelope) -> bool:
    """Whether an earlier run kept this file's message and recorded every recipient."""
    objects = worker.mail_manager.actions.objects
    if not objects.exists(QUARANTINE_BUCKET, kept_key(path.name)):
        return False
    settled = {s.recipient.casefold() for s in worker.state.states(envelope.message_id)}
    return all(r.casefold() in settled for r in envelope.recipients)


def _keep(objects: ObjectStore, spool_file: str, message: RawMessage) -> tuple[ObjectInfo, str]:
    """The message kept under the spool file's name, and its digest."""
    with message.open() as body:
        kept = objects.put(QUARANTINE_BUCKET, kept_key(spool_file), body)
    return kept, message.sha256()


def _keep_whole(objects: ObjectStore, path: Path) -> tuple[ObjectInfo, str]:
    """The spool file as it is, and its digest."""
    with path.open("rb") as spooled:
        digest = hashlib.file_digest(spooled, "sha256").hexdigest()
        spooled.seek(0)
        kept = objects.put(QUARANTINE_BUCKET, kept_key(path.name), spooled)
    return kept, digest


def _kept_ref(
    message_id: str, envelope: Envelope | None, kept: ObjectInfo, digest: str
) -> MessageRef:
    """The quarantine record's reference to the kept bytes."""
    return MessageRef(
        message_id=message_id,
        bucket=kept.bucket,
        key=kept.key,
        digest=digest,
        envelope_sender=envelope.mail_from if envelope is not None else "",
        size=kept.size,
    )


def _hold(
    worker: Worker,
    ref: MessageRef,
    held: list[HeldRecipient],
    source: Literal["internal_error", "unreadable_spool_file"],
) -> None:
    services = worker.workflow.services
    if services.quarantine is not None:
        hold(
            services.quarantine,
            ref,
            held,
            held_at=worker.clock.now(),
            retention_days=services.quarantine_days,
            source=source,
        )


def adopt_earlier_quarantine(
    folder: Path,
    objects: ObjectStore,
    quarantine: Quarantine,
    timeline: Timeline,
    routes: Routes,
    *,
    now: datetime,
    retention_days: int,
) -> list[str]:
    """Spool files an earlier version kept in `$MXGATE_HOME/quarantine/` (its recipients
    quarantined naming that file, no record): each becomes what a quarantine makes now, the
    object `mxgate-quarantine/spool/<file>` and its record (`mxgate quarantine list|show|
    release|delete`, retention), then the old file goes. Run on start (when `folder` is
    there); the names adopted."""
    adopted = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        envelope: Envelope | None
        try:
            envelope, message = Spool.read(path)
        except ValueError:  # torn: kept whole, as an unreadable spool file is now
            envelope = None
            kept, digest = _keep_whole(objects, path)
        else:
            kept, digest = _keep(objects, path.name, message)
        message_id = envelope.message_id if envelope is not None else path.stem
        said = [s.detail for s in timeline.states(message_id) if s.outcome is Outcome.QUARANTINED]
        reason = said[0] if said else "kept by an earlier version"
        reason += f" (kept in quarantine/{path.name} by an earlier version)"
        recipients = (envelope.recipients if envelope is not None else []) or [UNKNOWN_RECIPIENTS]
        ref = _kept_ref(message_id, envelope, kept, digest)
        held = [
            HeldRecipient(
                recipient=r,
                route=classify(r, routes).name if envelope is not None else "unknown",
                rule="internal error" if envelope is not None else "unreadable spool file",
                reason=reason,
            )
            for r in recipients
        ]
        hold(  # durable: the object is fsynced first (the state's before_durable_commit)
            quarantine,
            ref,
            held,
            held_at=now,
            retention_days=retention_days,
            source="internal_error" if envelope is not None else "unreadable_spool_file",
        )
        path.unlink()
        adopted.append(path.name)
    return adopted
