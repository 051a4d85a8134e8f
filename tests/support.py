"""Test helpers: the repository's own files, gateways on free loopback ports, waiting."""

from __future__ import annotations

import errno
import json
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from aiosmtpd.controller import Controller

from mxgate.config_files import json_form
from mxgate.local.spool import ENVELOPE_ATTRIBUTE
from mxgate.mailmanager.template import (
    Resolver,
    read_samconfig_parameters,
    read_template,
    routes_parameters,
)
from mxgate.routing.parameters import substitute
from mxgate.routing.routes import Routes, load_routes
from tests.dnsserver import Zone, ZoneServer

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "template.yaml"
SAMCONFIG = REPO / "samconfig.toml"
ROUTES = REPO / "config" / "routes.yaml"
SAMPLES = REPO / "events" / "mail"
# a delivery policy whose deferrals come back within a second, for tests that wait for them
FAST_DEFERRALS = {"backoff_min": "0.3s", "backoff_max": "0.6s", "queue_lifetime": "1h"}


# SES sending's routing domains, for the tests of the SES transport
ROUTING_DOMAINS = {  # the template's routing domain parameters (derived from EmployeeDomain)
    "workspace": "${WorkspaceRoutingDomain}",
    "m365": "${M365RoutingDomain}",
}


def ses_routes_document() -> dict[str, Any]:
    """config/routes.yaml with Workspace and 365 delivered through SES sending (to the routing
    domains the template's parameters give: any domain deployed)."""
    document: dict[str, Any] = yaml.safe_load((REPO / "config" / "routes.yaml").read_text())
    for name, domain in ROUTING_DOMAINS.items():
        document["destinations"][name] = {"transport": "ses", "routing_domain": domain}
    return document


@cache
def routes_parameters_of_samconfig() -> dict[str, str]:
    """What the routes file's placeholders take with samconfig.toml's values (`sam deploy`)."""
    resolver = Resolver(read_template(TEMPLATE), read_samconfig_parameters(SAMCONFIG))
    return routes_parameters(resolver)


def shipped_routes_document() -> dict[str, Any]:
    """config/routes.yaml as a document, its placeholders filled as the example deployment's."""
    document, problems = substitute(
        yaml.safe_load(ROUTES.read_text()), routes_parameters_of_samconfig()
    )
    assert problems == [], problems
    return dict(document)


def shipped_routes() -> Routes:
    """config/routes.yaml as the example deployment reads it."""
    return load_routes(ROUTES, routes_parameters_of_samconfig())


@cache
def quiet_dns() -> ZoneServer:
    """A DNS server on loopback that knows no names: tests never ask the system's resolver."""
    return ZoneServer(Zone())


def local_config(directory: Path, **overrides: Any) -> Path:
    """config/local.yaml with absolute paths, free ports (0) and DNS on loopback, plus
    overrides."""
    document = yaml.safe_load((REPO / "config" / "local.yaml").read_text())
    document.update(
        template=str(REPO / "template.yaml"),
        samconfig=str(REPO / "samconfig.toml"),
        routes=str(REPO / "config" / "routes.yaml"),
    )
    document["smtp"]["port"] = 0
    document["smtp"]["auth_port"] = 0
    document["dns"] = {"nameservers": ["127.0.0.1"], "port": quiet_dns().port, "timeout": 2}
    for host in document["mailbox_hosts"].values():
        host["port"] = 0
    document.update(overrides)
    path = directory / "local.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@dataclass
class RunningGateway:
    """`mxgate run` as a subprocess, on free ports, with its own MXGATE_HOME."""

    process: subprocess.Popen[str]
    home: Path
    ports: dict[str, int]

    @property
    def smtp_port(self) -> int:
        return self.ports["smtp"]

    def mailbox(self, host: str, recipient: str) -> Path:
        return self.home / "mailboxes" / host / recipient.casefold() / "new"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise
        return self.process.returncode


def start_gateway(
    home: Path, config: Path, *, env: dict[str, str] | None = None, output: Path | None = None
) -> RunningGateway:
    """`output`: where its terminal output goes (default: gateway.out in its home)."""
    environment = {
        **os.environ,
        "MXGATE_HOME": str(home),
        "MXGATE_CONFIG": str(config),
        "MXGATE_WORKERS": "1",
        "MXGATE_RETRY_SCALE": "0.01",
        **(env or {}),
    }
    home.mkdir(parents=True, exist_ok=True)
    output = output or home / "gateway.out"
    with output.open("w") as sink:  # a file, not a pipe: a full pipe would stall the gateway
        process = subprocess.Popen(
            [sys.executable, "-m", "mxgate", "run"],
            cwd=home.parent,  # its run file lands there, not in the repository
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    ports_file = home / "run" / "ports.json"
    deadline = time.monotonic() + 30
    while not ports_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"the gateway did not start:\n{output.read_text()}")
        time.sleep(0.05)
    return RunningGateway(process, home, json.loads(ports_file.read_text()))


