"""What the gateway benchmarks share: Postfix's load tools, a throwaway `mxgate run`, the
reference Postfix, a DNS server that knows no sender, a sink that notes when each message
arrives, and the figures' medians and spreads.

Every figure is measured next to its reference in the same run, passes alternating between
them, so the load other users put on a shared machine falls on both.
"""

from __future__ import annotations

import json
import os
import pstats
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from postfix_reference import postfix_relay, relayed
from scratch import scratch

REPO = Path(__file__).resolve().parent.parent
RECIPIENT = "alice@nutrition.co"
BENCH_ID = "X-Bench-Id"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tool(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    sys.exit(f"{name} not found: install Debian's postfix package (make bench does)")


def smtp_source(
    port: int, messages: int, sessions: int, size: int, *, reuse_connections: bool = False
) -> float:
    """Send with Postfix's smtp-source; seconds until it is done (every message answered).
    `reuse_connections`: each session's messages over one connection (`-d`), as the gateway's
    workers keep theirs; else a connection a message."""
    started = time.perf_counter()
    subprocess.run(
        [
            tool("smtp-source"),
            "-d" if reuse_connections else "-c",
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
        stderr=subprocess.DEVNULL,
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


@dataclass
class Gateway:
    """A running `mxgate run` (its SMTP port, home and process) or the reference Postfix."""

    label: str
    port: int
    done: Callable[[], int]  # messages fully relayed so far
    process: subprocess.Popen[bytes] | None = None
    home: Path | None = None
    maillog: Path | None = None

    def pids(self) -> list[int]:
        """The gateway's processes: `mxgate run` and its workers."""
        if self.process is None:
            return []
        return [self.process.pid, *children(self.process.pid)]

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) the gateway's processes spent so far, by part: for
        mxgate the ingress (`mxgate run` itself), the workers and the mailbox hosts' process;
        for Postfix all of its processes (the master's, and those it started, ended ones
        included). Load from other users of the machine moves these far less than rates."""
        if self.maillog is not None:  # Postfix: the master's pid file is in its queue
            master = int((self.maillog.parent / "queue" / "pid" / "master.pid").read_text())
            own, reaped = process_cpu(master)
            return {"all": own + reaped + sum(process_cpu(p)[0] for p in children(master))}
        if self.process is None:
            return {}
        parts = {"ingress": process_cpu(self.process.pid)[0], "workers": 0.0, "mailbox hosts": 0.0}
        for pid in children(self.process.pid):
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            part = "mailbox hosts" if b"mxgate.local.mailbox" in command else "workers"
            parts[part] += process_cpu(pid)[0]
        return parts


def process_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of a process, and of its children it has waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # ended meanwhile
        return 0.0, 0.0
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])  # stat fields 14 to 17
    ticks = os.sysconf("SC_CLK_TCK")
    return (utime + stime) / ticks, (cutime + cstime) / ticks


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for kid in map(int, kids):
            found += [kid, *children(kid)]
    return found


def delivered_count(state_db: Path) -> int:
    if not state_db.exists():
        return 0
    with sqlite3.connect(state_db, timeout=30) as db:
        row = db.execute(
            "SELECT count(*) FROM recipient_states WHERE outcome='delivered'"
        ).fetchone()
    return int(row[0])


def accepted_count(state_db: Path) -> int:
    with sqlite3.connect(state_db, timeout=30) as db:
        row = db.execute("SELECT count(*) FROM events WHERE stage='accepted'").fetchone()
    return int(row[0])


def gateway_environment(
    work: Path, *, sink_port: int | None, dns_port: int, extra: dict[str, object] | None = None
) -> dict[str, str]:
    """A gateway's configuration under `work` (free ports, relaying to the sink or into its
    own Maildir hosts, DNS from `dns_port`) and the environment that runs it there."""
    config = yaml.safe_load((REPO / "config" / "local.yaml").read_text())
    config.update(
        template=str(REPO / "template.yaml"),
        samconfig=str(REPO / "samconfig.toml"),
        routes=str(REPO / "config" / "routes.yaml"),
        parameters={"IngressTlsPolicy": "OPTIONAL"},
    )  # smtp-source speaks no STARTTLS
    config["smtp"]["port"] = 0
    config["smtp"]["auth_port"] = 0
    # every bench session comes from 127.0.0.1: the per-client limit (50, a defence against one
    # abusive client) would refuse the concurrency bench's 200
    config["smtp"].setdefault("limits", {})["max_connections_per_client"] = 500
    config["dns"] = {"nameservers": ["127.0.0.1"], "port": dns_port, "timeout": 2}
    for host in config["mailbox_hosts"].values():
        host.update({"port": sink_port, "external": True} if sink_port else {"port": 0})
    config.update(extra or {})
    (work / "local.yaml").write_text(yaml.safe_dump(config))
    return {
        **os.environ,
        "MXGATE_HOME": str(work / "home"),
        "MXGATE_CONFIG": str(work / "local.yaml"),
        "MXGATE_LOG_LEVEL": "WARNING",
    }


@contextmanager
def mxgate(
    work: Path,
    label: str,
    *,
    workers: int,
    sink_port: int | None,
    dns_port: int,
    extra: dict[str, object] | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[Gateway]:
    """`mxgate run` on free ports, relaying to the sink (or into its own Maildir hosts);
    `settings`: MXGATE_ variables that have no place in local.yaml (MXGATE_DEFER_POLL)."""
    env = gateway_environment(work, sink_port=sink_port, dns_port=dns_port, extra=extra)
    home = Path(env["MXGATE_HOME"])
    env.update(MXGATE_WORKERS=str(workers), **(settings or {}))
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
        state_db = home / "state.db"
        smtp_source(port, 20, 2, 1000)  # warm up: the workers start on first use
        while delivered_count(state_db) < 20:
            time.sleep(0.05)
        yield Gateway(label, port, lambda: delivered_count(state_db), process, home)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)


@contextmanager
def maildir_gateway(
    work: Path,
    *,
    workers: int,
    extra: dict[str, object] | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[Gateway]:
    """`mxgate run` delivering into its own Maildir hosts, its DNS the quiet loopback server:
    what the deferral and outage benches drive (their hosts play the outage)."""
    with (
        quiet_dns(work) as dns_port,
        mxgate(
            work,
            "mxgate -> Maildir mailbox hosts",
            workers=workers,
            sink_port=None,
            dns_port=dns_port,
            extra=extra,
            settings=settings,
        ) as gateway,
    ):
        yield gateway


@contextmanager
def postfix(sink_port: int) -> Iterator[Gateway]:
    port = free_port()
    with postfix_relay(port, sink_port) as maillog:
        yield Gateway("Postfix", port, lambda: relayed(maillog), maillog=maillog)


@contextmanager
def gateways(
    sink_port: int, *, workers: int, extra: dict[str, object] | None = None, maildir: bool = True
) -> Iterator[tuple[Gateway | None, Gateway, Gateway | None]]:
    """The reference Postfix (None when not root), mxgate relaying to the sink, and mxgate
    delivering into its Maildir hosts (unless not asked for): all up at once, so passes can
    alternate."""
    with ExitStack() as stack:
        reference = stack.enter_context(postfix(sink_port)) if os.geteuid() == 0 else None
        work = Path(stack.enter_context(scratch("mxgate-bench-")))
        dns_port = stack.enter_context(quiet_dns(work))
        (work / "sink").mkdir()
        (work / "maildir").mkdir()
        to_sink = stack.enter_context(
            mxgate(
                work / "sink",
                "mxgate -> smtp-sink",
                workers=workers,
                sink_port=sink_port,
                dns_port=dns_port,
                extra=extra,
            )
        )
        to_maildir = (
            stack.enter_context(
                mxgate(
                    work / "maildir",
                    "mxgate -> Maildir mailbox hosts",
                    workers=workers,
                    sink_port=None,
                    dns_port=dns_port,
                    extra=extra,
                )
            )
            if maildir
            else None
        )
        yield reference, to_sink, to_maildir


def wait_relayed(gateway: Gateway, target: int, started: float, limit: float = 600.0) -> float:
    """Seconds from `started` until `done()` reaches `target`."""
    while gateway.done() < target:
        if time.perf_counter() - started > limit:
            sys.exit(f"{gateway.label}: not all messages were relayed within {limit:.0f} s")
        time.sleep(0.01)
    return time.perf_counter() - started


@dataclass
class Figures:
    """Repeated measurements of one figure: median and spread (max - min)."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def spread(self) -> float:
        return max(self.values) - min(self.values) if self.values else float("nan")


def rss(pids: list[int]) -> int:
    """Resident bytes of these processes together (VmRSS)."""
    return sum(status(pid, "VmRSS") for pid in pids)


def status(pid: int, name: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as lines:
            for line in lines:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def reset_peaks(pids: list[int]) -> dict[int, int]:
    """Start each process's peak (VmHWM) afresh (Linux clear_refs 5, as root); its resident
    bytes now, the baseline a growth is measured from."""
    for pid in pids:
        with suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")
    return {pid: status(pid, "VmRSS") for pid in pids}


def peak_growth(baseline: dict[int, int]) -> dict[int, int]:
    """Each process's peak resident bytes since `reset_peaks`, over its baseline."""
    return {pid: status(pid, "VmHWM") - before for pid, before in baseline.items()}


class PeakRss:
    """Samples a process tree's resident memory every few milliseconds until stopped; the
    highest sum it saw, and the highest of any one process."""

    def __init__(self, gateway: Gateway, every: float = 0.005) -> None:
        self.gateway = gateway
        self.every = every
        self.peak_total = 0
        self.peak_process: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in self.gateway.pids():
                resident = status(pid, "VmRSS")
                total += resident
                self.peak_process[pid] = max(self.peak_process.get(pid, 0), resident)
            self.peak_total = max(self.peak_total, total)
            time.sleep(self.every)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def print_cpu_a_message(
    what: str,
    before: resource.struct_rusage,
    after: resource.struct_rusage,
    wall: float,
    messages: int,
    *,
    profile: Path | None = None,
    top: int = 40,
) -> None:
    """One process's CPU time a message between two `getrusage` readings (user + system, its
    threads included), and its context switches a message (a count the machine's load moves
    less: each thread's hand-off to another, a GIL taken back, a wait on the disk), then the
    functions that cost the most if cProfile wrote `profile`."""
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    switches = after.ru_nvcsw + after.ru_nivcsw - before.ru_nvcsw - before.ru_nivcsw
    each = 1000 / messages  # ms a message
    print(
        f"{what}, {messages} messages: {(user + system) * each:.2f} ms (user {user * each:.2f}, "
        f"system {system * each:.2f}; {wall * each:.2f} ms wall), "
        f"{switches / messages:.1f} context switches a message"
        f"{' under the profiler' if profile else ''}; {load()}",
        flush=True,
    )
    if profile is not None:
        stats = pstats.Stats(str(profile))
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
