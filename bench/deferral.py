"""Deferral: how fast a backlog of deferred deliveries drains when a mailbox host comes back.

Starts `mxgate run` on free loopback ports with a fast deferral schedule, makes the Workspace
mailbox host answer 451 to everything, sends N messages, waits until every one is deferred,
lets the host accept again, and prints how long the backlog took to drain (until the last
Maildir file lands). Also prints the deferred queue's own cost in SQLite (schedule, lease,
finish) without any delivery.

    .venv/bin/python bench/deferral.py [--messages 300] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import signal
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import yaml

from mxgate.adapters.local.state import SqliteState
from mxgate.records import DeferredDelivery, Delivery, MessageRef

REPO = Path(__file__).resolve().parent.parent


def environment_for(directory: Path) -> dict[str, str]:
    """The shipped configuration with a short deferral schedule (its own routes file) and free
    ports, all from the environment."""
    routes = yaml.safe_load((REPO / "config" / "routes.yaml").read_text())
    routes["delivery"].update(backoff_min="1s", backoff_max="2s", queue_lifetime="1h")
    (directory / "routes.yaml").write_text(yaml.safe_dump(routes))
    local = yaml.safe_load((REPO / "config" / "local.yaml").read_text())
    return {
        "MXGATE_CONFIG": str(REPO / "config" / "local.yaml"),
        "MXGATE_TEMPLATE": str(REPO / "template.yaml"),
        "MXGATE_SAMCONFIG": str(REPO / "samconfig.toml"),
        "MXGATE_ROUTES_FILE": str(directory / "routes.yaml"),
        "MXGATE_SMTP_PORT": "0",
        "MXGATE_SMTP_AUTH_PORT": "0",
        **{f"MXGATE_MAILBOX_{host.upper()}_PORT": "0" for host in local["mailbox_hosts"]},
    }


def wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


@contextmanager
def gateway_running(directory: Path, **settings: str) -> Iterator[tuple[Path, int]]:
    """`mxgate run` with its home in `directory` (environment_for's configuration plus the
    MXGATE_ variables given), quiet; (its home, its SMTP port) while it runs."""
    home = directory / "home"
    environment = {
        **os.environ,
        "MXGATE_HOME": str(home),
        **environment_for(directory),
        "MXGATE_DEFER_POLL": "0.2",
        "MXGATE_LOG_LEVEL": "WARNING",
        **settings,
    }
    with (directory / "gateway.out").open("w") as sink:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "mxgate", "run"],
            cwd=directory,  # its run file goes there, not into the repository
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        ports_file = home / "run" / "ports.json"
        wait(ports_file.exists, 60, "the gateway to start")
        yield home, yaml.safe_load(ports_file.read_text())["smtp"]
    finally:
        gateway.send_signal(signal.SIGINT)
        gateway.wait(60)


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
    with tempfile.TemporaryDirectory(prefix="mxgate-bench-") as temporary:
        directory = Path(temporary)
        with gateway_running(
            directory, MXGATE_WORKERS=str(args.workers), MXGATE_RETRY_SCALE="0.01"
        ) as (home, port):
            outage = home / "mailboxes" / "workspace" / ".reply"
            outage.write_text("451 4.3.2 System not accepting network messages")
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                smtp.starttls(context=context)
                for n in range(args.messages):
                    body = f"Subject: backlog {n}\r\nFrom: a@shop.example\r\n\r\nhello\r\n"
                    smtp.sendmail("a@shop.example", [f"user{n}@nutrition.co"], body.encode())
            state = SqliteState(home / "state.db")
            wait(lambda: len(state.deferred()) >= args.messages, 300, "every message deferred")
            outage.unlink()
            back = time.monotonic()
            maildir = home / "mailboxes" / "workspace"
            wait(
                lambda: sum(1 for _ in maildir.glob("*/new/*")) >= args.messages,
                600,
                "the backlog to drain",
            )
            drained = time.monotonic() - back
        schedules, leases = queue_cost(directory, 2000)
    print(f"{args.messages} deferred deliveries, {args.workers} workers, backoff 1s..2s, poll 0.2s")
    print(
        f"  backlog drained after the host came back: {drained:6.1f} s  "
        f"({args.messages / drained:.0f} deliveries/s, including the wait for each next attempt)"
    )
    print(
        f"  SQLite deferred queue alone: {schedules:,.0f} schedules/s (fsynced), "
        f"{leases:,.0f} lease+finish/s"
    )


if __name__ == "__main__":
    main()
