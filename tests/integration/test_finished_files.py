"""Under `mxgate run`, a worker hands its finished spool files back with its results
(`worker.receive_handing_back`, `Spool.handing_back`) and waits on no fsync; the gateway removes
them after its next checkpoint, with one fsync of the state database's WAL started after their
commits (`spool.FinishedFiles`, `Gateway._remove_finished`). No file goes before that fsync; a
failing fsync keeps them (and a start then finds each finished: nothing delivered twice); a stop
drains them. The real pool, real SQLite, real files; the gateway's os.fsync and os.unlink are
watched in order."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from mxgate.local import server
from mxgate.local import worker as worker_process
from mxgate.local.bootstrap import Bootstrap, Worker
from mxgate.local.pipeline import Result
from mxgate.local.server import Gateway
from mxgate.local.settings import LocalSettings
from mxgate.records import Outcome
from tests.integration.test_worker_batches import spool_messages
from tests.support import local_config
from tests.worker_harness import LATER, accept, mailbox_host_replies

CAROL = "carol@nutrition.co"
DIRECT = {"parameters": {"SubmissionIngress": "true", "DirectMode": "true"}}


def watched(monkeypatch: pytest.MonkeyPatch, wal: Path) -> list[tuple[str, str]]:
    """From now on, in this process and in order: ("fsync", the WAL) for each fsync of the
    state database's WAL, ("unlink", path) for each unlink of a spool file."""
    seen: list[tuple[str, str]] = []
    fsync, unlink = os.fsync, os.unlink
    name = str(wal.resolve())

    def watched_fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}") == name:
            seen.append(("fsync", name))
        fsync(fd)

    def watched_unlink(path: str | os.PathLike[str], *args: object, **kwargs: object) -> None:
        if str(path).endswith(".msg"):
            seen.append(("unlink", str(Path(path).resolve())))
        unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", watched_fsync)
    monkeypatch.setattr(os, "unlink", watched_unlink)
    return seen


# ----------------------------------------------------------------------------- the worker


