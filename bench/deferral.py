"""Deferral: how fast a backlog of deferred deliveries drains when a mailbox host comes back.

Starts bench/harness.py's `mxgate run` with a fast deferral schedule, makes the Workspace
mailbox host answer 451 to everything, sends N messages, waits until every one is deferred,
lets the host accept again, and prints how long the backlog took to drain (until the last
recipient is delivered). Also prints the deferred queue's own cost in SQLite (schedule, lease,
finish) without any delivery.

    .venv/bin/python bench/deferral.py [--messages 300] [--workers 2]
"""

from __future__ import annotations

import argparse
import smtplib
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import yaml
from harness import REPO, load, maildir_gateway, wait_relayed
from scratch import scratch

from mxgate.adapters.local.state import SqliteState
from mxgate.records import DeferredDelivery, Delivery, MessageRef


def short_schedule(work: Path) -> Path:
    """The shipped routes with a short deferral schedule, in a file of their own."""
    routes = yaml.safe_load((REPO / "config" / "routes.yaml").read_text())
    routes["delivery"].update(backoff_min="1s", backoff_max="2s", queue_lifetime="1h")
    path = work / "routes.yaml"
    path.write_text(yaml.safe_dump(routes))
    return path


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def queue_cost(directory: Path, records: int) -> tuple[float, float]:
    """(schedules per second, lease+finish per second) of the SQLite deferred queue alone."""
    state = SqliteState(directory / "queue-only.db")
    now = datetime.now(UTC)
    message = MessageRef(
        message_id="X", bucket="b", key="raw/X", digest="0" * 64, envelope_sender="", size=1
    )
    delivery = Delivery(
        delivery_id="X.h.0", message=message, kind="mailbox", destination="h", recipients=["a@b"]
    )
    waiting = DeferredDelivery(record_id="r", due_at=now, delivery=delivery)
    start = time.perf_counter()
    for n in range(records):
        state.schedule(waiting.model_copy(update={"record_id": f"r{n}"}))
    scheduled = time.perf_counter() - start
    start = time.perf_counter()
    done = 0
    while done < records:
        for record in state.lease_due(now, 600, 50):
            state.finish_deferred(record.record_id)
            done += 1
    drained = time.perf_counter() - start
    state.close()
    return records / scheduled, records / drained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(f"{load()}", flush=True)
    with scratch("mxgate-bench-") as temporary:
        work = Path(temporary)
        with maildir_gateway(
            work,
            workers=args.workers,
            extra={"routes": str(short_schedule(work))},
            settings={"MXGATE_DEFER_POLL": "0.2", "MXGATE_RETRY_SCALE": "0.01"},
        ) as gateway:
            assert gateway.home is not None
            outage = gateway.home / "mailboxes" / "workspace" / ".reply"
            outage.write_text("451 4.3.2 System not accepting network messages")
            before = gateway.done()  # the harness's warm-up messages
            with smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as smtp:
                for n in range(args.messages):
                    body = f"Subject: backlog {n}\r\nFrom: a@shop.example\r\n\r\nhello\r\n"
                    smtp.sendmail("a@shop.example", [f"alice+{n}@nutrition.co"], body.encode())
            state = SqliteState(gateway.home / "state.db")
            wait(lambda: len(state.deferred()) >= args.messages, 300, "every message deferred")
            state.close()
            outage.unlink()
            drained = wait_relayed(gateway, before + args.messages, time.perf_counter())
        schedules, leases = queue_cost(work, 2000)
    print(f"{args.messages} deferred deliveries, {args.workers} workers, backoff 1s..2s, poll 0.2s")
    print(
        f"  backlog drained after the host came back: {drained:6.1f} s  "
        f"({args.messages / drained:.0f} deliveries/s, including the wait for each next attempt)"
    )
    print(
        f"  SQLite deferred queue alone: {schedules:,.0f} schedules/s (fsynced), "
        f"{leases:,.0f} lease+finish/s; {load()} at the end"
    )


if __name__ == "__main__":
    main()
