"""Gateway throughput: Postfix's smtp-source drives `mxgate run` over loopback.

Measured in one run, on this machine, 5 KB messages over 10 sessions by default:
  1. smtp-source -> smtp-sink: the load generator's own ceiling;
  2. smtp-source -> Postfix -> smtp-sink: the reference MTA (durable queue, relaying);
  3. smtp-source -> mxgate -> smtp-sink: the same relay path through mxgate;
  4. smtp-source -> mxgate -> local Maildir mailbox hosts: what `make run` does.
"accepted" is the rate until smtp-source finishes (each message fsynced before 250);
"relayed" is the rate until the last message has left the gateway.

    .venv/bin/python bench/throughput.py [--messages 2000] [--sessions 10] [--size 5120]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from postfix_reference import postfix_relay, relayed

REPO = Path(__file__).resolve().parent.parent
RECIPIENT = "alice@nutrition.co"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tool(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    sys.exit(f"{name} not found: install Debian's postfix package (make bench does)")


def smtp_source(port: int, messages: int, sessions: int, size: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            tool("smtp-source"),
            "-c",
            "-l",
            str(size),
            "-m",
            str(messages),
            "-s",
            str(sessions),
            "-f",
            "bench@load.example",
            "-t",
            RECIPIENT,
            f"127.0.0.1:{port}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


@contextmanager
def smtp_sink() -> Iterator[int]:
    port = free_port()
    as_user = ["-u", "nobody"] if os.geteuid() == 0 else []  # smtp-sink refuses to run as root
    sink = subprocess.Popen(
        [tool("smtp-sink"), *as_user, "-c", f"127.0.0.1:{port}", "1000"], stdout=subprocess.DEVNULL
    )
    time.sleep(0.3)
    try:
        yield port
    finally:
        sink.terminate()
        sink.wait()


def drive(port: int, args: argparse.Namespace, done: Callable[[], int]) -> tuple[float, float]:
    """Send the load; (accepted/s, relayed/s), relayed counted by `done()`."""
    before = done()
    started = time.perf_counter()
    accepted = smtp_source(port, args.messages, args.sessions, args.size)
    while done() - before < args.messages:
        if time.perf_counter() - started > 600:
            sys.exit("not all messages were relayed within 10 minutes")
        time.sleep(0.02)
    return args.messages / accepted, args.messages / (time.perf_counter() - started)


def delivered_count(state_db: Path) -> int:
    if not state_db.exists():
        return 0
    with sqlite3.connect(state_db, timeout=30) as db:
        row = db.execute(
            "SELECT count(*) FROM recipient_states WHERE outcome='delivered'"
        ).fetchone()
    return int(row[0])


@contextmanager
def quiet_dns(work: Path) -> Iterator[int]:
    """A DNS server on loopback that knows no sender: authentication answers come from it
    (NXDOMAIN), never from the network."""
    zone = work / "zone.txt"
    zone.write_text('$ORIGIN bench.invalid.\n@ 60 IN TXT "mxgate bench"\n')
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dnslib.zoneresolver",
            "--zone",
            str(zone),
            "--address",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    try:
        yield port
    finally:
        server.terminate()
        server.wait()


@contextmanager
def gateway(
    work: Path, workers: int, sink_port: int | None, dns_port: int
) -> Iterator[tuple[int, Path]]:
    config = yaml.safe_load((REPO / "config" / "local.yaml").read_text())
    config.update(
        template=str(REPO / "template.yaml"),
        samconfig=str(REPO / "samconfig.toml"),
        routes=str(REPO / "config" / "routes.yaml"),
        parameters={"IngressTlsPolicy": "OPTIONAL"},
    )  # smtp-source speaks no STARTTLS
    config["smtp"]["port"] = 0
    config["smtp"]["auth_port"] = 0
    config["dns"] = {"nameservers": ["127.0.0.1"], "port": dns_port, "timeout": 2}
    for host in config["mailbox_hosts"].values():
        host.update({"port": sink_port, "external": True} if sink_port else {"port": 0})
    (work / "local.yaml").write_text(yaml.safe_dump(config))
    home = work / "home"
    env = {
        **os.environ,
        "MXGATE_HOME": str(home),
        "MXGATE_CONFIG": str(work / "local.yaml"),
        "MXGATE_WORKERS": str(workers),
        "MXGATE_LOG_LEVEL": "WARNING",
    }
    with (work / "gateway.out").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mxgate", "run"],
            cwd=work,  # its run file goes there, not into the repository
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        ports_file = home / "run" / "ports.json"
        while not ports_file.exists():
            if process.poll() is not None:
                sys.exit(f"the gateway did not start: {(work / 'gateway.out').read_text()}")
            time.sleep(0.05)
        port = json.loads(ports_file.read_text())["smtp"]
        smtp_source(port, 20, 2, 1000)  # warm up: the workers start on first use
        while delivered_count(home / "state.db") < 20:
            time.sleep(0.05)
        yield port, home / "state.db"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)


def line(
    label: str, accepted: float, relayed_rate: float, reference: tuple[float, float] | None
) -> None:
    ratio = (
        f"  ({accepted / reference[0]:.2f} / {relayed_rate / reference[1]:.2f} of Postfix)"
        if reference
        else ""
    )
    print(
        f"  {label:<44} accepted {accepted:6.0f} msg/s   relayed {relayed_rate:6.0f} msg/s{ratio}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--size", type=int, default=5120)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(
        f"{args.messages} messages of {args.size} bytes, {args.sessions} sessions, loopback, "
        f"{os.cpu_count()} cores, {args.workers} mxgate workers",
        flush=True,
    )
    with smtp_sink() as sink_port:
        ceiling = args.messages / smtp_source(sink_port, args.messages, args.sessions, args.size)
        print(f"  {'smtp-source -> smtp-sink (load ceiling)':<44} {ceiling:6.0f} msg/s", flush=True)
        reference: tuple[float, float] | None = None
        if os.geteuid() == 0:
            port = free_port()
            with postfix_relay(port, sink_port) as maillog:
                reference = drive(port, args, lambda: relayed(maillog))
            line("Postfix -> smtp-sink (reference)", *reference, None)
        else:
            print("  Postfix reference skipped: it needs root")
        for label, target in (
            ("mxgate -> smtp-sink", sink_port),
            ("mxgate -> Maildir mailbox hosts", None),
        ):
            with (
                tempfile.TemporaryDirectory(prefix="mxgate-bench-") as work,
                quiet_dns(Path(work)) as dns_port,
                gateway(Path(work), args.workers, target, dns_port) as (port, state_db),
            ):
                line(label, *drive(port, args, lambda db=state_db: delivered_count(db)), reference)


if __name__ == "__main__":
    main()
