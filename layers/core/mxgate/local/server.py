"""`mxgate run`: the gateway in the foreground until Ctrl-C.

The ingress runs on this process's event loop, the mailbox hosts in a process of their own,
and the rule set and the workflow in a pool of worker processes (one a core by default), so
parsing and delivery never stall the SMTP sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import random
import signal
import ssl
import sys
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from mxgate.adapters.local.state import SqliteState
from mxgate.errors import ConfigError, FailureKind, kind_of
from mxgate.local import worker
from mxgate.local.bootstrap import Bootstrap
from mxgate.local.ingress import IngressHandler, ingress_session
from mxgate.local.limits import Defences, raise_open_file_limit
from mxgate.local.pipeline import Result
from mxgate.local.settings import Paths
from mxgate.local.setup import IngressSetup
from mxgate.local.smtp import IngressSMTP
from mxgate.local.spool import FinishedFiles
from mxgate.local.tls import ensure_certificate, server_context
from mxgate.observability import hop
from mxgate.records import Deferred

log = logging.getLogger("mxgate.server")


@dataclass
class Running:
    """What a started gateway listens on (what `mxgate run` prints)."""

    smtp: tuple[str, int]  # the primary ingress point's address (the first OPEN one)
    mailbox_hosts: dict[str, int]
    ingress: dict[str, tuple[str, int]] = field(default_factory=dict)  # by ingress point id
    ingress_servers: list[asyncio.Server] = field(default_factory=list)


@dataclass(frozen=True)
class Work:
    """One spool file or deferred record in a pool call, and how it is handed out again."""

    label: str  # the spool file's name, or the record's id
    again: Callable[[], None]  # hands it to the workers anew once its backoff has passed
    spool_file: Path | None = None


DEFERRED_LEASE = 600.0  # seconds a deferred delivery may run before another run may take it
RETENTION_EVERY = 3600.0  # seconds between looks at what the retention periods let go
# Work a worker kept because it failed for now (a full disk, a busy database) is tried again
# after KEPT_FIRST seconds, doubling up to KEPT_MOST, each wait drawn between half and all of
# it so that many kept messages do not all come back at once.
KEPT_FIRST = 1.0
KEPT_MOST = 60.0
SOONEST_LOOK = 0.05  # seconds: the deferred queue's scheduler never looks more often than this
# Spool files go to the workers in batches of what is ready when a worker can take more: one
# pool call (its pickling, pipe round trip and future) for up to BATCH_MOST files. Each worker
# has at most BATCHES_A_WORKER batches handed to it, so one waits in the pool's queue while
# another runs and a lone message goes at once; no timer ever waits for a batch to fill.
BATCH_MOST = 16
BATCHES_A_WORKER = 2
# The workers' SQLite WALs (state and archive index) are checkpointed here, in a thread, this
# often while work finishes: off the workers' path (their own connections checkpoint only past
# bootstrap.WORKER_CHECKPOINT_PAGES), and each page copied once a look, not once a thousand.
# The spool files the workers finished meanwhile go right after, with one fsync of the state
# database's WAL for them all: a finished file waits this long, and the look's own time.
CHECKPOINT_EVERY = 0.25


def kept_backoff(tries: int, rng: random.Random) -> float:
    """Seconds before kept work is tried again, after `tries` failed tries."""
    return min(KEPT_MOST, KEPT_FIRST * 2.0 ** min(tries - 1, 16)) * rng.uniform(0.5, 1.0)


def write_ports(paths: Paths, ports: dict[str, int]) -> None:
    """Whole or not at all: whoever waits for the file never reads half of it."""
    paths.ports_file.parent.mkdir(parents=True, exist_ok=True)
    temporary = paths.ports_file.with_suffix(".tmp")
    temporary.write_text(json.dumps(ports, indent=2) + "\n", encoding="utf-8")
    temporary.replace(paths.ports_file)


class Gateway:
    def __init__(self, bootstrap: Bootstrap) -> None:
        self.bootstrap = bootstrap
        self.setup = bootstrap.setup
        self.dirs = bootstrap.paths
        self.clock = bootstrap.clock
        self.pool: ProcessPoolExecutor | None = None
        self.pool_args: tuple[str, str] = ("", "")  # the workers' initializer arguments
        self.spool = bootstrap.ingress_spool()
        # spool files for the next batch, each with whether it is fresh (`submit_fresh`)
        self.ready: OrderedDict[Path, bool] = OrderedDict()
        self.scanned: frozenset[Path] = frozenset()  # the spool files its last scan found
        self.in_flight: set[Path] = set()  # spool files handed to the pool and not yet done
        self.batches = 0  # batches of spool files handed to the pool and not yet done
        self.pool_generation = 0  # a new pool replaces one whose worker died
        self.pending: set[Future[Any]] = set()
        self.idle = asyncio.Event()
        self.idle.set()
        self.deferred_running: set[str] = set()
        self.scheduler: asyncio.Task[None] | None = None
        self.look_again = asyncio.Event()  # work finished: the deferred queue may have more
        self.housekeeping: asyncio.Task[None] | None = None
        # every ingress point's sessions together
        self.defences = Defences.counting(bootstrap.setup.config.smtp.limits, self.clock)
        self.kept: dict[str, int] = {}  # failed tries of kept work (a spool file, a record)
        self.timers: set[asyncio.TimerHandle] = set()  # kept work waiting for its next try
        self.rng = random.Random()  # noqa: S311 -- spreads retries, not a secret
        self.deferred_state: SqliteState | None = None
        self.background: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.mailbox_process: asyncio.subprocess.Process | None = None
        self.checkpoints: asyncio.Task[None] | None = None
        self.last_look = asyncio.Event()  # stopping: the checkpoints' last look, then their end
        self.finished = 0  # pool calls finished: work that may have written to the WALs
        # finished spool files the workers handed back, removed after the next checkpoint
        self.finished_files = FinishedFiles(bootstrap.state().make_durable)

    async def _mailbox_hosts(self) -> dict[str, int]:
        """Start the local mailbox hosts in their own process; every host's port."""
        hosts = self.setup.config.mailbox_hosts
        ports = {host: spec.port for host, spec in hosts.items() if spec.external}
        local = {host: spec.port for host, spec in hosts.items() if not spec.external}
        if not local:
            return ports
        self.mailbox_process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mxgate.local.mailbox",
            str(self.dirs.mailboxes),
            json.dumps(local),
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.mailbox_process.stdout is not None
        line = await self.mailbox_process.stdout.readline()
        if not line:
            raise ConfigError(f"the mailbox hosts did not start (ports {local}): see above")
        started: dict[str, int] = json.loads(line)
        return ports | started

    def _start_pool(self) -> None:
        self.pool = ProcessPoolExecutor(
            max_workers=self.setup.settings.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=worker.initialize,
            initargs=self.pool_args,
        )

    def submit(self, path: Path, *, fresh: bool = False) -> None:
        """Hand one spooled message to the workers (once: a file already waiting or in flight
        is skipped), in the next batch that goes."""
        if path in self.ready or path in self.in_flight:
            return
        self.ready[path] = fresh
        self._hand_out()

    def submit_fresh(self, path: Path) -> None:
        """A spool file the ingress has just made durable: no worker was given it, so its
        worker skips the reads that look for what an earlier run did (`receive_spooled`).
        Unless the last scan of the spool found it: a file is linked before its fsync, so a
        scan after a worker died may have handed it out already (and a worker kept it for a
        retry). Work tried again (`submit`) and every scan's files are never fresh."""
        self.submit(path, fresh=path not in self.scanned)

    def _hand_out(self) -> None:
        """Give the workers what is ready, as many batches as they have room for. A batch
        takes its share of what is ready as if every batch a worker may have went now, so
        that no worker is left with a long batch while another has none (a backlog goes out
        BATCH_MOST files a batch)."""
        if self.pool is None:  # stopped: what is left stays in the spool for the next start
            return
        batches = self.setup.settings.workers * BATCHES_A_WORKER
        room = batches - self.batches
        share = min(BATCH_MOST, -(-len(self.ready) // batches))
        while self.ready and room > 0:
            taken = [self.ready.popitem(last=False) for _ in range(min(share, len(self.ready)))]
            batch = [path for path, _ in taken]
            fresh = [str(path) for path, is_fresh in taken if is_fresh]
            for path in batch:  # before: a worker may take the file before submit returns
                hop("handed_out", spool_file=path.name)
            try:
                future = self.pool.submit(
                    worker.receive_handing_back, [str(path) for path in batch], fresh
                )
            except BrokenProcessPool:
                self._recover()  # hands out every spooled message, this batch included
                return
            self.in_flight.update(batch)
            self.batches += 1
            room -= 1
            self._track(future, [Work(p.name, partial(self.submit, p), p) for p in batch])

    def _recover(self) -> None:
        """A worker process died (killed, out of memory): the pool is unusable from then on.
        Start a new one and hand it everything still in the spool."""
        if self.pool is None:  # stopped: the next start replays the spool
            return
        self.pool.shutdown(wait=False, cancel_futures=True)
        log.error("a worker process died: starting new workers, replaying the spool")
        self.in_flight.clear()
        self.ready.clear()
        self.batches = 0
        self.pool_generation += 1
        self._start_pool()
        self._replay_spool()

    def _replay_spool(self) -> None:
        """Hand the workers every spooled message not yet with them (on start, after a crash),
        but those finished and waiting for their removal."""
        pending = self.spool.pending()
        self.scanned = frozenset(pending)
        finished = self.finished_files.names()
        for path in pending:
            if path not in self.in_flight and path not in finished:
                self.ready[path] = False
        self._hand_out()

    def _track(self, future: Future[Any], work: list[Work]) -> None:
        """Follow one pool call (a batch of spool files, or one deferred record)."""
        self.pending.add(future)
        self.idle.clear()
        loop = asyncio.get_running_loop()
        generation = self.pool_generation
        future.add_done_callback(
            lambda f: loop.call_soon_threadsafe(self._finished, f, work, generation)
        )

    def _finished(self, future: Future[Any], work: list[Work], generation: int) -> None:
        self.pending.discard(future)
        self.finished += 1
        self.look_again.set()  # what it did may have queued work: a retry's wait, a deferral
        for each in work:
            self.deferred_running.discard(each.label)
        current = generation == self.pool_generation
        error = None if future.cancelled() else future.exception()
        handed: tuple[Any, list[str]] | None = None
        if not future.cancelled() and error is None:
            handed = future.result()
            self.finished_files.add(handed[1])  # a dead pool's too: their ends are committed
        if isinstance(error, BrokenProcessPool):
            if current:  # the first of the dead pool's futures
                self._recover()
        elif future.cancelled() or (not current and work[0].spool_file is not None):
            pass  # a dead pool's: its spool files went to the new one
        else:
            results = handed[0] if handed is not None else [None] * len(work)
            if not isinstance(results, list):
                results = [results]  # a deferred record's one Result
            for each, result in zip(work, results, strict=True):
                self._done(each, result, error)
            if work[0].spool_file is not None:  # a batch: room for the next one
                self.batches -= 1
                self._hand_out()
        if not self.pending and not self.ready:
            self.idle.set()

    def _done(self, work: Work, result: Result | None, error: BaseException | None) -> None:
        """One spool file's or record's end in its worker: kept work is tried again later."""
        if work.spool_file is not None:
            self.in_flight.discard(work.spool_file)
        if error is not None:  # spool files and deferred records stay for the next attempt
            log.error("worker failed", extra={"work": work.label, "error": repr(error)})
            self._try_later(work.label, work.again)
        elif result is Result.KEPT:
            self._try_later(work.label, work.again)
        else:
            self.kept.pop(work.label, None)

    def _try_later(self, label: str, again: Callable[[], None]) -> None:
        """Kept work, handed to the workers again after a backoff (or on the next start)."""
        tries = self.kept[label] = self.kept.get(label, 0) + 1
        delay = kept_backoff(tries, self.rng)

        def fire() -> None:
            self.timers.discard(handle)
            if not self.stopping:
                again()

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self.timers.add(handle)

    async def _run_deferred(self, state: SqliteState) -> None:
        """The deferred queue's scheduler: hands due work (a Task's retry, a deferred delivery,
        deferred processing, a rule set retry) to the workers, a few at a time so none waits
        long enough in the pool for its lease to run out. It looks again when the next record
        comes due, when work finishes, or after the poll interval, whichever is first, and
        never sooner than SOONEST_LOOK after its last look: at a hundred messages a second, a
        look at each finished message cost the ingress two thread hops and two queries each."""
        settings = self.setup.settings
        room = settings.workers * 4
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            self.look_again.clear()
            wait = settings.defer_poll
            try:
                free = room - len(self.deferred_running)
                if free > 0 and self.pool is not None:
                    due = await asyncio.to_thread(
                        state.lease_due, self.clock.now(), DEFERRED_LEASE, free
                    )
                    for record in due:
                        self._run_record(record)
                    if len(due) < free:  # else: more is due now, and there may be room
                        wait = self._until_next(await asyncio.to_thread(state.next_due), wait)
                failures = 0
            except Exception as error:
                failures += 1
                if kind_of(error) is FailureKind.TRANSIENT:  # a full disk, a busy database
                    log.warning(
                        "deferred queue not read for now; trying again", extra={"error": error}
                    )
                else:
                    log.exception("deferred queue scheduler failed; trying again")
                await asyncio.sleep(min(settings.defer_poll, kept_backoff(failures, self.rng)))
                continue
            looked = loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.look_again.wait(), max(wait, SOONEST_LOOK))
            # work that finishes meanwhile is seen by one look, not by a look each
            await asyncio.sleep(looked + SOONEST_LOOK - loop.time())

    def _until_next(self, next_due: datetime | None, longest: float) -> float:
        if next_due is None:
            return longest
        return min(longest, (next_due - self.clock.now()).total_seconds())

    def _run_record(self, record: Deferred) -> None:
        if record.record_id in self.deferred_running or self.pool is None:
            return
        self.deferred_running.add(record.record_id)
        future = self.pool.submit(worker.run_due_handing_back, record.model_dump_json())
        self._track(future, [Work(record.record_id, partial(self._postpone, record))])

    def _postpone(self, record: Deferred) -> None:
        """A record kept by its worker: due again now that its backoff has passed."""
        state = self.deferred_state
        if state is None:
            return

        async def release() -> None:
            try:
                await asyncio.to_thread(state.postpone, record.record_id, self.clock.now())
            except Exception as error:  # noqa: BLE001 -- its lease runs out in the end
                log.warning(
                    "kept record not released; it runs when its lease ends",
                    extra={"record": record.record_id, "error": repr(error)},
                )
            self.look_again.set()

        task = asyncio.get_running_loop().create_task(release())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _keep_checkpoints(self) -> None:
        """The workers' WALs copied into their databases (CHECKPOINT_EVERY), when work
        finished since the last look; a failed checkpoint is tried at the next. Then the
        finished spool files go (`_remove_finished`). A stop (`last_look`) makes one last look
        once the workers are done."""
        databases = [self.bootstrap.state(), self.bootstrap.archive()]

        def checkpoint() -> None:
            for database in databases:
                database.checkpoint()

        looked = self.finished
        try:
            while not self.last_look.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.last_look.wait(), CHECKPOINT_EVERY)
                if self.finished == looked and not self.finished_files:
                    continue
                looked = self.finished
                try:
                    await _unless_cancelled(asyncio.to_thread(checkpoint))
                except Exception as error:  # noqa: BLE001 -- the workers' backstop remains
                    log.warning("WAL checkpoint failed; trying again", extra={"error": error})
                await self._remove_finished()
            await self._remove_finished()  # handed back since the look under way took its files
        finally:
            for database in databases:
                database.close()

    async def _remove_finished(self) -> None:
        """The finished spool files handed back so far go, after one fsync of the state
        database's WAL started now, after their ends' commits (each worker committed before
        it handed its files back). Not the checkpoint's own fsync of the WAL: a PASSIVE
        checkpoint syncs it only when it has frames to copy that no reader holds back. When the
        fsync fails they wait for the next look (a stop leaves them to the next start, whose
        replay finds each finished)."""
        files = self.finished_files
        taken = files.take()
        if not taken:
            return
        removed = False
        try:
            await _unless_cancelled(asyncio.to_thread(files.remove, taken))
            removed = True
        except Exception as error:  # noqa: BLE001 -- the files stay: removed at a later look
            log.warning(
                "finished spool files not removed for now; trying again",
                extra={"files": len(taken), "error": repr(error)},
            )
        finally:
            files.done(removed=removed)

    async def _keep_retention(self) -> None:
        """The archive's Retention, the quarantine's and the replay history's: enforced on
        start, then hourly, off the loop."""
        keep = self.setup.config.history.keep
        while True:
            try:
                purged = await asyncio.to_thread(self.bootstrap.enforce_retention)
                if purged:
                    log.info("retention enforced", extra={"purged": purged})
                if keep > 0:
                    days = await asyncio.to_thread(
                        self.bootstrap.history(keep).prune, self.clock.now()
                    )
                    if days:
                        log.info("replay history pruned", extra={"days": days})
            except Exception:
                log.exception("retention not enforced; trying again later")
            await asyncio.sleep(RETENTION_EVERY)

    async def start(self) -> Running:
        setup, dirs = self.setup, self.dirs
        loop = asyncio.get_running_loop()
        for directory in (dirs.spool, dirs.objects, dirs.mailboxes, dirs.events, dirs.logs):
            directory.mkdir(parents=True, exist_ok=True)
        mailbox_ports = await self._mailbox_hosts()
        self.pool_args = (setup.settings.model_dump_json(), json.dumps(mailbox_ports))
        self._start_pool()
        deferred_state = self.deferred_state = self.bootstrap.state()
        deferred_state.release_leases()
        adopted = self.bootstrap.adopt_earlier_quarantine()
        if adopted:
            log.info("earlier quarantined spool files recorded", extra={"files": len(adopted)})
        # what a previous run accepted but did not finish, before anything new is accepted
        self.spool.discard_partial()
        self._replay_spool()
        limits = setup.config.smtp.limits
        raise_open_file_limit(limits)
        cert, key = ensure_certificate(dirs.tls, setup.settings.hostname, self.clock.now())
        tls = server_context(cert, key)
        spool = self.spool
        book = self.bootstrap.address_book()
        logs = self.bootstrap.logs()
        listening: dict[str, tuple[str, int]] = {}
        ingress_servers = []
        for listener in setup.listeners:
            handler = IngressHandler(
                ingress_id=listener.ingress_id,
                ingress=listener.ingress,
                policy=listener.traffic_policy,
                book=book,
                spool=spool,
                logs=logs,
                clock=self.clock,
                submit=self.submit_fresh,
                smtp_password=listener.smtp_password,
                addons=self.bootstrap.session_addons(listener.traffic_policy),
            )
            server = await loop.create_server(
                partial(self._session, listener, handler, tls),
                host=setup.config.smtp.host,
                port=listener.port,
                backlog=limits.listen_backlog,
            )
            host, port = server.sockets[0].getsockname()[:2]
            listening[listener.ingress_id] = (host, port)
            ingress_servers.append(server)
        first = listening[setup.primary.ingress_id]
        ports = {"smtp": first[1]}
        ports |= {f"smtp_{name}": port for name, (_, port) in listening.items()}
        auth = [listening[x.ingress_id][1] for x in setup.listeners if x.auth]
        if auth:
            ports["smtp_auth"] = auth[0]
        self.scheduler = asyncio.create_task(self._run_deferred(deferred_state))
        self.housekeeping = asyncio.create_task(self._keep_retention())
        self.checkpoints = asyncio.create_task(self._keep_checkpoints())
        # last: the ports file says the gateway is ready, so nothing at start may touch the
        # state database after it (a client that locks the database then must not stall us)
        write_ports(dirs, {**ports, **mailbox_ports})
        return Running(
            smtp=first,
            mailbox_hosts=mailbox_ports,
            ingress=listening,
            ingress_servers=ingress_servers,
        )

    def _session(
        self, listener: IngressSetup, handler: IngressHandler, tls: ssl.SSLContext
    ) -> IngressSMTP:
        return ingress_session(
            handler,
            self.setup.settings.hostname,
            tls,
            listener.max_message_size,
            self.defences,
        )

    async def stop(self, running: Running, grace: float = 30.0) -> None:
        for server in running.ingress_servers:  # the ingress first: accept nothing new
            server.close()
        self.stopping = True
        for timer in self.timers:  # kept work stays where it is: the next start runs it
            timer.cancel()
        if self.scheduler is not None:
            self.scheduler.cancel()
        if self.housekeeping is not None:
            self.housekeeping.cancel()
        try:
            await asyncio.wait_for(self.idle.wait(), grace)
        except TimeoutError:
            log.warning(
                "stopping with messages in flight; they are replayed on the next start",
                extra={"in_flight": len(self.pending)},
            )
        pool, self.pool = self.pool, None  # nothing more is handed out
        if pool is not None:
            # in a thread: the loop goes on meanwhile (the scheduler, the timers are done)
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        if self.checkpoints is not None:  # the workers are done: what they finished goes
            self.last_look.set()
            await self.checkpoints
        if self.mailbox_process is not None:  # after the workers: they said QUIT to the hosts
            self.mailbox_process.terminate()
            await self.mailbox_process.wait()
        self.dirs.ports_file.unlink(missing_ok=True)


async def _unless_cancelled(work: asyncio.Future[None] | Coroutine[Any, Any, None]) -> None:
    """Wait for `work` (a thread's) to end even when the waiting task is cancelled, then
    cancel: a thread using the checkpoints' connections is never left running as they close."""
    running = asyncio.ensure_future(work)
    try:
        await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait([running])
        raise


async def serve(bootstrap: Bootstrap, on_ready: Callable[[Running], None]) -> None:
    gateway = Gateway(bootstrap)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (
        signal.SIGINT,
        signal.SIGTERM,
    ):  # before start(): a Ctrl-C during it is a clean stop
        loop.add_signal_handler(sig, stop.set)
    running = await gateway.start()
    on_ready(running)
    await stop.wait()
    log.info("stopping")
    await gateway.stop(running)