@dataclass(frozen=True)
class SpooledFile:
    """A spool file's bytes and its envelope attribute (None: an older file, its envelope line
    first), put back later as a crash before the file's removal would have left it: its bytes
    alone are no spool file."""

    content: bytes
    envelope: bytes | None

    @classmethod
    def of(cls, path: Path) -> SpooledFile:
        try:
            envelope: bytes | None = os.getxattr(path, ENVELOPE_ATTRIBUTE)
        except OSError as error:
            if error.errno != errno.ENODATA:
                raise
            envelope = None
        return cls(path.read_bytes(), envelope)

    def restore(self, path: Path) -> None:
        """A new file under `path`, replacing any there: never a write into the old one, whose
        inode the replay history and the objects may share."""
        temporary = path.with_name(f"{path.name}.restoring")
        temporary.write_bytes(self.content)
        if self.envelope is not None:
            os.setxattr(temporary, ENVELOPE_ATTRIBUTE, self.envelope)
        temporary.replace(path)


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")


def free_port() -> int:
    """A port free right now (for servers that must be told a port up front)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def started_on_free_port(make: Callable[[int], Controller], attempts: int = 5) -> Controller:
    """An aiosmtpd controller started on a port free right now. Another process may take the
    port between the probe and the bind (other test runs share the machine): a port taken is
    tried again with another, and the failed controller's event loop is closed."""
    for attempt in range(1, attempts + 1):
        controller = make(free_port())
        try:
            controller.start()
        except OSError as error:
            controller.loop.close()
            if error.errno != errno.EADDRINUSE or attempt == attempts:
                raise
            continue
        return controller
    raise AssertionError("unreachable")


def tls_context() -> ssl.SSLContext:
    """A client's TLS context that takes the gateway's self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def connect(port: int, *, tls: bool) -> smtplib.SMTP:
    """An SMTP session with the gateway on loopback, greeted, under STARTTLS if `tls`."""
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
    smtp.ehlo("client.example")
    if tls:
        smtp.starttls(context=tls_context())
        smtp.ehlo("client.example")
    return smtp


@contextmanager
def small_filesystem(mount_point: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `mount_point` for the test (as root: CI runs as root),
    unmounted afterwards. Its disk is really full when `fill` fills it."""
    mount_point.mkdir(parents=True, exist_ok=True)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    subprocess.run(
        [*sudo, "mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount_point)],
        check=True,
        capture_output=True,
    )
    try:
        yield mount_point
    finally:
        subprocess.run([*sudo, "umount", "--lazy", str(mount_point)], check=True)


def fill(directory: Path) -> Path:
    """Write one file in `directory` until its file system has no byte left; remove the file
    to free the space again."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (1 << 20, 1 << 12, 1):  # big writes, then the last page's bytes
            block = b"\0" * chunk
            while True:
                try:
                    os.write(fd, block)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


def routes_json(directory: Path) -> Path:
    """This repository's routes file in the JSON form `make sam-build` gives the functions."""
    path = directory / "routes.json"
    path.write_text(json_form(ROUTES, "routes"), encoding="utf-8")
    return path


def offline_function_environment(routes: Path = ROUTES) -> dict[str, str]:
    """The MXGATE_* settings the template gives the functions, for a function's import and
    composition root run outside AWS (tests, bench/cold_start.py): this repository's routes
    file (or `routes`, its JSON form: routes_json) with samconfig.toml's parameters, and names
    of resources that are never called."""
    return {
        "AWS_DEFAULT_REGION": "us-east-1",
        "MXGATE_ROUTES_FILE": str(routes),
        "MXGATE_ROUTES_PARAMETERS": json.dumps(routes_parameters_of_samconfig()),
        "MXGATE_RAW_BUCKET": "raw-mail",
        "MXGATE_STATE_TABLE": "state",
        "MXGATE_DEAD_LETTER_QUEUE": "https://sqs.us-east-1.amazonaws.com/1/dead-letters",
        "MXGATE_DEFER_QUEUE": "https://sqs.us-east-1.amazonaws.com/1/defer",
        "MXGATE_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:1:stateMachine:pipeline",
        "MXGATE_ARRIVAL_CHECK_QUEUE": "https://sqs.us-east-1.amazonaws.com/1/arrival-check",
        "MXGATE_UNSTARTED_QUEUE": "https://sqs.us-east-1.amazonaws.com/1/unstarted",
    }


def fsynced_paths(monkeypatch: Any) -> list[str]:
    """The paths `os.fsync` is called on from now on, in order (each call still runs): what a
    durable write made durable, which no reader of the files can tell."""
    paths: list[str] = []
    fsync = os.fsync

    def recording(fd: int) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return paths
