"""The mailbox hosts' CPU time a message: the hosts' own process (`python -m
mxgate.local.mailbox`, as `mxgate run` starts it) takes messages from Postfix's smtp-source
into its Maildir; the figure is that process's CPU time (user + system) over the run, divided
by the messages. `--tree DIR` runs another checkout's hosts (its `.venv`), taking turns with
this one's, so the two can be compared in the same minutes of a shared machine.
`--profile FILE` writes cProfile's statistics of this tree's hosts (one pass).

    .venv/bin/python bench/mailbox_cpu.py [--messages 1000] [--sessions 2] [--size 5120]
                                          [--tree /work/main] [--pairs 3] [--profile out.prof]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

from harness import REPO, load, smtp_source
from scratch import scratch


def user_system(pid: int) -> tuple[float, float]:
    """CPU seconds of a process in user and in system (kernel) mode."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def one_pass(
    tree: Path, messages: int, sessions: int, size: int, profile: str | None
) -> tuple[float, float]:
    """CPU milliseconds a message of the hosts of `tree`, in user and in system mode."""
    with scratch("mailbox-bench-") as work:
        profiler = ["-m", "cProfile", "-o", profile] if profile else []
        host = subprocess.Popen(
            [
                str(tree / ".venv" / "bin" / "python"),
                *profiler,
                "-m",
                "mxgate.local.mailbox",
                work,
                json.dumps({"workspace": 0}),
            ],
            cwd=tree,
            env={**os.environ, "PYTHONPATH": str(tree / "layers" / "core")},
            stdout=subprocess.PIPE,
        )
        try:
            assert host.stdout is not None
            port = json.loads(host.stdout.readline())["workspace"]
            smtp_source(
                port, 1, 1, 1000, reuse_connections=True
            )  # the mailbox made by one session (see below)
            smtp_source(port, 19, 2, 1000, reuse_connections=True)  # warm up
            user, system = user_system(host.pid)
            smtp_source(port, messages, sessions, size, reuse_connections=True)
            after = user_system(host.pid)
            stored = len(list(Path(work, "workspace").glob("*/new/*")))
            if stored != messages + 20:
                raise SystemExit(f"{tree}: {stored} stored, {messages + 20} sent")
        finally:
            host.send_signal(signal.SIGTERM)
            host.wait(timeout=60)
    return (after[0] - user) * 1000 / messages, (after[1] - system) * 1000 / messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--size", type=int, default=5120)
    parser.add_argument("--tree", type=Path, help="another checkout to compare with this one")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--profile")
    args = parser.parse_args()
    if args.profile:
        user, system = one_pass(REPO, args.messages, args.sessions, args.size, args.profile)
        print(f"this tree (profiled) {user + system:.3f} ms a message; profile in {args.profile}")
        return
    trees = [REPO] if args.tree is None else [args.tree.resolve(), REPO]
    figures: dict[Path, list[tuple[float, float]]] = {tree: [] for tree in trees}
    print(
        f"mailbox hosts' CPU a message, {args.messages} messages of {args.size} bytes over "
        f"{args.sessions} sessions; {load()}"
    )
    for _ in range(args.pairs):
        for tree in trees:
            figures[tree].append(one_pass(tree, args.messages, args.sessions, args.size, None))
            time.sleep(0.2)
    for tree, values in figures.items():
        shown = " ".join(f"{u + s:.2f}" for u, s in values)
        total = statistics.median(u + s for u, s in values)
        user = statistics.median(u for u, _ in values)
        system = statistics.median(s for _, s in values)
        print(f"  {tree}  median {total:.2f} ms (user {user:.2f}, system {system:.2f})  ({shown})")
    print(f"  ({load()} at the end)")


if __name__ == "__main__":
    main()
