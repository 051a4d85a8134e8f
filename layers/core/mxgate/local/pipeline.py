"""The raw → delivered path on one machine, in the order a message takes it. The ingress
(`local/ingress.py`) applied the traffic policy, fsynced the message to a spool file and
answered 250; a worker process then, for each spool file (`receive_spooled`):

1. runs Mail Manager's rule set over it (`local/rule_set.py`: the rules, and their actions
   through `mailmanager/actions.py`); WriteToS3 stores the message for the workflow;
2. starts the state machine for each stored object (`local/workflow.py`: the deployed
   `statemachine/pipeline.asl.json`, each Task calling `workflow/steps.py`): Process plans the
   deliveries, Deliver hands each to its transport (`workflow/deliver.py`, `delivery/smtp.py`);
   a Task waiting out a Retry interval is left in the deferred queue, never in this worker;
3. schedules a rule set retry for recipients whose actions failed for now (the spool file
   stays), or removes the spool file: every recipient has its end, or a record that leads
   there (a retry, a deferral) is written first, and the objects such a record points at
   were fsynced before it (`FileObjectStore.make_written_durable`; a message delivered at
   once is not fsynced again: `one_run`). The file goes only once an fsync of the state
   database's WAL (`SqliteDatabase.make_durable`) has made those ends durable
   (`Spool.removed_after`): under `mxgate run`, the gateway's, after its next checkpoint, for
   every file its workers finished meanwhile (`spool.FinishedFiles`); else one at the end of
   the worker's call (`receive_batch`, `run_due`).

The deferred queue's records come back through `run_due`: a Task's retry resumes its
execution, a deferred delivery runs the state machine again (straight to Deliver), deferred
processing starts a new execution of the stored message, a rule set retry runs steps 1 to 3
again.

Nothing here raises. A failure that may pass (a full disk, a busy database: `kind_of` says
TRANSIENT) is never quarantined: the spool file or the record stays (`Result.KEPT`) and the
gateway tries it again with backoff, or the next start replays it. What can never be processed
is quarantined, its record written before the spool file leaves the spool
(`local/spool_quarantine.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from enum import StrEnum
from pathlib import Path

from mxgate.errors import FailureKind, PermanentError, kind_of
from mxgate.local.bootstrap import Worker
from mxgate.local.rule_set_failures import retry_record_id
from mxgate.local.spool import accepted_event
from mxgate.local.spool_quarantine import (
    quarantine_failed,
    quarantine_unreadable,
    quarantined_before,
)
from mxgate.message.raw import RawMessage
from mxgate.observability import hop
from mxgate.records import (
    UNKNOWN_RECIPIENTS,
    Deferred,
    DeferredDelivery,
    DeferredProcessing,
    Delivery,
    Envelope,
    RuleSetRetry,
    Stage,
    StepRetry,
    StoredObject,
    TimelineEvent,
)
from mxgate.workflow.envelope import read_envelope

log = logging.getLogger("mxgate.worker")


class Result(StrEnum):
    """What a worker did with one spool file or one deferred record."""

    DONE = "done"
    ALREADY_DONE = "already done"
    RETRY_PENDING = "retry pending"  # a rule set retry owns the spool file
    RETRYING = "retrying"  # a rule set retry is scheduled
    QUARANTINED = "quarantined"
    KEPT = "kept"  # failed for now: the spool file or the record stays, to be tried again


def receive_batch(
    worker: Worker, paths: list[Path], *, fresh: Collection[Path] = ()
) -> list[Result]:
    """Spool files one after another, each to its own end (`receive_spooled`; `fresh`: those
    the ingress just spooled); the finished ones go together at the end, after one fsync of
    the state database. When that fails, they stay (KEPT): tried again, each is found
    finished."""
    results: list[Result] = []
    try:
        with worker.spool.removed_after(worker.state.make_durable) as finished:
            results = [receive_spooled(worker, path, fresh=path in fresh) for path in paths]
    except Exception as error:  # noqa: BLE001 -- the files stay: tried again, or replayed
        _kept(error, spool_files=" ".join(path.name for path in finished))
        return [
            Result.KEPT if path in finished else result
            for path, result in zip(paths, results, strict=True)
        ]
    return results


def receive_spooled(worker: Worker, path: Path, *, fresh: bool = False) -> Result:
    """Take one spooled message as far as it goes now: to its end (the file is removed), or to
    a rule set retry, which keeps the file. An unreadable file, or a permanent failure while
    processing, quarantines the message; a failure for now keeps the file. `fresh`: the
    ingress just spooled it and no worker was given it before (`Gateway.submit_fresh`), so no
    earlier run can have left anything to find: its replay's reads are skipped."""
    hop("taken", spool_file=path.name)
    try:
        with worker.objects.one_run(), worker.spool.removed_after(worker.state.make_durable):
            return _receive(worker, path, fresh=fresh)
    except Exception as error:  # noqa: BLE001 -- the file stays: tried again, or replayed
        _kept(error, spool_file=path.name)
        return Result.KEPT


