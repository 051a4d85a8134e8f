"""A fresh spool file (the ingress just made it durable, no worker was given it) is taken
without the reads that look for what an earlier run did: a quarantine kept, a rule set retry
owning the file, every recipient's end, each once-only action's idempotency record, an
`accepted` event. Only the ingress's own hand-off is fresh (`Gateway.submit_fresh`): a file a
scan of the spool found, or kept work tried again, is taken with every read. Real SQLite (its
statements traced), real spool files."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mxgate.local import server
from mxgate.local import worker as worker_process
from mxgate.local.bootstrap import Bootstrap, Worker
from mxgate.local.pipeline import Result
from mxgate.local.server import Gateway
from mxgate.local.settings import LocalSettings
from mxgate.records import Envelope, Outcome, Stage
from tests.support import local_config
from tests.worker_harness import RAW, accept, mailbox, mailbox_host_replies, outcomes

# what a replay looks for, by the table it reads
REPLAY_READS = ("FROM deferred", "FROM idempotency", "WHERE NOT EXISTS")


@contextmanager
def traced(worker: Worker) -> Iterator[list[str]]:
    """Every statement the state database runs meanwhile."""
    statements: list[str] = []
    worker.state.db.set_trace_callback(statements.append)
    try:
        yield statements
    finally:
        worker.state.db.set_trace_callback(None)


def replay_reads(statements: list[str]) -> list[str]:
    return [s for s in statements if any(read in s for read in REPLAY_READS)]


def test_a_fresh_file_is_delivered_without_the_replays_reads(worker: Worker) -> None:
    fresh = accept(worker, "01FRESHFILE", ["carol@nutrition.co"])
    replayed = accept(worker, "01REPLAYEDFILE", ["carol@nutrition.co"])
    with traced(worker) as statements:
        assert worker_process.receive([str(fresh)], fresh=[str(fresh)]) == [Result.DONE]
    assert replay_reads(statements) == []
    with traced(worker) as statements:
        assert worker_process.receive([str(replayed)]) == [Result.DONE]
    assert len(replay_reads(statements)) == 3  # the retry, the action done, the accepted event
    for message_id in ("01FRESHFILE", "01REPLAYEDFILE"):
        assert outcomes(worker, message_id) == {"carol@nutrition.co": Outcome.DELIVERED}
        stages = [e.stage for e in worker.state.events(message_id)]
        assert stages.count(Stage.ACCEPTED) == 1
    assert len(mailbox(worker, "m365", "carol@nutrition.co")) == 2  # once each


DIRECT = {"parameters": {"SubmissionIngress": "true", "DirectMode": "true"}}


def test_a_file_kept_for_a_rule_set_retry_is_left_to_it_when_replayed(
    workers: Callable[..., Worker],
) -> None:
    """Taken again (not fresh), the file its rule set retry owns is not run again: the retry
    delivers it, once."""
    worker = workers(**DIRECT)
    mailbox_host_replies(worker, "workspace", "451 4.3.0 try later")
    path = accept(worker, "01KEPTFORRETRY", ["alice@nutrition.co"])
    assert worker_process.receive([str(path)], fresh=[str(path)]) == [Result.RETRYING]
    mailbox_host_replies(worker, "workspace", None)
    recorded = worker.state.events("01KEPTFORRETRY")
    assert worker_process.receive([str(path)]) == [Result.RETRY_PENDING]
    assert path.exists()
    assert worker.state.events("01KEPTFORRETRY") == recorded
    assert mailbox(worker, "workspace", "alice@nutrition.co") == []


# ----------------------------------------------------------------------------- the gateway


class RecordingPool:
    """The pool's submit, recorded: each batch's files and its fresh ones, answered at once."""

    def __init__(self, answer: Result) -> None:
        self.answer = answer
        self.batches: list[tuple[list[str], list[str]]] = []

    def submit(self, function: Callable[..., Any], *args: Any) -> Future[Any]:
        assert function is worker_process.receive_handing_back
        files, fresh = args
        self.batches.append((files, fresh))
        future: Future[Any] = Future()
        future.set_result(([self.answer] * len(files), []))  # nothing finished to hand back
        return future

    def shutdown(self, **_: Any) -> None:
        pass


def gateway_with(tmp_path: Path, pool: RecordingPool) -> Gateway:
    settings = LocalSettings(home=tmp_path / "home", config=local_config(tmp_path), workers=1)

    class Recorded(Gateway):
        def _start_pool(self) -> None:
            self.pool = pool  # type: ignore[assignment]

    gateway = Recorded(Bootstrap(settings))
    gateway._start_pool()
    return gateway


def spooled(gateway: Gateway, message_id: str) -> Path:
    envelope = Envelope(
        message_id=message_id,
        mail_from="bounce@shop.example",
        recipients=["carol@nutrition.co"],
        helo="mx.shop.example",
        source_ip="192.0.2.1",
        ingress_point=gateway.setup.primary.ingress_id,
    )
    return gateway.spool.write(envelope, RAW)


def test_a_file_a_scan_found_is_not_fresh_when_the_ingress_hands_it_on(tmp_path: Path) -> None:
    """A spool file is linked before its fsync: a scan after a worker died (`_recover`) may
    find it and hand it out before its `250`, and a worker may keep it for a retry. The
    ingress's hand-off that follows is then not fresh; a file the scan did not see is."""
    pool = RecordingPool(Result.RETRY_PENDING)
    gateway = gateway_with(tmp_path, pool)

    async def run() -> None:
        seen = spooled(gateway, "01SEENBYTHESCAN")
        gateway._recover()  # a worker died while the ingress committed `seen`
        await asyncio.sleep(0)  # its batch comes back: a rule set retry owns the file
        gateway.submit_fresh(seen)  # the ingress, after its 250
        later = spooled(gateway, "01AFTERTHESCAN")
        gateway.submit_fresh(later)
        await asyncio.sleep(0)
        assert pool.batches == [
            ([str(seen)], []),
            ([str(seen)], []),
            ([str(later)], [str(later)]),
        ]

    asyncio.run(run())


def test_kept_work_is_tried_again_not_fresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh file its worker kept (failed for now) was taken once already: its next try
    looks for what that run did."""
    monkeypatch.setattr(server, "kept_backoff", lambda tries, rng: 0.0)
    pool = RecordingPool(Result.KEPT)
    gateway = gateway_with(tmp_path, pool)

    async def run() -> None:
        path = spooled(gateway, "01KEPTTHENAGAIN")
        gateway.submit_fresh(path)
        while len(pool.batches) < 2:
            await asyncio.sleep(0.01)
        gateway.stopping = True  # no third try
        assert pool.batches[:2] == [([str(path)], [str(path)]), ([str(path)], [])]

    asyncio.run(run())