def test_a_worker_hands_its_finished_files_back_and_fsyncs_nothing_for_them(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [accept(worker, f"01HANDEDBACK{n}", [CAROL]) for n in range(3)]
    seen = watched(monkeypatch, Path(f"{worker.state.path}-wal"))
    results, finished = worker_process.receive_handing_back([str(p) for p in paths])
    assert results == [Result.DONE] * 3
    assert finished == [str(p) for p in paths]
    assert all(p.exists() for p in paths)  # the gateway removes them
    assert seen == []  # no fsync of the WAL, no unlink
    assert all(
        {s.recipient: s.outcome for s in worker.state.states(p.stem)} == {CAROL: Outcome.DELIVERED}
        for p in paths
    )


def test_a_file_whose_recipient_waits_in_the_deferred_queue_goes_after_the_workers_fsync(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its run is over (the delivery's retry is a record), but a replay would not find it
    finished and would deliver again beside the record: not handed back to wait for the
    gateway's look, but removed by the worker once its own fsync made the record durable."""
    mailbox_host_replies(worker, "workspace", "451 4.3.0 try later")
    path = accept(worker, "01WAITSINQUEUE", ["alice@nutrition.co"])
    seen = watched(monkeypatch, Path(f"{worker.state.path}-wal"))
    assert worker_process.receive_handing_back([str(path)]) == ([Result.DONE], [])
    assert not path.exists()
    assert worker.state.lease_due(worker.clock.now() + LATER, 60)  # what leads to its end
    assert seen[-2:] == [
        ("fsync", str(Path(f"{worker.state.path}-wal").resolve())),
        ("unlink", str(path.resolve())),
    ]


def test_a_rule_set_retry_done_removes_its_spool_file_after_the_workers_fsync(
    workers: Callable[..., Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the retry left waiting (its recipients' deliveries) a replay would run again."""
    worker = workers(**DIRECT)
    mailbox_host_replies(worker, "workspace", "451 4.3.0 try later")
    path = accept(worker, "01RETRYHANDBACK", ["alice@nutrition.co"])
    assert worker_process.receive_handing_back([str(path)]) == ([Result.RETRYING], [])
    mailbox_host_replies(worker, "workspace", None)
    (due,) = worker.state.lease_due(worker.clock.now() + LATER, 60)
    seen = watched(monkeypatch, Path(f"{worker.state.path}-wal"))
    assert worker_process.run_due_handing_back(due.model_dump_json()) == (Result.DONE, [])
    assert not path.exists()
    assert [what for what, _ in seen][-2:] == ["fsync", "unlink"]


# ----------------------------------------------------------------------------- the gateway


@pytest.fixture
def bootstrap(tmp_path: Path) -> Bootstrap:
    settings = LocalSettings(home=tmp_path / "home", config=local_config(tmp_path), workers=1)
    return Bootstrap(settings)


def spooled(bootstrap: Bootstrap) -> list[Path]:
    return sorted(bootstrap.paths.spool.glob("*.msg"))


def delivered(bootstrap: Bootstrap) -> int:
    folder = bootstrap.paths.mailboxes / "m365" / CAROL / "new"
    return len(list(folder.iterdir())) if folder.is_dir() else 0


def ends(bootstrap: Bootstrap, message_ids: list[str]) -> list[dict[str, Outcome]]:
    state = bootstrap.state()
    try:
        return [{s.recipient: s.outcome for s in state.states(m)} for m in message_ids]
    finally:
        state.close()


async def until(what: Callable[[], bool], seconds: float = 60.0) -> None:
    async with asyncio.timeout(seconds):
        while not what():
            await asyncio.sleep(0.02)


def test_the_gateway_removes_finished_files_after_its_fsync_within_a_look(
    bootstrap: Bootstrap, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finished files stay while the gateway's fsync fails (every recipient delivered, once),
    and go once it succeeds, each after it, within a look."""
    message_ids = spool_messages(bootstrap, 6, "GATEWAYREMOVES")
    seen = watched(monkeypatch, Path(f"{bootstrap.paths.state_db}-wal"))
    failing = True

    async def run() -> float:
        gateway = Gateway(bootstrap)
        make_durable = gateway.finished_files.make_durable

        def durable() -> None:
            if failing:
                raise OSError(5, "Input/output error")
            make_durable()

        gateway.finished_files.make_durable = durable
        running = await gateway.start()
        try:
            await asyncio.wait_for(gateway.idle.wait(), 120)
            await until(lambda: ends(bootstrap, message_ids) == [{CAROL: Outcome.DELIVERED}] * 6)
            await asyncio.sleep(3 * server.CHECKPOINT_EVERY)  # looks whose fsync failed
            assert len(spooled(bootstrap)) == 6
            assert len(gateway.finished_files) == 6
            loop = asyncio.get_running_loop()
            nonlocal failing
            failing, started = False, loop.time()
            await until(lambda: not spooled(bootstrap))
            return loop.time() - started
        finally:
            await gateway.stop(running)

    took = asyncio.run(run())
    assert took < 2 * server.CHECKPOINT_EVERY + 1.0  # a look, and its fsync, on a loaded machine
    unlinks = [n for n, (what, _) in enumerate(seen) if what == "unlink"]
    assert len(unlinks) == 6
    fsyncs = [n for n, (what, _) in enumerate(seen) if what == "fsync"]
    assert fsyncs
    assert fsyncs[0] < unlinks[0]
    assert ends(bootstrap, message_ids) == [{CAROL: Outcome.DELIVERED}] * 6
    assert delivered(bootstrap) == 6


def test_a_stop_drains_the_finished_files_after_a_last_fsync(
    bootstrap: Bootstrap, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No look comes before the stop (the period is an hour): the stop's last look removes
    what the workers finished, after its fsync."""
    monkeypatch.setattr(server, "CHECKPOINT_EVERY", 3600.0)
    message_ids = spool_messages(bootstrap, 4, "STOPDRAINS")
    seen = watched(monkeypatch, Path(f"{bootstrap.paths.state_db}-wal"))

    async def run() -> int:
        gateway = Gateway(bootstrap)
        running = await gateway.start()
        try:
            await asyncio.wait_for(gateway.idle.wait(), 120)
            await until(lambda: ends(bootstrap, message_ids) == [{CAROL: Outcome.DELIVERED}] * 4)
            assert len(spooled(bootstrap)) == 4
        finally:
            await gateway.stop(running)
        return len(gateway.finished_files)

    assert asyncio.run(run()) == 0
    assert spooled(bootstrap) == []
    wal = ("fsync", str(Path(f"{bootstrap.paths.state_db}-wal").resolve()))
    first_unlink = next(n for n, (what, name) in enumerate(seen) if what == "unlink")
    assert wal in seen[:first_unlink]
    assert delivered(bootstrap) == 4


def test_files_left_by_a_failing_fsync_are_found_finished_on_the_next_start(
    bootstrap: Bootstrap,
) -> None:
    """As after a crash before the gateway's look: the files stay with their ends committed;
    the next start removes each without a second delivery or a second timeline."""
    message_ids = spool_messages(bootstrap, 3, "LEFTBYCRASH")

    async def run(*, failing: bool) -> None:
        gateway = Gateway(bootstrap)
        if failing:

            def durable() -> None:
                raise OSError(5, "Input/output error")

            gateway.finished_files.make_durable = durable
        running = await gateway.start()
        try:
            await asyncio.wait_for(gateway.idle.wait(), 120)
            if not failing:
                await until(lambda: not spooled(bootstrap))
        finally:
            await gateway.stop(running)

    asyncio.run(run(failing=True))
    assert len(spooled(bootstrap)) == 3
    assert ends(bootstrap, message_ids) == [{CAROL: Outcome.DELIVERED}] * 3
    state = bootstrap.state()
    recorded = [state.events(m) for m in message_ids]
    state.close()

    asyncio.run(run(failing=False))
    assert spooled(bootstrap) == []
    assert delivered(bootstrap) == 3  # once each
    state = bootstrap.state()
    assert [state.events(m) for m in message_ids] == recorded
    state.close()
