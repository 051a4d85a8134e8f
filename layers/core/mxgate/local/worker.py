"""Worker processes: each takes spooled messages through the rule set and the workflow.

The pool initializer builds one Worker per process (the process-wide instance below is the
pool's documented pattern); `handle` is what the ingress submits, one spooled file a call,
and `handle_deferred` what the deferred queue's scheduler submits, one delivery (or one rule
set retry of a message) a call.
"""

from __future__ import annotations

import atexit
import json
import logging
import shutil
import signal
from pathlib import Path

from mxgate.errors import PermanentError
from mxgate.local.mailmanager import RuleSetRetry, retry_record_id
from mxgate.local.runtime import Paths, Worker, build_worker, load_setup
from mxgate.local.settings import LocalSettings
from mxgate.observability import configure_logging
from mxgate.timeline import Outcome, RecipientState, Stage, TimelineEvent
from mxgate.workflow.asl import ExecutionFailedError
from mxgate.workflow.model import DeferredDelivery, Envelope

log = logging.getLogger("mxgate.worker")

_worker: Worker | None = None


def initialize(settings_json: str, mailbox_ports_json: str) -> None:
    global _worker  # noqa: PLW0603 -- one Worker per pool process, built once
    signal.signal(
        signal.SIGINT, signal.SIG_IGN
    )  # Ctrl-C reaches the whole group: the parent decides
    settings = LocalSettings.model_validate_json(settings_json)
    configure_logging(settings.log_level, Paths(settings.home).error_log)
    _worker = build_worker(load_setup(settings), json.loads(mailbox_ports_json))
    atexit.register(_worker.close)


def handle(spool_file: str) -> str:
    assert _worker is not None, "initialize() runs first in every worker"
    return process_spooled(_worker, Path(spool_file))


def handle_deferred(record_id: str, document: str) -> str:
    assert _worker is not None, "initialize() runs first in every worker"
    if RuleSetRetry.describes(json.loads(document)):
        return run_rule_set_retry(_worker, record_id, RuleSetRetry.model_validate_json(document))
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
    """Take one spooled message as far as it goes now: to its end (the file is removed), or to
    a rule set retry, which keeps the file. Never raises: an unreadable file, or a failure
    while processing, quarantines the message; anything else (the quarantine itself failing)
    leaves the file for the next start."""
    try:
        try:
            envelope, raw = worker.spool.read(path)
        except FileNotFoundError:
            return "already done"
        except ValueError as error:  # empty or torn: no retry can make it readable
            _quarantine_unreadable(worker, path, error)
            return "quarantined"
        if worker.state.is_scheduled(retry_record_id(envelope.message_id)):
            return "retry pending"  # a replay on start: its rule set retry owns the file
        try:
            retry = worker.mail_manager.take(envelope, raw, spool_file=path.name)
        except Exception as error:
            log.exception("processing failed", extra={"message_id": envelope.message_id})
            _quarantine(worker, path, envelope.message_id, envelope.recipients, error)
            return "quarantined"
        if retry is not None:
            return "retrying"
        worker.spool.remove(path)
    except Exception:
        log.exception("spool file left for the next start", extra={"spool_file": path.name})
        return "failed"
    return "done"


def run_rule_set_retry(worker: Worker, record_id: str, retry: RuleSetRetry) -> str:
    """Run the rule set again for a retry's recipients, from the kept spool file or the dead
    letter's stored copy. The record is rescheduled in place while recipients stay open, and
    deleted (with the spool file) once each has its end. Never raises, as process_spooled."""
    path = worker.spool.directory / retry.spool_file if retry.spool_file else None
    message_id = retry.envelope.message_id
    try:
        try:
            if path is not None:
                _, raw = worker.spool.read(path)
            else:
                raw = worker.mail_manager.objects.get(retry.bucket, retry.key)
        except (FileNotFoundError, PermanentError, ValueError) as error:
            gone = RuntimeError(f"the message kept for the retry is gone or unreadable: {error}")
            _quarantine(worker, path, message_id, retry.recipients, gone)
            worker.state.finish_deferred(record_id)
            return "quarantined"
        try:
            again = worker.mail_manager.take(retry.envelope, raw, retry=retry)
        except Exception as error:
            log.exception("rule set retry failed", extra={"message_id": message_id})
            _quarantine(worker, path, message_id, retry.recipients, error)
            worker.state.finish_deferred(record_id)
            return "quarantined"
        if again is not None:
            return "retrying"  # the same record, due later
        worker.state.finish_deferred(record_id)
        if path is not None:
            worker.spool.remove(path)
    except Exception:  # the record stays, and runs again when its lease runs out
        log.exception("rule set retry not run", extra={"record": record_id})
        return "failed"
    return "done"


def _quarantine(
    worker: Worker, path: Path | None, message_id: str, recipients: list[str], error: Exception
) -> None:
    """Settle the recipients `quarantined`, and move the spool file (if any) to quarantine/."""
    target = _move_to_quarantine(worker, path) if path is not None and path.exists() else None
    clock = worker.workflow.services.clock
    reason = f"internal error: {type(error).__name__}: {error}"[:500]
    worker.state.record(
        TimelineEvent(
            message_id=message_id,
            at=clock.now(),
            stage=Stage.TERMINAL,
            detail=f"{reason}; kept in {target}" if target is not None else reason,
        )
    )
    _settle_quarantined(worker, message_id, recipients, reason)


def _quarantine_unreadable(worker: Worker, path: Path, error: ValueError) -> None:
    """An empty or torn spool file: moved to quarantine/, a timeline event names it, and if its
    envelope line can still be read, its recipients are settled `quarantined`."""
    target = _move_to_quarantine(worker, path)
    with target.open("rb") as spooled:
        first_line = spooled.readline(1 << 20).rstrip(b"\n")
    try:
        envelope: Envelope | None = Envelope.model_validate_json(first_line)
    except ValueError:
        envelope = None
    message_id = envelope.message_id if envelope is not None else path.stem
    reason = f"spool file {path.name} is unreadable ({type(error).__name__}: {error})"[:400]
    worker.state.record(
        TimelineEvent(
            message_id=message_id,
            at=worker.workflow.services.clock.now(),
            stage=Stage.TERMINAL,
            detail=f"{reason}; moved to {target}"
            + ("" if envelope is not None else "; its envelope cannot be read"),
        )
    )
    log.error("unreadable spool file quarantined", extra={"spool_file": path.name})
    if envelope is not None:
        _settle_quarantined(worker, message_id, envelope.recipients, reason)


def _move_to_quarantine(worker: Worker, path: Path) -> Path:
    target = worker.setup.dirs.quarantine / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(path, target)
    return target


def _settle_quarantined(
    worker: Worker, message_id: str, recipients: list[str], reason: str
) -> None:
    clock = worker.workflow.services.clock
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