def _receive(worker: Worker, path: Path, *, fresh: bool) -> Result:
    try:
        envelope, message, modified = worker.spool.read_spooled(path)
    except FileNotFoundError:
        return Result.ALREADY_DONE
    except ValueError as error:  # empty or torn: no retry can make it readable
        quarantine_unreadable(worker, path, error)
        return Result.QUARANTINED
    if not fresh:  # a replayed or retried file: what an earlier run did is found first
        if quarantined_before(worker, path, envelope):
            worker.spool.remove(path)  # a quarantine interrupted after its record: finished now
            return Result.QUARANTINED
        if worker.state.is_scheduled(retry_record_id(envelope.message_id)):
            return Result.RETRY_PENDING  # a replay on start: its rule set retry owns the file
        if _finished_before(worker, envelope):
            worker.spool.remove(path)  # its batch's fsync failed, or its worker died before it
            return Result.ALREADY_DONE
    accepted = accepted_event(path, envelope, message.size, modified)
    try:
        retry = through_the_pipeline(
            worker, envelope, message, spool_file=path.name, accepted=accepted, fresh=fresh
        )
    except Exception as error:
        if kind_of(error) is FailureKind.TRANSIENT:
            raise  # the group's writes were dropped: the next try writes the event again
        log.exception("processing failed", extra={"message_id": envelope.message_id})
        worker.state.record_first(accepted)
        quarantine_failed(worker, envelope, envelope.recipients, error, path=path, message=message)
        return Result.QUARANTINED
    if retry is not None:
        return Result.RETRYING
    worker.spool.remove(path, settled=_finished_before(worker, envelope))
    return Result.DONE


def _finished_before(worker: Worker, envelope: Envelope) -> bool:
    """Whether an earlier run took every recipient to its end: the file is then done without
    a run, which would record the rule set's events (and run its actions) again. A recipient
    whose route has a webhook or hooks is run again: they settle nothing, so its end does not
    say they ran (their idempotency records keep them from running twice)."""
    ends = {s.recipient.casefold(): s.route for s in worker.state.states(envelope.message_id)}
    routes = worker.setup.routes
    for recipient in envelope.recipients:
        route = ends.get(recipient.casefold())
        if route is None or routes.route_hooks(route):
            return False
        app = routes.apps.get(route)
        if app is not None and app.webhook is not None:
            return False
    return bool(envelope.recipients)


def through_the_pipeline(
    worker: Worker,
    envelope: Envelope,
    message: RawMessage,
    *,
    spool_file: str = "",
    retry: RuleSetRetry | None = None,
    accepted: TimelineEvent | None = None,
    fresh: bool = False,
) -> RuleSetRetry | None:
    """Steps 1 to 3 for one message (its first run, or a retry's): the retry now scheduled for
    what is left open, or None when every recipient has its end (or its record). `accepted`:
    the first run's `accepted` event, written with the run's first commit (once: a replay of
    the spool file finds it written). `fresh`: no run of the message came before (nothing
    written to look for)."""
    mail_manager = worker.mail_manager
    # one commit for what the run records before its first read (group commit)
    with (
        mail_manager.exclusive(envelope.message_id),
        worker.state.grouped(),
        mail_manager.actions.parses.one_message(),  # the rule set's parse, for Process
    ):
        if accepted is not None and fresh:
            worker.state.record(accepted)
        elif accepted is not None:
            worker.state.record_first(accepted)
        run = mail_manager.apply_rule_set(envelope, message, retry=retry, fresh=fresh)
        for (bucket, key), stored_envelope in run.stored.items():
            worker.workflow.start(bucket, key, stored_envelope)
        return mail_manager.retry_open(run, spool_file=spool_file, retry=retry)


def run_due(worker: Worker, record: Deferred) -> Result:
    """One record of the deferred queue whose time has come. The record is deleted once its
    work is done (or once what comes next is recorded); on a failure for now it stays."""
    try:
        with worker.objects.one_run(), worker.spool.removed_after(worker.state.make_durable):
            if isinstance(record, StepRetry):
                return _resume(worker, record)
            if isinstance(record, DeferredDelivery):
                return _redeliver(worker, record)
            if isinstance(record, DeferredProcessing):
                return _process_again(worker, record)
            return _retry_rule_set(worker, record)
    except Exception as error:  # noqa: BLE001 -- the record stays: tried again
        _kept(error, record=record.record_id)
        return Result.KEPT


