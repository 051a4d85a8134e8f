"""What an operator acts on, whichever runtime holds it: the stores of one gateway (this
machine's files and SQLite, or the deployed stack's table, queues, bucket and archive) behind
the same ports, for the commands and the console. Each runtime's composition root builds one
(`local/bootstrap.py`, `adapters/aws/bootstrap.py`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mxgate.archive.index import Archive
from mxgate.errors import ConfigError
from mxgate.ports import Clock, DeadLetters, Deferrals, ObjectStore, Quarantine, Timeline
from mxgate.records import QuarantineRecord, RuleSetDeadLetter
from mxgate.routing.routes import Routes
from mxgate.tracking import MessageIndex
from mxgate.workflow.dead_letter import redrive
from mxgate.workflow.quarantine import delete, find, release

if TYPE_CHECKING:
    from mxgate.adapters.aws.deferral import StrandedDeferrals


@dataclass
class Desk:
    timeline: Timeline
    messages: MessageIndex  # tracking searches
    dead_letters: DeadLetters
    deferrals: Deferrals
    quarantine: Quarantine
    archive: Archive
    objects: ObjectStore
    routes: Routes
    clock: Clock
    actor: str  # who acts, for the timeline ("alice@laptop", an IAM ARN)
    where: str  # where the stores are, for messages
    after_queue: str  # what happens to a queued delivery now
    delete_object: Callable[[str, str], None]
    forget_notices: Callable[[set[str]], object] | None = None  # AWS: redriven records' notices
    mailboxes: Path | None = None  # the local mailbox hosts' Maildirs (this machine only)
    spool: Path | None = None  # accepted messages no worker has taken yet (this machine only)
    # AWS: deferred records the Redeliver function could not start (the deferred queue's own
    # dead-letter queue), listed and redriven with the dead letters
    stranded: StrandedDeferrals | None = None
    aws: bool = False


# ----------------------------------------------------------------------------- what operators do
# The commands and the console do these alike.


def redrive_one(desk: Desk, record_id: str, *, aws: bool) -> dict[str, object]:
    """A delivery goes back to the deferred queue, a message Process could not handle goes
    through Process again; a rule set dead letter goes back through the rule set (on this
    machine only: on AWS, Mail Manager runs the rules)."""
    if aws and isinstance(desk.dead_letters.get(record_id), RuleSetDeadLetter):
        raise ConfigError(f"{record_id} is a local rule set dead letter; redrive it without --aws")
    queued = redrive(
        record_id,
        dead_letters=desk.dead_letters,
        deferrals=desk.deferrals,
        timeline=desk.timeline,
        clock=desk.clock,
    )
    return {
        "id": record_id,
        "queued_as": queued.record_id,
        "recipients": queued.recipients,
        "message_id": queued.message_id,
    }


def release_message(desk: Desk, quarantine_id: str, recipient: str | None) -> dict[str, Any]:
    """Release one quarantined message; what the command and the console report."""
    record = find(desk.quarantine, quarantine_id)
    queued = release(
        record,
        to=recipient,
        by=desk.actor,
        routes=desk.routes,
        quarantine=desk.quarantine,
        deferrals=desk.deferrals,
        timeline=desk.timeline,
        clock=desk.clock,
    )
    return {
        "id": record.quarantine_id,
        "message_id": record.message_id,
        "released": [r for q in queued for r in q.delivery.recipients],
        "queued_as": [q.record_id for q in queued],
        "by": desk.actor,
    }


def delete_message(desk: Desk, quarantine_id: str) -> QuarantineRecord:
    record = find(desk.quarantine, quarantine_id)
    delete(
        record,
        by=desk.actor,
        quarantine=desk.quarantine,
        timeline=desk.timeline,
        clock=desk.clock,
        delete_object=desk.delete_object,
    )
    return record
