"""Worker CPU time a message: one worker (built in this process, as a pool process builds it)
takes spooled messages through the rule set and the workflow to Postfix's smtp-sink.

The messages are spooled first (as the ingress spools them), then the worker runs each spool
file; the figure is this process's CPU time (user + system) over the run, divided by the
messages: what a worker spends on one message, which a loaded machine moves far less than
it moves wall-clock rates. `--profile FILE` writes cProfile's statistics of the run (CPU time)
and prints the functions that cost the most (their own time, and with what they call); the
profiler's own cost is then in the figure.

    .venv/bin/python bench/worker_cpu.py [--messages 200] [--size 5120] [--profile out.prof]
                                         [--earlier N]  # N messages' events in the state database
"""

from __future__ import annotations

import argparse
import cProfile
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from harness import RECIPIENT, gateway_environment, print_cpu_a_message, quiet_dns, smtp_sink
from scratch import scratch

if TYPE_CHECKING:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--size", type=int, default=5120)
    parser.add_argument(
        "--earlier", type=int, default=0, help="messages already in the state database"
    )
    parser.add_argument("--profile", type=Path, help="write cProfile statistics here")
    parser.add_argument("--top", type=int, default=40, help="functions printed with --profile")
    args = parser.parse_args()

    # imported here: the figure is the worker's, and so is its import time (left out)
    from mxgate.local.bootstrap import Bootstrap  # noqa: PLC0415
    from mxgate.local.pipeline import Result, receive_spooled  # noqa: PLC0415
    from mxgate.local.settings import LocalSettings  # noqa: PLC0415
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
                receive_spooled(worker, path)
            paths = spool_messages(spool, ingress, args.messages, args.size)
            # CPU time, not wall time: waits on the sink and the disk are not the worker's cost
            profile = cProfile.Profile(time.process_time) if args.profile else None
            before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            if profile is not None:
                profile.enable()
            results = [receive_spooled(worker, path) for path in paths]
            if profile is not None:
                profile.disable()
            after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - started
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


if __name__ == "__main__":
    main()
