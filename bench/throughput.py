"""Gateway throughput and latency: Postfix's smtp-source drives `mxgate run` over loopback.

Measured in one run, on this machine, 5 KB messages over 10 sessions by default:
  1. smtp-source -> smtp-sink: the load generator's own ceiling;
  2. smtp-source -> Postfix -> smtp-sink: the reference MTA (durable queue, relaying);
  3. smtp-source -> mxgate -> smtp-sink: the same relay path through mxgate;
  4. smtp-source -> mxgate -> local Maildir mailbox hosts: what `make run` does.
"accepted" is the rate until smtp-source finishes (each message fsynced before 250);
"relayed" is the rate until the last message has left the gateway. The passes alternate
(Postfix, mxgate to the sink, mxgate to Maildir, then again), `--runs` times; each figure is
the median, with the spread (max - min), and the ratio is of the medians. Each pass also notes
the CPU time the gateway's processes spent a message (for mxgate: the ingress, the workers and
the mailbox hosts apart), which a loaded machine moves far less than the rates.

Latency: messages sent at a steady rate (half of Postfix's median relayed rate; when that is
above mxgate's own relayed rate, where a queue builds, again at half of mxgate's) over a few
sessions; for each, the time from its `250` to its delivery, as each gateway records it
(Postfix: the `delay=` of its `status=sent` line; mxgate: its `accepted` event to the
recipient's `delivered` state), p50 and p99.

    .venv/bin/python bench/throughput.py [--messages 1000] [--sessions 10] [--size 5120]
"""

from __future__ import annotations

import argparse
import os
import re
import smtplib
import sqlite3
import statistics
import threading
import time
from datetime import datetime

from harness import (
    RECIPIENT,
    Figures,
    Gateway,
    gateways,
    load,
    smtp_sink,
    smtp_source,
    wait_relayed,
)

LATENCY_SESSIONS = 4


def drive(gateway: Gateway, args: argparse.Namespace) -> tuple[float, float, dict[str, float]]:
    """Send the load; (accepted/s, relayed/s, CPU seconds a message by part of the gateway)."""
    before = gateway.done()
    cpu_before = gateway.cpu()
    started = time.perf_counter()
    accepted = smtp_source(gateway.port, args.messages, args.sessions, args.size)
    relayed_in = wait_relayed(gateway, before + args.messages, started)
    cpu = {
        part: (spent - cpu_before[part]) / args.messages for part, spent in gateway.cpu().items()
    }
    return args.messages / accepted, args.messages / relayed_in, cpu


