"""A spool file goes only once its recipients' ends are durable: a worker's batch removes its
finished files together at its end, after one fsync of the state database's WAL
(`SqliteDatabase.make_durable`, `Spool.removed_after`). When that fsync fails, every file of
the batch stays, and their replay delivers nothing twice and records nothing twice. Real
SQLite, real files; the real os.fsync and os.unlink are watched in order."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from mxgate.local import worker as worker_process
from mxgate.local.bootstrap import Worker
from mxgate.local.pipeline import Result
from mxgate.records import Outcome, Stage, TimelineEvent
from tests.support import REPO, SpooledFile
from tests.worker_harness import LATER, accept, mailbox, mailbox_host_replies, outcomes

RECIPIENTS = ["alice@nutrition.co", "carol@nutrition.co"]


def watched(
    worker: Worker, monkeypatch: pytest.MonkeyPatch, *, failing: bool = False
) -> list[tuple[str, str]]:
    """From now on, in order: ("fsync", what the descriptor names) for each fsync and
    ("unlink", path) for each unlink; `failing`: each fsync of the state database's WAL fails."""
    seen: list[tuple[str, str]] = []
    fsync, unlink = os.fsync, os.unlink
    wal = f"{worker.state.path.resolve()}-wal"

    def watched_fsync(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        seen.append(("fsync", name))
        if failing and name == wal:
            raise OSError(5, "Input/output error")
        fsync(fd)

    def watched_unlink(path: str | os.PathLike[str], *args: object, **kwargs: object) -> None:
        seen.append(("unlink", str(Path(path).resolve())))
        unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", watched_fsync)
    monkeypatch.setattr(os, "unlink", watched_unlink)
    return seen


def batch(worker: Worker, count: int, prefix: str) -> list[Path]:
    return [accept(worker, f"01{prefix}{n:04d}", RECIPIENTS) for n in range(count)]


def every_end(worker: Worker, paths: list[Path]) -> list[dict[str, Outcome]]:
    return [outcomes(worker, path.stem) for path in paths]


def timelines(worker: Worker, paths: list[Path]) -> list[list[TimelineEvent]]:
    return [worker.state.events(path.stem) for path in paths]


def test_a_batch_fsyncs_the_state_database_once_before_any_of_its_spool_files_goes(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = batch(worker, 4, "DURABLEBATCH")
    seen = watched(worker, monkeypatch)
    results = worker_process.receive([str(p) for p in paths])
    assert results == [Result.DONE] * 4
    assert not any(p.exists() for p in paths)
    delivered = dict.fromkeys(RECIPIENTS, Outcome.DELIVERED)
    assert every_end(worker, paths) == [delivered] * 4

    wal = f"{worker.state.path.resolve()}-wal"
    wal_fsyncs = [n for n, (what, name) in enumerate(seen) if (what, name) == ("fsync", wal)]
    assert len(wal_fsyncs) == 1  # one for the batch, not one a message
    unlinks = {name: n for n, (what, name) in enumerate(seen) if what == "unlink"}
    for path in paths:
        assert unlinks[str(path.resolve())] > wal_fsyncs[0]


def test_a_failing_fsync_keeps_the_whole_batch_and_its_replay_does_nothing_twice(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = batch(worker, 3, "FAILINGFSYNC")
    with monkeypatch.context() as failing:
        seen = watched(worker, failing, failing=True)
        assert worker_process.receive([str(p) for p in paths]) == [Result.KEPT] * 3
    assert all(p.exists() for p in paths)  # each is tried again, or replayed on start
    assert not [what for what, _ in seen if what == "unlink"]
    delivered = dict.fromkeys(RECIPIENTS, Outcome.DELIVERED)
    assert every_end(worker, paths) == [delivered] * 3
    recorded = timelines(worker, paths)

    replayed = [str(p) for p in worker.spool.pending()]
    assert replayed == [str(p) for p in paths]
    assert worker_process.receive(replayed) == [Result.ALREADY_DONE] * 3
    assert not any(p.exists() for p in paths)
    assert every_end(worker, paths) == [delivered] * 3
    assert timelines(worker, paths) == recorded  # nothing recorded twice
    for recipient, host in [("alice@nutrition.co", "workspace"), ("carol@nutrition.co", "m365")]:
        assert len(mailbox(worker, host, recipient)) == 3  # once each


HOOK = """
import json, pathlib, sys
event = json.load(sys.stdin)
out = pathlib.Path(sys.argv[1])
(out / f"call-{len(list(out.iterdir()))}.json").write_text(json.dumps(event))
"""


def test_a_finished_file_whose_route_has_a_hook_is_run_again_and_its_hook_called_once(
    workers: Callable[..., Worker], tmp_path: Path
) -> None:
    """A hook settles nothing, so a recipient's end does not say it ran (its worker may have
    died between them): the replay runs the message again, idempotently."""
    (tmp_path / "hook.py").write_text(HOOK)
    calls = tmp_path / "calls"
    calls.mkdir()
    routes = yaml.safe_load((REPO / "config" / "routes.yaml").read_text())
    routes["hooks"] = {
        "audit": {"command": [sys.executable, str(tmp_path / "hook.py"), str(calls)]}
    }
    routes["destinations"]["workspace"]["hooks"] = ["audit"]
    (tmp_path / "hooked.yaml").write_text(yaml.safe_dump(routes))
    worker = workers(routes=str(tmp_path / "hooked.yaml"))
    (path,) = batch(worker, 1, "HOOKEDREPLAY")
    spooled = SpooledFile.of(path)
    assert worker_process.receive([str(path)]) == [Result.DONE]
    assert len(list(calls.iterdir())) == 1
    spooled.restore(path)  # its worker died before the file went
    assert worker_process.receive([str(path)]) == [Result.DONE]
    assert not path.exists()
    assert len(list(calls.iterdir())) == 1  # its idempotency record kept it from a second call
    events = worker.state.events(path.stem)
    assert [e.stage for e in events].count(Stage.ACCEPTED) == 1
    assert len(mailbox(worker, "workspace", "alice@nutrition.co")) == 1


DIRECT = {"parameters": {"SubmissionIngress": "true", "DirectMode": "true"}}


def test_a_rule_set_retry_removes_its_spool_file_after_the_fsync_or_leaves_it_finished(
    workers: Callable[..., Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run_due`'s rule set retry, done: its spool file goes after the WAL's fsync; when that
    fails, the file stays (the record is gone) and the next start's replay finds it finished."""
    worker = workers(**DIRECT)
    mailbox_host_replies(worker, "workspace", "451 4.3.0 try later")
    first = accept(worker, "01RETRYDURABLE", ["alice@nutrition.co"])
    second = accept(worker, "01RETRYFAILING", ["alice@nutrition.co"])
    assert worker_process.receive([str(first), str(second)]) == [Result.RETRYING] * 2
    mailbox_host_replies(worker, "workspace", None)
    due = {r.message_id: r for r in worker.state.lease_due(worker.clock.now() + LATER, 60)}
    one, other = due["01RETRYDURABLE"], due["01RETRYFAILING"]

    seen = watched(worker, monkeypatch)
    assert worker_process.run_due(one.model_dump_json()) == Result.DONE
    assert not first.exists()
    wal = ("fsync", f"{worker.state.path.resolve()}-wal")
    assert seen.index(wal) < seen.index(("unlink", str(first.resolve())))

    with monkeypatch.context() as failing:
        watched(worker, failing, failing=True)
        assert worker_process.run_due(other.model_dump_json()) == Result.KEPT
    assert second.exists()
    recorded = worker.state.events("01RETRYFAILING")
    assert worker_process.receive([str(second)]) == [Result.ALREADY_DONE]
    assert not second.exists()
    assert worker.state.events("01RETRYFAILING") == recorded
    assert outcomes(worker, "01RETRYFAILING") == {"alice@nutrition.co": Outcome.DELIVERED}
    assert len(mailbox(worker, "workspace", "alice@nutrition.co")) == 2  # once each
