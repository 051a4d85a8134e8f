"""The raw → delivered path on one machine, in the order a message takes it. The ingress
(`local/ingress.py`) applied the traffic policy, fsynced the message to a spool file and
answered 250; a worker process then, for each spool file (`receive_spooled`):

1. runs Mail Manager's rule set over it (`local/rule_set.py`: the rules, and their actions
   through `mailmanager/actions.py`); WriteToS3 stores the message for the workflow;
2. runs the state machine for each stored object (`local/workflow.py`: the deployed
   `statemachine/pipeline.asl.json`, each Task calling `workflow/steps.py`): Process plans the
   deliveries, Deliver hands each to its transport (`workflow/deliver.py`, `delivery/smtp.py`);
3. schedules a rule set retry for recipients whose actions failed for now (the spool file
   stays), or removes the spool file: every recipient has its end.

The deferred queue's records come back through `run_due`: a deferred delivery runs the state
machine again (straight to Deliver), a rule set retry runs steps 1 to 3 again. Nothing here
raises: what cannot be processed is quarantined, what fails on the way stays for the next try.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from mxgate.errors import PermanentError
from mxgate.local.bootstrap import Worker
from mxgate.local.rule_set_failures import retry_record_id
from mxgate.records import Deferred, DeferredDelivery, Envelope, RuleSetRetry
from mxgate.workflow.asl import ExecutionFailedError

log = logging.getLogger("mxgate.worker")


def receive_spooled(worker: Worker, path: Path) -> str:
    """Take one spooled message as far as it goes now: to its end (the file is removed), or to
    a rule set retry, which keeps the file. An unreadable file, or a failure while processing,
    quarantines the message; anything else (the quarantine itself failing) leaves the file for
    the next start."""
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
            retry = through_the_pipeline(worker, envelope, raw, spool_file=path.name)
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


def through_the_pipeline(
    worker: Worker,
    envelope: Envelope,
    raw: bytes,
    *,
    spool_file: str = "",
    retry: RuleSetRetry | None = None,
) -> RuleSetRetry | None:
    """Steps 1 to 3 for one message (its first run, or a retry's): the retry now scheduled for
    what is left open, or None when every recipient has its end."""
    mail_manager = worker.mail_manager
    # one commit for what the run records before its first read (group commit)
    with mail_manager.exclusive(envelope.message_id), worker.state.grouped():
        run = mail_manager.apply_rule_set(envelope, raw, retry=retry)
        for bucket, key in run.stored:
            worker.workflow.start(bucket, key)
        return mail_manager.retry_open(run, spool_file=spool_file, retry=retry)


def run_due(worker: Worker, record: Deferred) -> str:
    """One record of the deferred queue whose time has come."""
    if isinstance(record, DeferredDelivery):
        return _redeliver(worker, record)
    return _retry_rule_set(worker, record)


def _redeliver(worker: Worker, deferred: DeferredDelivery) -> str:
    """A deferred (or redriven) delivery, run again through the state machine. The record is
    deleted once the execution ends; if the execution itself fails, it stays, and runs again
    when its lease runs out."""
    try:
        worker.workflow.redeliver(deferred.delivery)
    except ExecutionFailedError:
        log.exception("deferred delivery failed", extra={"record": deferred.record_id})
        return "failed"
    worker.state.finish_deferred(deferred.record_id)
    return "done"


def _retry_rule_set(worker: Worker, retry: RuleSetRetry) -> str:
    """The rule set again for a retry's recipients, from the kept spool file or the dead
    letter's stored copy. The record is rescheduled in place while recipients stay open, and
    deleted (with the spool file) once each has its end."""
    path = worker.spool.directory / retry.spool_file if retry.spool_file else None
    message_id = retry.message_id
    try:
        try:
            if path is not None:
                _, raw = worker.spool.read(path)
            else:
                raw = worker.mail_manager.actions.objects.get(retry.bucket, retry.key)
        except (FileNotFoundError, PermanentError, ValueError) as error:
            gone = RuntimeError(f"the message kept for the retry is gone or unreadable: {error}")
            _quarantine(worker, path, message_id, retry.recipients, gone)
            worker.state.finish_deferred(retry.record_id)
            return "quarantined"
        try:
            again = through_the_pipeline(worker, retry.envelope, raw, retry=retry)
        except Exception as error:
            log.exception("rule set retry failed", extra={"message_id": message_id})
            _quarantine(worker, path, message_id, retry.recipients, error)
            worker.state.finish_deferred(retry.record_id)
            return "quarantined"
        if again is not None:
            return "retrying"  # the same record, due later
        worker.state.finish_deferred(retry.record_id)
        if path is not None:
            worker.spool.remove(path)
    except Exception:  # the record stays, and runs again when its lease runs out
        log.exception("rule set retry not run", extra={"record": retry.record_id})
        return "failed"
    return "done"


def _quarantine(
    worker: Worker, path: Path | None, message_id: str, recipients: list[str], error: Exception
) -> None:
    """Quarantine the recipients, and move the spool file (if any) to quarantine/."""
    target = _move_to_quarantine(worker, path) if path is not None and path.exists() else None
    worker.records.quarantine(
        message_id,
        recipients,
        f"internal error: {type(error).__name__}: {error}",
        kept_at=str(target) if target is not None else "",
    )


def _quarantine_unreadable(worker: Worker, path: Path, error: ValueError) -> None:
    """An empty or torn spool file: moved to quarantine/, a timeline event names it, and if its
    envelope line can still be read, its recipients are quarantined."""
    target = _move_to_quarantine(worker, path)
    with target.open("rb") as spooled:
        first_line = spooled.readline(1 << 20).rstrip(b"\n")
    try:
        envelope: Envelope | None = Envelope.model_validate_json(first_line)
    except ValueError:
        envelope = None
    reason = f"spool file {path.name} is unreadable ({type(error).__name__}: {error})"
    if envelope is None:
        reason += "; its envelope cannot be read"
    log.error("unreadable spool file quarantined", extra={"spool_file": path.name})
    worker.records.quarantine(
        envelope.message_id if envelope is not None else path.stem,
        envelope.recipients if envelope is not None else [],
        reason,
        kept_at=str(target),
    )


def _move_to_quarantine(worker: Worker, path: Path) -> Path:
    target = worker.setup.dirs.quarantine / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(path, target)
    return target
