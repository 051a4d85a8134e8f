"""The gateway's CPU a message for handing spool files to its workers: `mxgate run`'s Gateway
with its real pool of workers (relaying to Postfix's smtp-sink), each message spooled first and
then handed on as the ingress hands it on after `250` (`Gateway.submit_fresh`), at a steady rate or
all at once.

It prints the gateway process's own CPU time a message over the run (user + system, its
threads included: the event loop, the pool's threads) with no SMTP session in it, the
workers' CPU time a message (their /proc counters before and after), and how many pool calls
took the messages there.

    .venv/bin/python bench/handoff_cpu.py [--messages 1000] [--rate 150] [--size 5120]

`--rate 0` hands every message on at once (a backlog, as on start after a stop).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from harness import (
    children,
    delivered_count,
    gateway_environment,
    load,
    process_cpu,
    quiet_dns,
    smtp_sink,
)
from scratch import scratch
from worker_cpu import spool_messages


def workers_cpu() -> float:
    """CPU seconds of this process's pool workers so far."""
    pids = [
        pid
        for pid in children(os.getpid())
        if b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    return sum(process_cpu(pid)[0] for pid in pids)


async def run(args: argparse.Namespace, environment: dict[str, str]) -> None:
    # imported here: the figure is the gateway's, and so is its import time (left out)
    from mxgate.local.bootstrap import Bootstrap  # noqa: PLC0415
    from mxgate.local.server import Gateway  # noqa: PLC0415
    from mxgate.local.settings import LocalSettings  # noqa: PLC0415
    from mxgate.observability import configure_logging  # noqa: PLC0415

    class CountingGateway(Gateway):
        """The gateway, each call of its pool counted."""

        calls = 0

        def _start_pool(self) -> None:
            super()._start_pool()
            assert self.pool is not None
            submit = self.pool.submit

            def counted(*call: Any) -> Future[Any]:
                CountingGateway.calls += 1
                return submit(*call)

            self.pool.submit = counted

    settings = LocalSettings.from_env(environment)
    configure_logging(settings.log_level)
    logging.getLogger().setLevel(settings.log_level.upper())
    bootstrap = Bootstrap(settings)
    gateway = CountingGateway(bootstrap)
    running = await gateway.start()
    spool = bootstrap.spool()
    ingress = bootstrap.setup.primary.ingress_id

    async def hand_on(paths: list[Path], rate: float) -> None:
        started = time.perf_counter()
        for number, path in enumerate(paths):
            if rate:
                await asyncio.sleep(max(0.0, started + number / rate - time.perf_counter()))
            gateway.submit_fresh(path)
        await asyncio.wait_for(gateway.idle.wait(), 600)

    # warm up: the workers' imports, connections, caches
    await hand_on(spool_messages(spool, ingress, 20, args.size), 0)
    paths = spool_messages(spool, ingress, args.messages, args.size, first=20)
    calls, workers_before = CountingGateway.calls, workers_cpu()
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    await hand_on(paths, args.rate)
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - started
    workers_after, calls = workers_cpu(), CountingGateway.calls - calls
    await gateway.stop(running)
    delivered = delivered_count(settings.paths.state_db) - 20
    if delivered != args.messages:
        raise SystemExit(f"only {delivered} of {args.messages} messages were delivered")
    each = 1000 / args.messages
    own = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * each
    rate = f"{args.rate:g} a second" if args.rate else "all at once"
    print(
        f"{args.messages} messages of {args.size} bytes handed on {rate}, {settings.workers} "
        f"workers: gateway process {own:.3f} ms a message, workers "
        f"{(workers_after - workers_before) * each:.2f} ms a message, {calls} pool calls "
        f"({args.messages / max(calls, 1):.1f} messages a call), {wall * each:.2f} ms wall a "
        f"message; {load()}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=150, help="messages a second (0: at once)")
    parser.add_argument("--size", type=int, default=5120)
    args = parser.parse_args()
    with (
        scratch("mxgate-handoff-cpu-") as temporary,
        smtp_sink() as sink_port,
    ):
        work = Path(temporary)
        with quiet_dns(work) as dns_port:
            environment = gateway_environment(work, sink_port=sink_port, dns_port=dns_port)
            asyncio.run(run(args, environment))


if __name__ == "__main__":
    main()
