"""Worker processes: each takes spooled messages through the rule set and the workflow.

The pool initializer builds one Worker per process (the process-wide instance below is the
pool's documented pattern); `handle` is what the ingress submits, one spooled file a call,
and `handle_deferred` what the deferred queue's scheduler submits, one delivery a call.
"""

from __future__ import annotations

import atexit
import json
import logging
import shutil
import signal
from pathlib import Path

from mxgate.local.runtime import Worker, build_worker, load_setup
from mxgate.local.settings import LocalSettings
from mxgate.observability import configure_logging
from mxgate.timeline import Outcome, RecipientState, Stage, TimelineEvent
from mxgate.workflow.asl import ExecutionFailedError
from mxgate.workflow.model import DeferredDelivery

log = logging.getLogger("mxgate.worker")

_worker: Worker | None = None


def initialize(settings_json: str, mailbox_ports_json: str) -> None:
    global _worker  # noqa: PLW0603 -- one Worker per pool process, built once
    signal.signal(
        signal.SIGINT, signal.SIG_IGN
    )  # Ctrl-C reaches the whole group: the parent decides
    settings = LocalSettings.model_validate_json(settings_json)
    configure_logging(settings.log_level)
    _worker = build_worker(load_setup(settings), json.loads(mailbox_ports_json))
    atexit.register(_worker.close)


def handle(spool_file: str) -> str:
    assert _worker is not None, "initialize() runs first in every worker"
    return process_spooled(_worker, Path(spool_file))


def handle_deferred(record_id: str, document: str) -> str:
    assert _worker is not None, "initialize() runs first in every worker"
    return run_deferred(_worker, record_id, DeferredDelivery.model_validate_json(document))


def run_deferred(worker: Worker, record_id: str, deferred: DeferredDelivery) -> str:
    """One deferred (or redriven) delivery, run again through the state machine. The record
    is deleted once the execution ends; if the execution itself fails, it stays, and runs
    again when its lease runs out."""
    try:
        worker.workflow.redeliver(deferred.delivery)
    except ExecutionFailedError:
        log.exception("deferred delivery failed", extra={"record": record_id})
        return "failed"
    worker.state.finish_deferred(record_id)
    return "done"


def process_spooled(worker: Worker, path: Path) -> str:
    """Take one spooled message to its end. Never raises: a failure quarantines it."""
    try:
        envelope, raw = worker.spool.read(path)
    except FileNotFoundError:
        return "already done"
    try:
        worker.mail_manager.process(envelope, raw)
    except Exception as error:
        log.exception("processing failed", extra={"message_id": envelope.message_id})
        _quarantine(worker, path, envelope.message_id, envelope.recipients, error)
        return "quarantined"
    worker.spool.remove(path)
    return "done"


def _quarantine(
    worker: Worker, path: Path, message_id: str, recipients: list[str], error: Exception
) -> None:
    target = worker.setup.dirs.quarantine / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(path, target)
    clock = worker.workflow.services.clock
    reason = f"internal error: {type(error).__name__}: {error}"[:500]
    worker.state.record(
        TimelineEvent(
            message_id=message_id,
            at=clock.now(),
            stage=Stage.TERMINAL,
            detail=f"{reason}; kept in {target}",
        )
    )
    for recipient in recipients:
        worker.state.settle(
            RecipientState(
                message_id=message_id,
                recipient=recipient,
                outcome=Outcome.QUARANTINED,
                at=clock.now(),
                route="quarantine",
                detail=reason,
            )
        )