def _resume(worker: Worker, retry: StepRetry) -> Result:
    """A Task whose Retry interval has passed: its execution goes on from there."""
    try:
        worker.workflow.resume(retry)
    except Exception as error:
        if kind_of(error) is FailureKind.TRANSIENT:
            raise
        _execution_failed(worker, retry.message_id, retry.execution.document, error)
    worker.state.finish_deferred(retry.record_id)
    return Result.DONE


def _redeliver(worker: Worker, deferred: DeferredDelivery) -> Result:
    """A deferred (or redriven) delivery, run again through the state machine."""
    try:
        worker.workflow.redeliver(deferred.delivery)
    except Exception as error:
        if kind_of(error) is FailureKind.TRANSIENT:
            raise
        _execution_failed(
            worker, deferred.message_id, {"delivery": deferred.delivery.model_dump()}, error
        )
    worker.state.finish_deferred(deferred.record_id)
    return Result.DONE


def _process_again(worker: Worker, deferred: DeferredProcessing) -> Result:
    """A stored message to run through Process again (its processing failed for now, or a
    redrive): a new execution of it, which goes on with its deferral."""
    try:
        worker.workflow.reprocess(deferred)
    except Exception as error:
        if kind_of(error) is FailureKind.TRANSIENT:
            raise
        document = {"stored": deferred.stored.model_dump(mode="json")}
        _execution_failed(worker, deferred.message_id, document, error)
    worker.state.finish_deferred(deferred.record_id)
    return Result.DONE


def _retry_rule_set(worker: Worker, retry: RuleSetRetry) -> Result:
    """The rule set again for a retry's recipients, from the kept spool file or the dead
    letter's stored copy. The record is rescheduled in place while recipients stay open, and
    deleted (then the spool file) once each has its end."""
    path = worker.spool.directory / retry.spool_file if retry.spool_file else None
    message_id = retry.message_id
    try:
        if path is not None:
            _, message = worker.spool.read(path)
        else:
            message = RawMessage.stored(
                worker.mail_manager.actions.objects, retry.bucket, retry.key
            )
    except (FileNotFoundError, PermanentError, ValueError) as error:
        gone = RuntimeError(f"the message kept for the retry is gone or unreadable: {error}")
        quarantine_failed(worker, retry.envelope, retry.recipients, gone, path=path, message=None)
        worker.state.finish_deferred(retry.record_id)
        return Result.QUARANTINED
    try:
        again = through_the_pipeline(worker, retry.envelope, message, retry=retry)
    except Exception as error:
        if kind_of(error) is FailureKind.TRANSIENT:
            raise
        log.exception("rule set retry failed", extra={"message_id": message_id})
        quarantine_failed(
            worker, retry.envelope, retry.recipients, error, path=path, message=message
        )
        worker.state.finish_deferred(retry.record_id)
        return Result.QUARANTINED
    if again is not None:
        return Result.RETRYING  # the same record, due later
    worker.state.finish_deferred(retry.record_id)  # first: a file without a record is replayed
    if path is not None:  # not settled: what the retry left waiting, a replay would run again
        worker.spool.remove(path, settled=False)
    return Result.DONE


# ----------------------------------------------------------------------------- failures


def _kept(error: Exception, **where: str) -> None:
    """Say why work stays for another try: a warning for what may pass, with the traceback
    for anything else (which is a fault to look at)."""
    if kind_of(error) is FailureKind.TRANSIENT:
        log.warning(
            "failed for now; kept and tried again later",
            extra={**where, "error": f"{type(error).__name__}: {error}"},
        )
    else:
        log.error("failed; kept and tried again later", extra=where, exc_info=error)


def _execution_failed(worker: Worker, message_id: str, document: object, error: Exception) -> None:
    """An execution that failed for good in a step that should never fail so (its last
    steps, DeadLetter and DeadLetterProcessing, did): its recipients are quarantined with the
    reason, so none is left without an end. A delivery that settles nothing (a hook) only
    says so."""
    reason = f"execution failed: {type(error).__name__}: {error}"
    log.error("execution failed for good", extra={"message_id": message_id, "error": reason})
    detail = document.get("delivery") if isinstance(document, dict) else None
    if isinstance(detail, dict):
        delivery = Delivery.model_validate(detail)
        if delivery.settles:
            worker.records.quarantine(message_id, delivery.recipients, reason)
        else:
            worker.records.note(message_id, Stage.ATTEMPT, f"{delivery.destination}: {reason}")
        return
    # a message's execution: its input (a new message's), or a later state's `stored`
    given = document.get("stored", document) if isinstance(document, dict) else document
    stored = StoredObject.model_validate(given)
    envelope = stored.envelope or read_envelope(
        worker.mail_manager.actions.objects, stored.bucket, stored.key
    )
    worker.records.quarantine(
        message_id,
        envelope.recipients or [UNKNOWN_RECIPIENTS],
        reason,
        kept_at=f"{stored.bucket}/{stored.key}",
    )