def paced(port: int, rate: float, count: int, size: int) -> None:
    """`count` messages at `rate` per second, spread over a few sessions."""
    body = f"From: bench@load.example\r\nTo: {RECIPIENT}\r\nSubject: latency\r\n\r\n".encode() + (
        b"x" * 76 + b"\r\n"
    ) * max(1, (size - 80) // 78)
    started = time.perf_counter()
    failures: list[BaseException] = []

    def session(index: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, local_hostname="load.example", timeout=120) as s:
                for n in range(index, count, LATENCY_SESSIONS):
                    time.sleep(max(0.0, started + n / rate - time.perf_counter()))
                    s.sendmail("bench@load.example", [RECIPIENT], body)
        except (OSError, smtplib.SMTPException) as error:
            failures.append(error)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(LATENCY_SESSIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"the latency load failed: {failures[0]!r}")


def postfix_delays(gateway: Gateway, offset: int) -> list[float]:
    assert gateway.maillog is not None
    with gateway.maillog.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    found = []
    for line in text.splitlines():
        if "status=sent" in line and (match := re.search(r"\bdelay=([0-9.]+)", line)):
            found.append(float(match.group(1)))
    return found


def mxgate_delays(gateway: Gateway, since: str) -> list[float]:
    assert gateway.home is not None
    with sqlite3.connect(gateway.home / "state.db", timeout=30) as db:
        rows = db.execute(
            "SELECT e.at, r.at FROM events e JOIN recipient_states r "
            "ON r.message_id = e.message_id WHERE e.stage = 'accepted' AND e.at >= ? "
            "AND r.outcome = 'delivered'",
            (since,),
        ).fetchall()
    return [
        (datetime.fromisoformat(done) - datetime.fromisoformat(accepted)).total_seconds()
        for accepted, done in rows
    ]


def latency(gateway: Gateway, rate: float, seconds: float, size: int) -> tuple[float, float]:
    """(p50, p99) seconds from 250 to delivered, for messages sent at `rate` for `seconds`."""
    count = max(20, int(rate * seconds))
    before = gateway.done()
    offset = gateway.maillog.stat().st_size if gateway.maillog else 0
    since = datetime.now().astimezone().isoformat()
    started = time.perf_counter()
    paced(gateway.port, rate, count, size)
    wait_relayed(gateway, before + count, started, limit=120)
    delays = postfix_delays(gateway, offset) if gateway.maillog else mxgate_delays(gateway, since)
    delays.sort()
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    return statistics.median(delays), p99


def print_cpu(cpu: dict[str, dict[str, Figures]], reference: str | None) -> None:
    """CPU time a message of each gateway (its processes together, and by part for mxgate),
    medians of the passes, beside Postfix's."""
    print("CPU time a message (user + system, all the gateway's processes), median (spread)")
    base = cpu[reference]["all"].median if reference else None
    for label, parts in cpu.items():
        total = Figures(
            [sum(values) for values in zip(*(f.values for f in parts.values()), strict=True)]
        )
        ratio = f"  {total.median / base:.2f}x Postfix" if base and label != reference else ""
        shown = "".join(
            f"   {part} {f.median * 1000:.2f}" for part, f in parts.items() if part != "all"
        )
        print(
            f"  {label:<34} {total.median * 1000:6.2f} ({total.spread * 1000:4.2f}) ms{shown}{ratio}",
            flush=True,
        )


def print_latency(
    targets: list[Gateway],
    reference: Gateway | None,
    rate: float,
    what: str,
    args: argparse.Namespace,
) -> None:
    """p50 / p99 from 250 to delivered at `rate` (median of `--runs` passes), each gateway in
    turn, with the ratio to Postfix's."""
    print(
        f"latency from 250 to delivered at {rate:.0f} msg/s ({what}), "
        f"{args.latency_seconds:.0f} s of {args.size}-byte messages over "
        f"{LATENCY_SESSIONS} sessions",
        flush=True,
    )
    p50s = {g.label: Figures() for g in targets}
    p99s = {g.label: Figures() for g in targets}
    for _ in range(args.runs):
        for gateway in targets:
            p50, p99 = latency(gateway, rate, args.latency_seconds, args.size)
            p50s[gateway.label].add(p50)
            p99s[gateway.label].add(p99)
    for gateway in targets:
        p50, p99 = p50s[gateway.label], p99s[gateway.label]
        ratio = ""
        if reference is not None and gateway is not reference:
            ref50, ref99 = p50s[reference.label].median, p99s[reference.label].median
            ratio = f"  {p50.median / ref50:.2f}x / {p99.median / ref99:.2f}x Postfix"
        print(
            f"  {gateway.label:<34} p50 {p50.median * 1000:7.1f} ({p50.spread * 1000:5.1f}) "
            f"ms   p99 {p99.median * 1000:7.1f} ({p99.spread * 1000:5.1f}) ms{ratio}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--size", type=int, default=5120)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--runs", type=int, default=3, help="alternating passes (default 3)")
    parser.add_argument("--latency-seconds", type=float, default=4.0)
    args = parser.parse_args()
    print(
        f"{args.messages} messages of {args.size} bytes, {args.sessions} sessions, loopback, "
        f"{args.workers} mxgate workers, median (spread) of {args.runs} alternating passes; "
        f"{load()}",
        flush=True,
    )
    with smtp_sink() as sink_port:
        ceiling = args.messages / smtp_source(sink_port, args.messages, args.sessions, args.size)
        print(f"  {'smtp-source -> smtp-sink (load ceiling)':<34} {ceiling:6.0f} msg/s", flush=True)
        with gateways(sink_port, workers=args.workers) as (reference, to_sink, to_maildir):
            targets = [g for g in (reference, to_sink, to_maildir) if g is not None]
            accepted = {g.label: Figures() for g in targets}
            relayed = {g.label: Figures() for g in targets}
            cpu: dict[str, dict[str, Figures]] = {g.label: {} for g in targets}
            for _ in range(args.runs):
                for gateway in targets:
                    a, r, spent = drive(gateway, args)
                    accepted[gateway.label].add(a)
                    relayed[gateway.label].add(r)
                    for part, seconds in spent.items():
                        cpu[gateway.label].setdefault(part, Figures()).add(seconds)
            base = relayed[reference.label].median if reference else None
            base_accepted = accepted[reference.label].median if reference else None
            for gateway in targets:
                a, r = accepted[gateway.label], relayed[gateway.label]
                ratio = (
                    f"  {a.median / base_accepted:.2f}x / {r.median / base:.2f}x Postfix"
                    if base and base_accepted and gateway is not reference
                    else ""
                )
                print(
                    f"  {gateway.label:<34} accepted {a.median:5.0f} ({a.spread:4.0f}) msg/s"
                    f"   relayed {r.median:5.0f} ({r.spread:4.0f}) msg/s{ratio}",
                    flush=True,
                )
            if reference is None:
                print("  Postfix reference skipped: it needs root")
            print_cpu(cpu, reference.label if reference else None)
            own = relayed[to_sink.label].median / 2
            rate = base / 2 if base else own
            print_latency(targets, reference, rate, "half of Postfix's relayed rate", args)
            if base and own < rate:  # above mxgate's own rate a queue builds: the path alone
                print_latency(targets, reference, own, "half of mxgate's own relayed rate", args)
    print(f"  ({load()} at the end)")


if __name__ == "__main__":
    main()
