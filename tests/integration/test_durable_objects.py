"""What outlives the spool file in an object alone is on disk before the spool file goes: a
message whose recipient waits (a retry in the deferred queue) or is dead-lettered has its
objects fsynced, file and directories, before its spool file is removed; a message delivered
at once has none fsynced (its spool file was, before 250). Real files; os.fsync and the
spool's removal are watched in order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mxgate.local.bootstrap import Worker
from mxgate.local.pipeline import receive_spooled
from mxgate.local.spool_quarantine import QUARANTINE_BUCKET
from mxgate.records import Outcome
from tests.worker_harness import accept, mailbox_host_replies, outcomes, run_due


def watched(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Path]]:
    """What happens from now on, in order: ("fsync", path) and ("remove", spool file)."""
    seen: list[tuple[str, Path]] = []
    fsync, remove = os.fsync, worker.spool.remove

    def watched_fsync(fd: int) -> None:
        seen.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}"))))
        fsync(fd)

    def watched_remove(path: Path, *, settled: bool = True) -> None:
        seen.append(("remove", path))
        remove(path, settled=settled)

    monkeypatch.setattr(os, "fsync", watched_fsync)
    monkeypatch.setattr(worker.spool, "remove", watched_remove)
    return seen


def objects_fsynced(worker: Worker, seen: list[tuple[str, Path]]) -> list[Path]:
    root = worker.setup.dirs.objects.resolve()
    return [p for what, p in seen if what == "fsync" and p.is_relative_to(root)]


def test_a_delivered_message_has_no_object_fsynced(worker, monkeypatch):
    path = accept(worker, "01DELIVERED", ["alice@nutrition.co", "carol@nutrition.co"])
    seen = watched(worker, monkeypatch)
    assert receive_spooled(worker, path) == "done"
    assert outcomes(worker, "01DELIVERED") == {
        "alice@nutrition.co": Outcome.DELIVERED,
        "carol@nutrition.co": Outcome.DELIVERED,
    }
    assert ("remove", path) in seen
    assert objects_fsynced(worker, seen) == []


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        ("451 4.3.0 mailbox host busy", None),  # her retry waits in the deferred queue
        ("550 5.1.1 no such mailbox", Outcome.DEAD_LETTERED),
    ],
)
def test_a_waiting_or_dead_lettered_message_has_its_objects_fsynced_before_the_spool_file_goes(
    worker, monkeypatch, reply, outcome
):
    mailbox_host_replies(worker, "workspace", reply)
    path = accept(worker, "01KEPT", ["alice@nutrition.co", "carol@nutrition.co"])
    inode = path.stat().st_ino
    seen = watched(worker, monkeypatch)
    assert receive_spooled(worker, path) == "done"
    assert outcomes(worker, "01KEPT").get("alice@nutrition.co") == outcome
    assert outcomes(worker, "01KEPT")["carol@nutrition.co"] == Outcome.DELIVERED

    removed = seen.index(("remove", path))
    root = worker.setup.dirs.objects.resolve()
    before = objects_fsynced(worker, seen[:removed])
    stored = [p for p in root.rglob("*") if p.is_file() and "01KEPT" in p.name]
    assert stored  # the message as WriteToS3 stored it: the spool file, under a new name
    assert {p.stat().st_ino for p in stored} == {inode}
    for object_path in stored:
        assert object_path in before  # its bytes
        for directory in object_path.relative_to(root).parents:
            assert root / directory in before  # and its name, up to the store's root
    assert objects_fsynced(worker, seen[removed:]) == []


def test_what_a_later_run_writes_is_fsynced_only_when_a_record_points_at_it(worker, monkeypatch):
    """The deferred queue's own runs: a retry that delivers fsyncs nothing."""
    mailbox_host_replies(worker, "workspace", "451 4.3.0 mailbox host busy")
    path = accept(worker, "01LATER", ["alice@nutrition.co"])
    assert receive_spooled(worker, path) == "done"
    mailbox_host_replies(worker, "workspace", None)
    seen = watched(worker, monkeypatch)
    assert run_due(worker) == ["done"]
    assert outcomes(worker, "01LATER") == {"alice@nutrition.co": Outcome.DELIVERED}
    assert objects_fsynced(worker, seen) == []


def test_a_quarantined_spool_file_is_fsynced_where_it_is_kept_before_it_goes(worker, monkeypatch):
    path = worker.spool.directory / "01TORN.msg"
    path.write_bytes(b'{"message_id": "01TORN", "mail_fr')
    seen = watched(worker, monkeypatch)
    assert receive_spooled(worker, path) == "quarantined"
    kept = worker.setup.dirs.objects.resolve() / QUARANTINE_BUCKET / "spool" / "01TORN.msg"
    assert kept in objects_fsynced(worker, seen[: seen.index(("remove", path))])
