"""Gateway throughput: Postfix's smtp-source drives `mxgate run` over loopback.

Prints messages per second accepted (until smtp-source finishes: each one fsynced before
250) and fully relayed (until the last Maildir file lands), next to smtp-source -> smtp-sink
measured in the same run as the reference ceiling of the load generator itself.

    .venv/bin/python bench/throughput.py [--messages 2000] [--sessions 10] [--size 5120]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tool(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    sys.exit(f"{name} not found: install Debian's postfix package (make bench does)")


def smtp_source(port: int, messages: int, sessions: int, size: int, to: str) -> float:
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
            to,
            f"127.0.0.1:{port}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def reference(messages: int, sessions: int, size: int) -> float:
    port = free_port()
    as_user = ["-u", "nobody"] if os.geteuid() == 0 else []  # smtp-sink refuses to run as root
    sink = subprocess.Popen(
        [tool("smtp-sink"), *as_user, "-c", f"127.0.0.1:{port}", "1000"], stdout=subprocess.DEVNULL
    )
    try:
        time.sleep(0.3)
        return messages / smtp_source(port, messages, sessions, size, "sink@nutrition.co")
    finally:
        sink.terminate()
        sink.wait()


def gateway_run(
    work: Path, messages: int, sessions: int, size: int, workers: int
) -> tuple[float, float]:
    config = yaml.safe_load((REPO / "config" / "local.yaml").read_text())
    config.update(
        template=str(REPO / "template.yaml"),
        samconfig=str(REPO / "samconfig.toml"),
        routes=str(REPO / "config" / "routes.yaml"),
        parameters={"IngressTlsPolicy": "OPTIONAL"},
    )  # smtp-source speaks no STARTTLS
    config["smtp"]["port"] = 0
    for host in config["mailbox_hosts"].values():
        host["port"] = 0
    (work / "local.yaml").write_text(yaml.safe_dump(config))
    home = work / "home"
    env = {
        **os.environ,
        "MXGATE_HOME": str(home),
        "MXGATE_CONFIG": str(work / "local.yaml"),
        "MXGATE_WORKERS": str(workers),
        "MXGATE_LOG_LEVEL": "WARNING",
    }
    log = (work / "gateway.out").open("w")
    gateway = subprocess.Popen(
        [sys.executable, "-m", "mxgate", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        ports_file = home / "run" / "ports.json"
        while not ports_file.exists():
            if gateway.poll() is not None:
                sys.exit(f"the gateway did not start: {(work / 'gateway.out').read_text()}")
            time.sleep(0.05)
        port = json.loads(ports_file.read_text())["smtp"]
        smtp_source(port, 20, 2, size, "alice@nutrition.co")  # warm up the workers
        mailbox = home / "mailboxes" / "workspace" / "alice@nutrition.co" / "new"
        while len(list(mailbox.glob("*"))) < 20:
            time.sleep(0.05)
        started = time.perf_counter()
        accepted = smtp_source(port, messages, sessions, size, "alice@nutrition.co")
        while len(os.listdir(mailbox)) < messages + 20:
            if time.perf_counter() - started > 600:
                sys.exit("not all messages were relayed within 10 minutes")
            time.sleep(0.02)
        relayed = time.perf_counter() - started
        return messages / accepted, messages / relayed
    finally:
        gateway.send_signal(signal.SIGINT)
        gateway.wait(timeout=60)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--size", type=int, default=5120)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(
        f"{args.messages} messages of {args.size} bytes, {args.sessions} sessions, loopback, "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    ceiling = reference(args.messages, args.sessions, args.size)
    print(f"  smtp-source -> smtp-sink (load generator ceiling): {ceiling:8.0f} msg/s")
    with tempfile.TemporaryDirectory(prefix="mxgate-bench-") as work:
        accepted, relayed = gateway_run(
            Path(work), args.messages, args.sessions, args.size, args.workers
        )
    print(
        f"  mxgate accepted (fsync before 250):               {accepted:8.0f} msg/s  "
        f"({accepted / ceiling:.2f} of the ceiling)"
    )
    print(
        f"  mxgate fully relayed into Maildir:                {relayed:8.0f} msg/s  "
        f"({relayed / ceiling:.2f} of the ceiling)"
    )
    print(
        "  reference (TOOLING.md, this machine type): Postfix relays ~430 msg/s, accepts ~530 msg/s"
    )


if __name__ == "__main__":
    main()
