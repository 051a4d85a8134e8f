"""Spool files go to the workers in batches (`local/server.py` `Gateway._hand_out`): one pool
call for what is ready when a worker can take more, never a wait for a batch to fill; each
file of a batch goes to its own end in the worker (`local/worker.py` `receive_handing_back`), and what a
batch hands back is settled file by file (kept work tried again alone)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mxgate.adapters.local.state import SqliteState
from mxgate.local import worker as worker_process
from mxgate.local.bootstrap import Bootstrap, Worker
from mxgate.local.pipeline import Result
from mxgate.local.server import BATCHES_A_WORKER, Gateway, Work
from mxgate.local.settings import LocalSettings
from mxgate.records import Envelope, Outcome
from tests.support import SpooledFile, local_config
from tests.worker_harness import RAW, accept, mailbox, outcomes


def test_a_batch_takes_each_spool_file_to_its_own_end(worker: Worker) -> None:
    """The middle message fails for good inside processing (its ingress point is gone): it is
    quarantined, and the messages before and after it are delivered once each."""
    first = accept(worker, "01BATCHFIRST", ["alice@nutrition.co"])
    failing = accept(worker, "01BATCHFAILS", ["alice@nutrition.co"], ingress_point="GonePoint")
    last = accept(worker, "01BATCHLAST", ["carol@nutrition.co"])
    results = worker_process.receive([str(first), str(failing), str(last)])
    assert results == [Result.DONE, Result.QUARANTINED, Result.DONE]
    assert not any(p.exists() for p in (first, failing, last))
    assert outcomes(worker, "01BATCHFIRST") == {"alice@nutrition.co": Outcome.DELIVERED}
    assert outcomes(worker, "01BATCHFAILS") == {"alice@nutrition.co": Outcome.QUARANTINED}
    assert outcomes(worker, "01BATCHLAST") == {"carol@nutrition.co": Outcome.DELIVERED}
    assert len(mailbox(worker, "workspace", "alice@nutrition.co")) == 1
    assert len(mailbox(worker, "m365", "carol@nutrition.co")) == 1


def test_a_batch_replayed_after_its_worker_died_delivers_nothing_twice(worker: Worker) -> None:
    """A killed worker's batch is handed out again from the spool: its files go at the batch's
    end, so what it finished before it died is still there, and is found finished (every
    recipient has its end): nothing is delivered or recorded again."""
    done = accept(worker, "01REPLAYDONE", ["alice@nutrition.co"])
    cut_short = accept(worker, "01REPLAYCUT", ["carol@nutrition.co"])
    spooled = SpooledFile.of(cut_short)
    assert worker_process.receive([str(done), str(cut_short)]) == [Result.DONE, Result.DONE]
    spooled.restore(cut_short)  # the worker died before this one's spool file went
    recorded = worker.state.events("01REPLAYCUT")
    replayed = sorted(str(p) for p in worker.spool.pending())
    assert replayed == [str(cut_short)]
    assert worker_process.receive(replayed) == [Result.ALREADY_DONE]
    assert not cut_short.exists()
    assert worker.state.events("01REPLAYCUT") == recorded
    assert len(mailbox(worker, "workspace", "alice@nutrition.co")) == 1
    assert len(mailbox(worker, "m365", "carol@nutrition.co")) == 1


# ----------------------------------------------------------------------------- the gateway


class CountingGateway(Gateway):
    """The gateway with its real pool, each pool call counted: (what it runs, its files)."""

    def __init__(self, bootstrap: Bootstrap) -> None:
        super().__init__(bootstrap)
        self.calls: list[tuple[str, int]] = []

    def _start_pool(self) -> None:
        super()._start_pool()
        assert self.pool is not None
        submit = self.pool.submit

        def counted(function: Callable[..., Any], *args: Any) -> Future[Any]:
            files = len(args[0]) if function is worker_process.receive_handing_back else 1
            self.calls.append((function.__name__, files))
            return submit(function, *args)

        self.pool.submit = counted


def spool_messages(bootstrap: Bootstrap, count: int, prefix: str) -> list[str]:
    ids = []
    for number in range(count):
        message_id = f"01{prefix}{number:04d}"
        bootstrap.spool().write(
            Envelope(
                message_id=message_id,
                mail_from="bounce@shop.example",
                recipients=["carol@nutrition.co"],
                helo="mx.shop.example",
                source_ip="192.0.2.1",
                received_at=datetime.now(UTC),
                ingress_point=bootstrap.setup.primary.ingress_id,
            ),
            RAW,
        )
        ids.append(message_id)
    return ids


def test_the_spool_goes_to_the_workers_in_batches_and_a_lone_message_at_once(
    tmp_path: Path,
) -> None:
    settings = LocalSettings(home=tmp_path / "home", config=local_config(tmp_path), workers=1)
    bootstrap = Bootstrap(settings)
    backlog = spool_messages(bootstrap, 12, "BACKLOG")  # what a previous run left

    async def run() -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        gateway = CountingGateway(bootstrap)
        running = await gateway.start()
        try:
            # the backlog shared among the batches one worker may have at once
            on_start = list(gateway.calls)
            await asyncio.wait_for(gateway.idle.wait(), 120)
            (lone,) = spool_messages(bootstrap, 1, "LONE")
            gateway.submit(bootstrap.paths.spool / f"{lone}.msg")
            at_once = gateway.calls[len(on_start) :]  # handed out before anything waited
            await asyncio.wait_for(gateway.idle.wait(), 120)
        finally:
            await gateway.stop(running)
        return on_start, at_once

    on_start, at_once = asyncio.run(run())
    assert on_start == [("receive_handing_back", 12 // BATCHES_A_WORKER)] * BATCHES_A_WORKER
    assert at_once == [("receive_handing_back", 1)]
    state = SqliteState(settings.paths.state_db)
    for message_id in [*backlog, "01LONE0000"]:
        assert {s.recipient: s.outcome for s in state.states(message_id)} == {
            "carol@nutrition.co": Outcome.DELIVERED
        }
    assert not list(settings.paths.spool.glob("*.msg"))
    delivered = settings.paths.mailboxes / "m365" / "carol@nutrition.co" / "new"
    assert len(list(delivered.iterdir())) == 13  # each once


def test_what_a_batch_hands_back_is_settled_file_by_file(tmp_path: Path) -> None:
    """A batch whose middle file was kept (a full disk, a busy database): that file alone waits
    for its backoff; the others are done. A batch whose call failed keeps every file."""
    settings = LocalSettings(home=tmp_path / "home", config=local_config(tmp_path), workers=1)
    gateway = Gateway(Bootstrap(settings))
    again: list[str] = []
    paths = [settings.paths.spool / f"01HANDBACK{n}.msg" for n in range(3)]
    work = [Work(p.name, lambda name=p.name: again.append(name), p) for p in paths]

    def hand_back(result: list[Result] | BaseException) -> None:
        gateway.in_flight.update(paths)
        gateway.batches = 1
        future: Future[Any] = Future()
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result((result, []))
        gateway._finished(future, work, gateway.pool_generation)

    async def run() -> None:
        hand_back([Result.DONE, Result.KEPT, Result.DONE])
        assert gateway.kept == {paths[1].name: 1}
        assert (gateway.in_flight, gateway.batches, len(gateway.timers)) == (set(), 0, 1)
        for timer in gateway.timers:
            timer.cancel()
        gateway.timers.clear()
        hand_back(RuntimeError("the batch could not be handed back"))
        assert gateway.kept == {paths[0].name: 1, paths[1].name: 2, paths[2].name: 1}
        assert (gateway.in_flight, gateway.batches, len(gateway.timers)) == (set(), 0, 3)
        for timer in gateway.timers:
            timer.cancel()

    asyncio.run(run())
    assert again == []  # each waits for its backoff: none was handed out again at once
