"""Concurrency and memory: 200 sessions at once, each sending 1 MB messages (smtp-source), to
the reference Postfix and to mxgate relaying to smtp-sink, passes alternating. For each:
messages relayed per second, and whether every message was accepted (nothing may be refused
but by policy, and this load breaks no policy). For mxgate also its peak resident memory, all
its processes together (sampled every 5 ms), against the bound docs/benchmarks.md gives:

    idle + (MESSAGES_IN_MEMORY x 3 + workers x 4) x message size

(the ingress reads at most MESSAGES_IN_MEMORY messages at once, each held about three times
while it is read and spooled; a worker holds a message a few times over while it runs the
rule set and the workflow), so the number of sessions does not enter it.

    .venv/bin/python bench/concurrency.py [--sessions 200] [--size 1000000] [--messages 200]
"""

from __future__ import annotations

import argparse
import os
import time

from harness import (
    Figures,
    Gateway,
    PeakRss,
    accepted_count,
    gateways,
    load,
    rss,
    smtp_sink,
    smtp_source,
    wait_relayed,
)

from mxgate.local.ingress import MESSAGES_IN_MEMORY

INGRESS_COPIES = 3
WORKER_COPIES = 4


def one_pass(gateway: Gateway, args: argparse.Namespace) -> tuple[float, int, int]:
    """(relayed/s, messages accepted, peak resident bytes of the gateway's processes)."""
    before = gateway.done()
    accepted_before = accepted_count(gateway.home / "state.db") if gateway.home else 0
    started = time.perf_counter()
    with PeakRss(gateway) as peak:
        smtp_source(gateway.port, args.messages, args.sessions, args.size)
        seconds = wait_relayed(gateway, before + args.messages, started, limit=600)
    accepted = (
        accepted_count(gateway.home / "state.db") - accepted_before
        if gateway.home
        else gateway.done() - before
    )
    return args.messages / seconds, accepted, peak.peak_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(
        f"{args.sessions} concurrent sessions, {args.messages} messages of {args.size} bytes, "
        f"{args.workers} mxgate workers, median (spread) of {args.runs} alternating passes; "
        f"{load()}",
        flush=True,
    )
    with (
        smtp_sink() as sink_port,
        gateways(sink_port, workers=args.workers, maildir=False) as (reference, to_sink, _),
    ):
        targets = [g for g in (reference, to_sink) if g is not None]
        idle = rss(to_sink.pids())
        rates = {g.label: Figures() for g in targets}
        accepted = {g.label: Figures() for g in targets}
        peaks = Figures()
        for _ in range(args.runs):
            for gateway in targets:
                rate, taken, peak = one_pass(gateway, args)
                rates[gateway.label].add(rate)
                accepted[gateway.label].add(taken)
                if gateway is to_sink:
                    peaks.add(peak)
        base = rates[reference.label].median if reference else None
        for gateway in targets:
            rate = rates[gateway.label]
            ratio = (
                f"  {rate.median / base:.2f}x Postfix" if base and gateway is not reference else ""
            )
            refused = args.messages - min(accepted[gateway.label].values)
            print(
                f"  {gateway.label:<22} relayed {rate.median:6.1f} ({rate.spread:5.1f}) msg/s "
                f"= {rate.median * args.size / 1e6:5.1f} MB/s, refused {refused:.0f}{ratio}",
                flush=True,
            )
        bound = (
            idle + (MESSAGES_IN_MEMORY * INGRESS_COPIES + args.workers * WORKER_COPIES) * args.size
        )
        print(
            f"  mxgate peak RSS (all processes) {peaks.median / 1e6:6.0f} ({peaks.spread / 1e6:.0f}) MB, "
            f"idle {idle / 1e6:.0f} MB; bound idle + ({MESSAGES_IN_MEMORY} x {INGRESS_COPIES} + "
            f"{args.workers} x {WORKER_COPIES}) x size = {bound / 1e6:.0f} MB "
            f"({peaks.median / bound:.2f}x the bound; sessions x size = "
            f"{args.sessions * args.size / 1e6:.0f} MB)",
            flush=True,
        )
    print(f"  ({load()} at the end)")


if __name__ == "__main__":
    main()
