"""Worker CPU time a message: one worker (built in this process, as a pool process builds it)
takes spooled messages through the rule set and the workflow to Postfix's smtp-sink.

The messages are spooled first (as the ingress spools them), then the worker runs each spool
file as the gateway hands it a file the ingress just spooled (`fresh`; `--replayed`: as a file
found by a scan of the spool, with the reads that look for an earlier run); the figure is this
process's CPU time (user + system) over the run, divided by the messages: what a worker spends
on one message, which a loaded machine moves far less than it moves wall-clock rates.
`--profile FILE` writes cProfile's statistics of the run (CPU time) and prints the functions
that cost the most (their own time, and with what they call); the profiler's own cost is then
in the figure. `--pages` prints the pages each database's commits wrote during the run, a
commit and by table or index: read from the WAL, which the worker's connections leave whole
(WORKER_CHECKPOINT_PAGES) unless a run outgrows it.

As under `mxgate run`, the worker hands its finished spool files back (`Spool.handing_back`)
and waits on no fsync for them; what the gateway then does for them (one fsync of the WAL, an
unlink each: `spool.remove_durably`) is timed apart and printed after the worker's figure.

    .venv/bin/python bench/worker_cpu.py [--messages 200] [--size 5120] [--profile out.prof]
                                         [--earlier N]  # N messages' events in the state database
                                         [--pages] [--statements] [--replayed]

`--statements` prints the SQL statements a message of each database (sqlite3's trace callback,
which sees each statement SQLite runs: an `executemany` of n rows counts n).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import re
import resource
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from harness import RECIPIENT, gateway_environment, print_cpu_a_message, quiet_dns, smtp_sink
from scratch import scratch

if TYPE_CHECKING:
    from mxgate.local.bootstrap import Worker
    from mxgate.local.spool import Spool

SENDER = "bench@load.example"


def message(size: int, number: int) -> bytes:
    """A message of about `size` bytes, shaped as smtp-source's are (a few header fields)."""
    head = (
        f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nDate: Tue, 1 Dec 2026 12:00:00 +0000\r\n"
        f"Message-Id: <{number}.bench@load.example>\r\nSubject: worker bench {number}\r\n\r\n"
    ).encode()
    line = b"La de da de da 1.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def spool_messages(spool: Spool, ingress: str, count: int, size: int, first: int = 0) -> list[Path]:
    """`count` messages of about `size` bytes spooled as the ingress spools them."""
    from mxgate.ids import new_message_id  # noqa: PLC0415
    from mxgate.records import Envelope  # noqa: PLC0415

    paths = []
    for number in range(first, first + count):
        now = datetime.now(UTC)
        envelope = Envelope(
            message_id=new_message_id(now),
            mail_from=SENDER,
            recipients=[RECIPIENT],
            helo="load.example",
            source_ip="127.0.0.1",
            received_at=now,
            ingress_point=ingress,
        )
        paths.append(spool.write(envelope, message(size, number)))
    return paths


WAL_HEADER, FRAME_HEADER = 32, 24  # bytes (sqlite.org/fileformat.html, the WAL file)


def wal_frames(database: Path) -> list[tuple[int, bool]]:
    """(page number, whether the frame ends a commit) of each frame in `database`'s WAL."""
    wal = Path(f"{database}-wal").read_bytes() if Path(f"{database}-wal").exists() else b""
    if len(wal) < WAL_HEADER:
        return []
    page_size = int.from_bytes(wal[8:12], "big")
    frames = []
    for at in range(WAL_HEADER, len(wal) - FRAME_HEADER - page_size + 1, FRAME_HEADER + page_size):
        page, size_after = int.from_bytes(wal[at : at + 4], "big"), wal[at + 4 : at + 8]
        frames.append((page, size_after != b"\0\0\0\0"))  # a commit's last frame: the size
    return frames


def print_pages(database: Path, earlier_frames: int) -> None:
    """The frames written after the first `earlier_frames`: pages a commit, by the b-tree
    they hold."""
    frames = wal_frames(database)[earlier_frames:]
    commits = sum(last for _, last in frames)
    if not commits:
        print(f"{database.name}: no commit in the WAL")
        return
    with sqlite3.connect(database) as db:  # dbstat: each page's table or index
        owners = dict(db.execute("SELECT pageno, name FROM dbstat"))
    held = collections.Counter(owners.get(page, "(free)") for page, _ in frames)
    print(f"{database.name}: {len(frames) / commits:.2f} pages a commit, {commits} commits")
    for name, count in held.most_common():
        print(f"    {count / commits:5.2f}  {name}")


_VALUE = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b|NULL")


