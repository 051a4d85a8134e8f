"""Ingress CPU time a message: the gateway's ingress alone (its SMTP sessions, the traffic
policy, the spool with its fsync before `250`, the `accepted` record), built in this process as
`mxgate run` builds it, driven by Postfix's smtp-source over loopback.

No worker runs: each spool file is removed as soon as the ingress hands it on, so the figure
is this process's CPU time (user + system, its threads included) over the run divided by the
messages, what the ingress spends on one message. `--profile FILE` writes cProfile's
statistics of the run (CPU time) and prints the functions that cost the most; the profiler's
own cost is then in the figure.

    .venv/bin/python bench/ingress_cpu.py [--messages 1000] [--sessions 10] [--size 5120]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import resource
import time
from pathlib import Path

from harness import gateway_environment, print_cpu_a_message, quiet_dns, smtp_source
from scratch import scratch


async def send(port: int, messages: int, sessions: int, size: int) -> None:
    """smtp-source in a thread: this process's loop serves the ingress meanwhile."""
    await asyncio.to_thread(smtp_source, port, messages, sessions, size)


async def run(args: argparse.Namespace, environment: dict[str, str]) -> None:
    # imported here: the figure is the ingress's, and so is its import time (left out)
    from mxgate.local.bootstrap import Bootstrap  # noqa: PLC0415
    from mxgate.local.server import Gateway  # noqa: PLC0415
    from mxgate.local.settings import LocalSettings  # noqa: PLC0415
    from mxgate.observability import configure_logging  # noqa: PLC0415

    class IngressOnly(Gateway):
        """The gateway with no workers: what the ingress hands on is taken off the spool."""

        accepted = 0

        def _start_pool(self) -> None:
            pass

        def submit(self, path: Path, *, fresh: bool = False) -> None:
            self.accepted += 1
            self.spool.remove(path)

    settings = LocalSettings.from_env(environment)
    configure_logging(settings.log_level)  # as `mxgate run` logs (warnings and up to stderr)
    logging.getLogger().setLevel(settings.log_level.upper())
    gateway = IngressOnly(Bootstrap(settings))
    running = await gateway.start()
    port = running.smtp[1]
    await send(port, 50, args.sessions, 5120)  # warm up: caches, lazy imports
    profile = cProfile.Profile(time.process_time) if args.profile else None
    accepted = gateway.accepted
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    if profile is not None:
        profile.enable()
    await send(port, args.messages, args.sessions, args.size)
    if profile is not None:
        profile.disable()
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - started
    accepted = gateway.accepted - accepted
    await gateway.stop(running)
    if accepted != args.messages:
        raise SystemExit(f"only {accepted} of {args.messages} messages were accepted")
    if profile is not None:
        profile.dump_stats(args.profile)
    print_cpu_a_message(
        f"ingress CPU a message, {args.size}-byte messages over {args.sessions} sessions",
        before,
        after,
        wall,
        args.messages,
        profile=args.profile,
        top=args.top,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--size", type=int, default=5120)
    parser.add_argument("--profile", type=Path, help="write cProfile statistics here")
    parser.add_argument("--top", type=int, default=40, help="functions printed with --profile")
    args = parser.parse_args()
    with scratch("mxgate-ingress-cpu-") as temporary:
        work = Path(temporary)
        with quiet_dns(work) as dns_port:
            # the mailbox hosts are "external" on a port nothing listens on: no worker runs
            environment = gateway_environment(work, sink_port=1, dns_port=dns_port)
            asyncio.run(run(args, environment))


if __name__ == "__main__":
    main()
