"""A worker process's Worker for tests: the real rule set, workflow, SQLite and files, with
mailbox hosts on free loopback ports and a manual clock; and what the gateway's scheduler
does with it (`run_due`, `wait_out_retries`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller

from mxgate.local import worker as worker_process
from mxgate.local.bootstrap import Bootstrap, Worker
from mxgate.local.mailbox import MaildirHandler
from mxgate.local.settings import LocalSettings
from mxgate.local.setup import load_setup
from mxgate.records import Envelope, Outcome, StepRetry
from tests.fakes import ManualClock
from tests.support import REPO, local_config, started_on_free_port

RAW = b"From: a@shop.example\r\nTo: alice@nutrition.co\r\nSubject: hi\r\n\r\nbody\r\n"
LATER = timedelta(days=1)  # past every backoff, within every lifetime


def worker_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Worker]]:
    """Build a worker process's Worker (mailbox hosts on free ports) from config overrides;
    `delivery` overrides the routes file's delivery policy. The worker is also the process's
    own (what the pool initializer sets), so `run_due` runs on it. Its clock is a manual one,
    started now: time passes when a test says so."""
    started: list[tuple[Worker, list[Controller]]] = []

    def start(
        delivery: dict[str, Any] | None = None, home: Path | None = None, **config: Any
    ) -> Worker:
        directory = tmp_path / f"worker{len(started)}"
        directory.mkdir()
        if delivery:
            routes = yaml.safe_load((REPO / "config" / "routes.yaml").read_text())
            routes["delivery"] |= delivery
            (directory / "routes.yaml").write_text(yaml.safe_dump(routes))
            config["routes"] = str(directory / "routes.yaml")
        home = home or directory / "home"
        settings = LocalSettings(home=home, config=local_config(directory, **config), retry_scale=0)
        setup = load_setup(settings)
        controllers = [
            started_on_free_port(
                lambda port, host=host: Controller(
                    MaildirHandler(home / "mailboxes", host), hostname="127.0.0.1", port=port
                )
            )
            for host in setup.config.mailbox_hosts
        ]
        ports = {
            host: c.port for host, c in zip(setup.config.mailbox_hosts, controllers, strict=True)
        }
        built = Bootstrap(settings, clock=ManualClock(datetime.now(UTC)), given_setup=setup).worker(
            ports
        )
        started.append((built, controllers))
        monkeypatch.setattr(worker_process, "_worker", built)
        return built

    yield start
    for built, controllers in started:
        built.close()
        for controller in controllers:
            controller.stop()


def accept(worker: Worker, message_id: str, recipients: list[str], **envelope: Any) -> Path:
    spooled = Envelope(
        message_id=message_id,
        mail_from="bounce@shop.example",
        recipients=recipients,
        helo="mx.shop.example",
        source_ip="192.0.2.1",
        **envelope,
    )
    return worker.spool.write(spooled, RAW)


def run_due(worker: Worker, at: datetime | None = None) -> list[str]:
    """What the gateway's scheduler does: lease what is due and hand each record to a worker."""
    due = worker.state.lease_due(at or worker.clock.now() + LATER, 60)
    return [worker_process.run_due(record.model_dump_json()) for record in due]


def wait_out_retries(worker: Worker) -> int:
    """What the gateway's scheduler does for Tasks waiting out Retry intervals (none long
    here: retry_scale 0): run each as it comes due, until none waits. How many ran."""
    ran = 0
    while due := worker.state.lease_due(worker.clock.now(), 60):
        for record in due:
            assert isinstance(record, StepRetry)
            assert worker_process.run_due(record.model_dump_json()) == "done"
            ran += 1
    return ran


def mailbox(worker: Worker, host: str, recipient: str) -> list[bytes]:
    folder = worker.setup.dirs.mailboxes / host / recipient / "new"
    return [p.read_bytes() for p in sorted(folder.iterdir())] if folder.is_dir() else []


def rule_set_log(worker: Worker) -> list[dict[str, Any]]:
    lines = (worker.setup.dirs.logs / "rule-set.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def outcomes(worker: Worker, message_id: str) -> dict[str, Outcome]:
    return {s.recipient: s.outcome for s in worker.state.states(message_id)}


def mailbox_host_replies(worker: Worker, host: str, reply: str | None) -> None:
    control = worker.setup.dirs.mailboxes / host / ".reply"
    if reply is None:
        control.unlink(missing_ok=True)
    else:
        control.write_text(reply)
