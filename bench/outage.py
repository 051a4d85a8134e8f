"""Outage isolation: how long mail to a healthy mailbox host takes while another host is down.

Starts `mxgate run` on free loopback ports (bench/harness.py) with the state machine's real
retry waits (2 s, 4 s, 8 s, full jitter), then sends mail to carol (Microsoft 365) at a steady
rate twice, each time with as much mail for alice (Workspace) at the same time: once with every
host up (the reference), once while the Workspace host answers 451 to everything. Prints
p50/p99 of carol's latency (accepted -> delivered, from the gateway's own timeline) in both
runs, and their ratio: about 1 when deliveries wait out their retries in the deferred queue,
not in the workers.

    .venv/bin/python bench/outage.py [--messages 100] [--rate 10] [--workers 2]
"""

from __future__ import annotations

import argparse
import smtplib
import ssl
import statistics
import threading
import time
from pathlib import Path

from deferral import wait
from harness import maildir_gateway
from scratch import scratch

from mxgate.adapters.local.state import SqliteState
from mxgate.records import Stage

OUTAGE = "451 4.3.2 System not accepting network messages"


def send_steadily(port: int, recipient: str, count: int, rate: float, tag: str) -> list[str]:
    """`count` messages to `recipient`, `rate` a second, in one session; their message ids."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    sent = []
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.ehlo("bench.example")
        smtp.starttls(context=context)
        smtp.ehlo("bench.example")
        start = time.monotonic()
        for n in range(count):
            time.sleep(max(0.0, start + n / rate - time.monotonic()))
            assert smtp.mail("a@shop.example")[0] == 250
            assert smtp.rcpt(recipient)[0] == 250
            body = f"Subject: {tag} {n}\r\nFrom: a@shop.example\r\n\r\nhello\r\n"
            code, reply = smtp.data(body.encode())
            assert code == 250, reply
            sent.append(reply.decode().rsplit(" ", 1)[-1])
    return sent


def latencies(state: SqliteState, message_ids: list[str]) -> list[float]:
    """Seconds from `accepted` to the recipient's terminal state, for each message."""
    found = []
    for message_id in message_ids:
        events = state.events(message_id)
        accepted = next(e.at for e in events if e.stage is Stage.ACCEPTED)
        (settled,) = state.states(message_id)
        found.append((settled.at - accepted).total_seconds())
    return found


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run(home: Path, port: int, args: argparse.Namespace, *, outage: bool) -> list[float]:
    """Carol's latencies while as much mail goes to alice (Workspace) at the same time, that
    host down (451 to everything) when `outage`: both runs carry the same load."""
    tag = "outage" if outage else "reference"
    reply = home / "mailboxes" / "workspace" / ".reply"
    if outage:
        reply.write_text(OUTAGE)
    workspace = threading.Thread(
        target=send_steadily,
        args=(port, "alice@nutrition.co", args.messages, args.rate, f"{tag} alice"),
    )
    workspace.start()
    healthy = send_steadily(port, "carol@nutrition.co", args.messages, args.rate, tag)
    workspace.join()
    state = SqliteState(home / "state.db")
    try:
        wait(lambda: all(state.states(m) for m in healthy), 120, f"carol's {tag} mail")
        return latencies(state, healthy)
    finally:
        state.close()
        reply.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100, help="per run and destination")
    parser.add_argument("--rate", type=float, default=10.0, help="messages a second")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with scratch("mxgate-bench-") as temporary:
        work = Path(temporary)
        with maildir_gateway(
            work,
            workers=args.workers,
            # the state machine's own waits
            settings={"MXGATE_RETRY_SCALE": "1", "MXGATE_DEFER_POLL": "0.2"},
        ) as gateway:
            assert gateway.home is not None
            send_steadily(gateway.port, "carol@nutrition.co", 20, args.rate, "warm-up")
            reference = run(gateway.home, gateway.port, args, outage=False)
            during = run(gateway.home, gateway.port, args, outage=True)
    p50, p99 = percentile(reference, 0.5), percentile(reference, 0.99)
    o50, o99 = percentile(during, 0.5), percentile(during, 0.99)
    print(
        f"mail to a healthy host (m365), {args.messages} messages at {args.rate:g}/s, "
        f"{args.workers} workers, real retry waits"
    )
    print(f"  every host up:          p50 {p50:6.3f} s   p99 {p99:6.3f} s")
    print(
        f"  Workspace down (451):   p50 {o50:6.3f} s   p99 {o99:6.3f} s   "
        f"(x{o50 / p50:.2f} p50, x{o99 / p99:.2f} p99; mean {statistics.mean(during):.3f} s)"
    )


if __name__ == "__main__":
    main()
