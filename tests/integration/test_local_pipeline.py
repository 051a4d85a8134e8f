"""The local pipeline without the ingress: spool file -> rule set -> ASL workflow -> real SMTP
mailbox hosts on loopback, including the state machine's retries and dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from mxgate.local.mailbox import MaildirHandler
from mxgate.local.runtime import Worker, build_worker, load_setup
from mxgate.local.settings import LocalSettings
from mxgate.local.worker import process_spooled, run_deferred
from mxgate.timeline import Outcome, Stage
from mxgate.workflow.model import DeferredDelivery, Envelope
from tests.support import free_port, local_config

RAW = b"From: a@shop.example\r\nTo: alice@nutrition.co\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    home = tmp_path / "home"
    settings = LocalSettings(home=home, config=local_config(tmp_path), retry_scale=0)
    setup = load_setup(settings)
    controllers = {
        host: Controller(
            MaildirHandler(home / "mailboxes", host), hostname="127.0.0.1", port=free_port()
        )
        for host in setup.config.mailbox_hosts
    }
    for controller in controllers.values():
        controller.start()
    try:
        built = build_worker(setup, {host: c.port for host, c in controllers.items()})
        yield built
        built.close()
    finally:
        for controller in controllers.values():
            controller.stop()


def accept(worker: Worker, message_id: str, recipients: list[str]) -> Path:
    envelope = Envelope(
        message_id=message_id,
        mail_from="bounce@shop.example",
        recipients=recipients,
        helo="mx.shop.example",
        source_ip="192.0.2.1",
    )
    return worker.spool.write(envelope, RAW)


def outcomes(worker: Worker, message_id: str) -> dict[str, Outcome]:
    return {s.recipient: s.outcome for s in worker.state.states(message_id)}


def mailbox_host_replies(worker: Worker, host: str, reply: str | None) -> None:
    control = worker.setup.dirs.mailboxes / host / ".reply"
    if reply is None:
        control.unlink(missing_ok=True)
    else:
        control.write_text(reply)


def test_delivered_and_spool_file_removed(worker):
    path = accept(worker, "01DELIVERED", ["alice@nutrition.co", "carol@nutrition.co"])
    assert process_spooled(worker, path) == "done"
    assert not path.exists()
    assert outcomes(worker, "01DELIVERED") == {
        "alice@nutrition.co": Outcome.DELIVERED,
        "carol@nutrition.co": Outcome.DELIVERED,
    }
    stored = next((worker.setup.dirs.mailboxes / "m365" / "carol@nutrition.co" / "new").iterdir())
    assert stored.read_bytes().endswith(RAW)


def test_outage_is_retried_then_deferred_then_delivered_when_the_host_is_back(worker):
    mailbox_host_replies(worker, "workspace", "451 4.3.0 mailbox host busy")
    path = accept(worker, "01OUTAGE", ["alice@nutrition.co", "carol@nutrition.co"])
    process_spooled(worker, path)
    # the state machine's quick retries, then the deferred queue: no terminal state yet
    assert outcomes(worker, "01OUTAGE") == {"carol@nutrition.co": Outcome.DELIVERED}
    retries = [e for e in worker.state.events("01OUTAGE") if e.stage is Stage.RETRY]
    assert len(retries) == 3  # MaxAttempts of DeliverOne's Retry in the ASL
    assert not dict(worker.state.list())  # nothing dead-lettered

    mailbox_host_replies(worker, "workspace", None)
    later = datetime.now(UTC) + timedelta(days=1)
    ((record_id, document),) = worker.state.lease_due(later, 60)
    assert run_deferred(worker, record_id, DeferredDelivery.model_validate(document)) == "done"
    assert outcomes(worker, "01OUTAGE") == {
        "alice@nutrition.co": Outcome.DELIVERED,
        "carol@nutrition.co": Outcome.DELIVERED,
    }
    assert worker.state.lease_due(later, 60) == []


def test_permanent_refusal_is_dead_lettered_without_retries(worker):
    mailbox_host_replies(worker, "m365", "550 5.1.1 no such mailbox")
    path = accept(worker, "01REFUSED", ["dave@nutrition.co"])
    process_spooled(worker, path)
    assert outcomes(worker, "01REFUSED") == {"dave@nutrition.co": Outcome.DEAD_LETTERED}
    assert not [e for e in worker.state.events("01REFUSED") if e.stage is Stage.RETRY]
    assert "550 5.1.1 no such mailbox" in worker.state.states("01REFUSED")[0].detail


def test_replaying_a_finished_message_delivers_nothing_twice(worker):
    path = accept(worker, "01TWICE", ["bob@nutrition.co"])
    raw_spool = path.read_bytes()
    process_spooled(worker, path)
    path.write_bytes(raw_spool)  # as if the process had crashed before removing the spool file
    process_spooled(worker, path)
    mailbox = worker.setup.dirs.mailboxes / "workspace" / "bob@nutrition.co" / "new"
    assert len(list(mailbox.iterdir())) == 1


def test_a_crash_inside_the_pipeline_quarantines_instead_of_losing(worker, monkeypatch):
    def explode(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(worker.mail_manager, "process", explode)
    path = accept(worker, "01BUG", ["alice@nutrition.co"])
    assert process_spooled(worker, path) == "quarantined"
    assert (worker.setup.dirs.quarantine / path.name).exists()
    assert outcomes(worker, "01BUG") == {"alice@nutrition.co": Outcome.QUARANTINED}
