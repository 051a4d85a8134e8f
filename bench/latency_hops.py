"""Where a message's time from the start of its DATA to its delivery goes, hop by hop, at a
steady rate through `mxgate run` to smtp-sink (issue 12, session 24).

The gateway runs with MXGATE_LATENCY_LOG=1: the ingress logs the end of each DATA and its
spool file made durable (the 250 follows), the gateway each spool file handed to the workers'
pool, a worker each file it takes (`observability.hop`, at DEBUG). The state database adds
the `accepted` event (DATA began), the rule set's end (`rules`) and the recipient's
`delivered` state. p50 / p90 / p99 of each hop, in milliseconds.

    .venv/bin/python bench/latency_hops.py [--rate 150] [--seconds 6]
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sqlite3
import statistics
import time
from datetime import datetime
from pathlib import Path

from harness import load, mxgate, quiet_dns, smtp_sink, wait_relayed
from scratch import scratch
from throughput import paced

# in a message's order; `accepted`, `rules` and `delivered` from the state database
HOPS = ["accepted", "data_end", "durable", "handed_out", "taken", "rules", "delivered"]
_HOP = re.compile(r"mxgate\.latency: hop (.*)$")


def logged_hops(gateway_out: Path) -> dict[str, dict[str, float]]:
    """Each message's logged hops (the first of each: a replayed file is taken again)."""
    found: dict[str, dict[str, float]] = {}
    for line in gateway_out.read_text(errors="replace").splitlines():
        if (match := _HOP.search(line)) is None:
            continue
        fields = dict(field.split("=", 1) for field in match.group(1).split())
        message_id = fields.get("message_id") or fields["spool_file"].removesuffix(".msg")
        found.setdefault(message_id, {}).setdefault(fields["stage"], float(fields["at"]))
    return found


def recorded_hops(state_db: Path, since: str) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    with sqlite3.connect(state_db, timeout=30) as db:
        rows = db.execute(
            "SELECT message_id, stage, at FROM events WHERE at >= ? AND stage IN "
            "('accepted', 'rules') UNION ALL SELECT message_id, 'delivered', at "
            "FROM recipient_states WHERE at >= ? AND outcome = 'delivered'",
            (since, since),
        ).fetchall()
    for message_id, stage, at in rows:
        found.setdefault(message_id, {})[stage] = datetime.fromisoformat(at).timestamp()
    return found


def percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=150.0, help="messages a second")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--size", type=int, default=5120)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    print(f"{args.rate:.0f} msg/s for {args.seconds:.0f} s, {args.size} bytes; {load()}")
    with smtp_sink() as sink_port, scratch("mxgate-hops-") as directory:
        work = Path(directory)
        with (
            quiet_dns(work) as dns_port,
            mxgate(
                work,
                "mxgate -> smtp-sink",
                workers=args.workers,
                sink_port=sink_port,
                dns_port=dns_port,
                settings={"MXGATE_LATENCY_LOG": "1"},
            ) as gateway,
        ):
            since = datetime.now().astimezone().isoformat()
            count = int(args.rate * args.seconds)
            before, started, cpu = gateway.done(), time.perf_counter(), gateway.cpu()
            paced(gateway.port, args.rate, count, args.size)
            wait_relayed(gateway, before + count, started, limit=120)
            spent = {part: (t - cpu[part]) / count * 1000 for part, t in gateway.cpu().items()}
            assert gateway.home is not None
            recorded = recorded_hops(gateway.home / "state.db", since)
        logged = logged_hops(work / "gateway.out")
    messages = [
        hops | logged.get(message_id, {})
        for message_id, hops in recorded.items()
        if "accepted" in hops
    ]
    whole = [m for m in messages if all(stage in m for stage in HOPS)]
    print(f"  {len(whole)} of {count} messages with every hop   p50      p90      p99 (ms)")
    for start, end in [*itertools.pairwise(HOPS), ("accepted", "delivered")]:
        spans = sorted((m[end] - m[start]) * 1000 for m in whole)
        if spans:
            print(
                f"  {start:>10} -> {end:<10} {statistics.median(spans):8.2f} "
                f"{percentile(spans, 0.9):8.2f} {percentile(spans, 0.99):8.2f}"
            )
    parts = "   ".join(f"{part} {ms:.2f}" for part, ms in spent.items())
    print(f"  CPU a message: {sum(spent.values()):.2f} ms   {parts}")
    print(f"  ({load()} at the end)")


if __name__ == "__main__":
    main()
