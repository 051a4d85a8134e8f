"""What an operator acts on, whichever runtime holds it: the stores of one gateway (this
machine's files and SQLite, or the deployed stack's table, queues, bucket and archive) behind
the same ports, for the commands and the console. Each runtime's composition root builds one
(`local/runtime.py`, `adapters/aws/operator.py`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mxgate.ports import Archive, Clock, DeadLetters, Deferrals, ObjectStore, Timeline
from mxgate.routing.config import Routes
from mxgate.tracking import MessageIndex
from mxgate.workflow.quarantine import Quarantine


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
    aws: bool = False
