"""Nothing stranded: what fails only for now (a full disk, here a real one: a small tmpfs
filled to its last byte) keeps the spool file or the record and is tried again, never
quarantined; what is quarantined is recorded before its spool file leaves the spool; a
message whose processing failed for now is processed again later (dead-lettered, never
quarantined, past its lifetime); an execution that fails for good leaves none of its
recipients without an end."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from mxgate.local.pipeline import receive_spooled
from mxgate.local.spool_quarantine import QUARANTINE_BUCKET
from mxgate.records import (
    Deferral,
    DeferredProcessing,
    Outcome,
    Stage,
    StepRetry,
    SuspendedExecution,
)
from mxgate.workflow.steps import STEPS
from tests.records import a_delivery
from tests.support import SpooledFile, fill, small_filesystem
from tests.worker_harness import (
    RAW,
    accept,
    mailbox,
    outcomes,
    run_due,
    wait_out_retries,
)

RAW_BUCKET = "mxgate-rawmailbucket"


@pytest.fixture
def small_home(tmp_path: Path):
    with small_filesystem(tmp_path / "fs", "4m") as mount:
        yield mount / "home"


def quarantined(worker) -> list[str]:
    """The spool files kept in quarantine."""
    kept = worker.setup.dirs.objects / QUARANTINE_BUCKET / "spool"
    return sorted(p.name for p in kept.iterdir()) if kept.is_dir() else []


def test_a_full_disk_keeps_the_message_in_the_spool_and_quarantines_nothing(workers, small_home):
    worker = workers(home=small_home)
    first = accept(worker, "01BEFOREFULL", ["alice@nutrition.co"])
    assert receive_spooled(worker, first) == "done"  # the databases and folders exist now
    path = accept(worker, "01DISKFULL", ["alice@nutrition.co", "carol@nutrition.co"])
    filler = fill(small_home.parent)

    assert receive_spooled(worker, path) == "kept"
    assert receive_spooled(worker, path) == "kept"  # as often as it is tried while full
    assert path.exists()
    assert quarantined(worker) == []
    assert outcomes(worker, "01DISKFULL") == {}

    filler.unlink()
    assert receive_spooled(worker, path) == "done"
    assert not path.exists()
    assert outcomes(worker, "01DISKFULL") == {
        "alice@nutrition.co": Outcome.DELIVERED,
        "carol@nutrition.co": Outcome.DELIVERED,
    }
    assert len(mailbox(worker, "workspace", "alice@nutrition.co")) == 2  # one per message
    assert len(mailbox(worker, "m365", "carol@nutrition.co")) == 1


def test_a_quarantine_is_recorded_before_the_spool_file_leaves_the_spool(workers, small_home):
    """The issue's lost message: processing failed, and so did the quarantine's record. The
    spool file stays where the next run finds it; once the record can be written, it is
    quarantined with its record, and only then does the file leave the spool."""
    worker = workers(home=small_home)
    warm = accept(worker, "01WARM", ["alice@nutrition.co"])
    assert receive_spooled(worker, warm) == "done"
    path = accept(worker, "01NOPOINT", ["alice@nutrition.co"], ingress_point="RemovedPoint")
    filler = fill(small_home.parent)

    assert receive_spooled(worker, path) == "kept"
    assert path.exists()
    assert outcomes(worker, "01NOPOINT") == {}

    filler.unlink()
    assert receive_spooled(worker, path) == "quarantined"
    assert not path.exists()
    assert quarantined(worker) == [path.name]
    (record,) = worker.workflow.services.quarantine.records()
    assert (record.message_id, record.source) == ("01NOPOINT", "internal_error")
    (state,) = worker.state.states("01NOPOINT")
    assert state.outcome is Outcome.QUARANTINED
    assert "unknown ingress point 'RemovedPoint'" in state.detail


def test_a_quarantine_cut_short_after_its_record_is_finished_on_the_next_run(worker):
    path = accept(worker, "01HALFWAY", ["alice@nutrition.co"], ingress_point="RemovedPoint")
    kept = SpooledFile.of(path)
    assert receive_spooled(worker, path) == "quarantined"
    kept.restore(path)  # as if the process died before the spool file was removed
    assert receive_spooled(worker, path) == "quarantined"
    assert not path.exists()
    assert [s.outcome for s in worker.state.states("01HALFWAY")] == [Outcome.QUARANTINED]
    assert quarantined(worker) == [path.name]
    events = worker.state.events("01HALFWAY")
    (event,) = [e for e in events if e.stage is Stage.TERMINAL and e.recipient is None]
    assert "unknown ingress point" in event.detail  # finished, not quarantined a second time


def stored(worker, message_id: str, recipients: list[str]) -> dict[str, object]:
    """A message as WriteToS3 leaves it for the workflow: the object, and the execution input
    that names it with its envelope."""
    spool = accept(worker, message_id, recipients)
    envelope, message = worker.spool.read(spool)
    raw = message.read()
    spool.unlink()
    key = f"raw/{message_id}"
    worker.mail_manager.actions.objects.put(RAW_BUCKET, key, raw)
    return {"bucket": RAW_BUCKET, "key": key, "envelope": envelope.model_dump(mode="json")}


def processing_failed(
    worker,
    execution: dict[str, object],
    error: str = "TransientError",
    deferral: Deferral | None = None,
) -> object:
    """Process failed after its retries: the state machine's Catch hands the stored message
    (with its deferral, on a later attempt) and the error to DeferProcessing for a failure for
    now, to DeadLetterProcessing for any other."""
    document: dict[str, object] = {
        "stored": execution,
        "error": {"Error": error, "Cause": '{"errorMessage":"state database full"}'},
    }
    if deferral is not None:
        document["deferral"] = deferral.model_dump(mode="json")
    step = "defer" if error == "TransientError" else "dead_letter"
    return STEPS[step](document, worker.workflow.services)


def test_processing_that_failed_for_now_is_done_again_later_not_quarantined(workers):
    worker = workers(delivery={"backoff_min": "1m", "queue_lifetime": "1h"})
    execution = stored(worker, "01PROCESSLATER", ["alice@nutrition.co"])
    assert processing_failed(worker, execution)["results"] == []  # type: ignore[index]
    assert outcomes(worker, "01PROCESSLATER") == {}
    (waiting,) = [w.record for w in worker.state.deferred("01PROCESSLATER")]
    assert isinstance(waiting, DeferredProcessing)
    assert waiting.deferral is not None
    assert (waiting.deferral.attempts, waiting.stored.key) == (1, execution["key"])
    assert 54 <= (waiting.due_at - worker.clock.now()).total_seconds() <= 66  # 1m, ±10%
    assert "state database full" in waiting.deferral.last_error

    assert run_due(worker) == ["done"]  # a new execution of the stored message
    wait_out_retries(worker)
    assert outcomes(worker, "01PROCESSLATER") == {"alice@nutrition.co": Outcome.DELIVERED}
    assert worker.state.deferred("01PROCESSLATER") == []


def test_processing_that_keeps_failing_for_now_is_dead_lettered_past_its_lifetime(workers):
    """Never a final quarantine for a fault: past the lifetime the message is dead-lettered,
    and `mxgate dlq redrive` runs it again."""
    worker = workers(delivery={"backoff_min": "10m", "queue_lifetime": "1h"})
    execution = stored(worker, "01NEVERWORKS", ["alice@nutrition.co"])
    processing_failed(worker, execution)
    (first,) = [w.record for w in worker.state.deferred("01NEVERWORKS")]
    assert isinstance(first, DeferredProcessing)
    # its second attempt failed too: counted from the first, whose deferral its input carries
    processing_failed(worker, execution, deferral=first.deferral)
    attempts = [w.record for w in worker.state.deferred("01NEVERWORKS")]
    assert sorted(
        r.deferral.attempts for r in attempts if isinstance(r, DeferredProcessing) and r.deferral
    ) == [1, 2]
    second = max(attempts, key=lambda r: r.record_id)
    assert isinstance(second, DeferredProcessing)
    worker.clock.advance(3601)
    processing_failed(worker, execution, deferral=second.deferral)
    (state,) = worker.state.states("01NEVERWORKS")
    assert state.outcome is Outcome.DEAD_LETTERED
    assert "gave up after" in state.detail
    assert quarantined(worker) == []


def test_a_permanent_processing_failure_is_dead_lettered_at_once(worker):
    execution = stored(worker, "01BROKEN", ["alice@nutrition.co"])
    processing_failed(worker, execution, error="PermanentError")
    assert outcomes(worker, "01BROKEN") == {"alice@nutrition.co": Outcome.DEAD_LETTERED}
    assert worker.state.deferred("01BROKEN") == []


def test_an_execution_that_cannot_go_on_quarantines_its_recipients(worker):
    """A Task's retry whose state the definition no longer has (changed between runs)."""
    delivery = a_delivery("01GONESTATE", ["dave@nutrition.co"], destination="m365")
    worker.state.schedule(
        StepRetry(
            record_id="01GONESTATE#Deliver0#Gone#1",
            due_at=worker.clock.now(),
            message_id="01GONESTATE",
            recipients=delivery.recipients,
            attempt=1,
            execution=SuspendedExecution(
                name="01GONESTATE",
                state="Gone",
                document={"delivery": delivery.model_dump(mode="json")},
                context={},
                attempts={0: 1},
            ),
        )
    )
    assert run_due(worker, worker.clock.now() + timedelta(seconds=1)) == ["done"]
    (state,) = worker.state.states("01GONESTATE")
    assert state.outcome is Outcome.QUARANTINED
    assert "the definition changed" in state.detail
    assert worker.state.deferred("01GONESTATE") == []


def test_the_raw_message_is_untouched_by_a_kept_attempt(workers, small_home):
    worker = workers(home=small_home)
    receive_spooled(worker, accept(worker, "01WARMUP", ["carol@nutrition.co"]))
    path = accept(worker, "01BYTES", ["carol@nutrition.co"])
    filler = fill(small_home.parent)
    assert receive_spooled(worker, path) == "kept"
    filler.unlink()
    assert receive_spooled(worker, path) == "done"
    (copy,) = mailbox(worker, "m365", "carol@nutrition.co")[-1:]
    assert copy.endswith(RAW)