def trace_statements(worker: Worker) -> dict[str, collections.Counter[str]]:
    """Each database's statements from now on, counted by their text with its values as `?`
    (the trace gives a statement with its bound values written in)."""
    from mxgate.adapters.local.database import SqliteDatabase  # noqa: PLC0415

    archive = worker.mail_manager.actions.archive_index
    assert isinstance(archive, SqliteDatabase)
    connections = {"state database": worker.state.db, "archive index": archive.db}
    counts: dict[str, collections.Counter[str]] = {}
    for name, connection in connections.items():
        counted = counts[name] = collections.Counter()

        def trace(sql: str, counted: collections.Counter[str] = counted) -> None:
            counted[_VALUE.sub("?", " ".join(sql.split()))] += 1

        connection.set_trace_callback(trace)
    return counts


def print_statements(counts: dict[str, collections.Counter[str]], messages: int) -> None:
    for name, counted in counts.items():
        print(f"{name}: {sum(counted.values()) / messages:.2f} statements a message")
        for sql, count in counted.most_common():
            print(f"    {count / messages:5.2f}  {sql[:120]}")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--size", type=int, default=5120)
    parser.add_argument(
        "--earlier", type=int, default=0, help="messages already in the state database"
    )
    parser.add_argument("--profile", type=Path, help="write cProfile statistics here")
    parser.add_argument("--top", type=int, default=40, help="functions printed with --profile")
    parser.add_argument("--pages", action="store_true", help="pages a commit, from the WALs")
    parser.add_argument("--statements", action="store_true", help="SQL statements a message")
    parser.add_argument("--replayed", action="store_true", help="each file taken as replayed")
    return parser.parse_args()


def main() -> None:
    args = arguments()

    # imported here: the figure is the worker's, and so is its import time (left out)
    from mxgate.local.bootstrap import Bootstrap  # noqa: PLC0415
    from mxgate.local.pipeline import Result, receive_spooled  # noqa: PLC0415
    from mxgate.local.settings import LocalSettings  # noqa: PLC0415
    from mxgate.local.spool import remove_durably  # noqa: PLC0415
    from mxgate.records import Stage, TimelineEvent  # noqa: PLC0415

    with (
        scratch("mxgate-worker-cpu-") as temporary,
        smtp_sink() as sink_port,
    ):
        work = Path(temporary)
        with quiet_dns(work) as dns_port:
            environment = gateway_environment(work, sink_port=sink_port, dns_port=dns_port)
            bootstrap = Bootstrap(LocalSettings.from_env(environment))
            hosts = bootstrap.setup.config.mailbox_hosts
            worker = bootstrap.worker(dict.fromkeys(hosts, sink_port))
            spool = bootstrap.ingress_spool()  # linked into the history, as the ingress does
            ingress = bootstrap.setup.primary.ingress_id

            earlier = datetime.now(UTC)  # a gateway that has run a while: its timeline
            worker.state.record_many(
                [
                    TimelineEvent(message_id=f"earlier{n}", at=earlier, stage=Stage.ACCEPTED)
                    for n in range(args.earlier)
                ]
            )
            for path in spool_messages(
                spool, ingress, 5, args.size
            ):  # warm up: connections, caches, lazy imports
                receive_spooled(worker, path, fresh=True)
            paths = spool_messages(spool, ingress, args.messages, args.size)
            databases = [bootstrap.paths.state_db, bootstrap.paths.archive_db]
            frames_before = [len(wal_frames(database)) for database in databases]
            statements = trace_statements(worker) if args.statements else None
            # CPU time, not wall time: waits on the sink and the disk are not the worker's cost
            profile = cProfile.Profile(time.process_time) if args.profile else None
            before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            if profile is not None:
                profile.enable()
            fresh = not args.replayed
            with worker.spool.handing_back() as finished:  # as the gateway's workers do
                results = [receive_spooled(worker, path, fresh=fresh) for path in paths]
            if profile is not None:
                profile.disable()
            after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - started
            removal = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            remove_durably(finished, worker.state.make_durable)  # the gateway's side
            removed = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            if statements is not None:
                print_statements(statements, args.messages)
            if args.pages:  # before the last connection closes, which empties the WAL
                for database, earlier_frames in zip(databases, frames_before, strict=True):
                    print_pages(database, earlier_frames)
            worker.close()
    done = sum(r is Result.DONE for r in results)
    if done != args.messages:
        sys.exit(f"only {done} of {args.messages} messages went through: {set(results)}")
    if profile is not None:
        profile.dump_stats(args.profile)
    print_cpu_a_message(
        f"worker CPU a message, {args.size}-byte messages",
        before,
        after,
        wall,
        args.messages,
        profile=args.profile,
        top=args.top,
    )
    print_cpu_a_message(
        "the gateway's removal of the finished files (one fsync, an unlink each)",
        removal[0],
        removed[0],
        removed[1] - removal[1],
        args.messages,
    )


if __name__ == "__main__":
    main()
