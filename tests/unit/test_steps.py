"""The workflow steps over real local adapters (files, SQLite) and a recording transport."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mxgate.adapters.local.appevents import FileAppEvents
from mxgate.adapters.local.objects import FileObjectStore
from mxgate.adapters.local.state import SqliteState
from mxgate.errors import PermanentError, TransientError
from mxgate.ports import SendResult
from mxgate.records import Envelope, Outcome, message_id_of, variant_key, variant_of
from mxgate.routing.routes import load_routes
from mxgate.workflow import steps
from mxgate.workflow.model import (
    DeadLetterInput,
    DeliverInput,
    ProcessInput,
    QuarantineInput,
    StepError,
)
from mxgate.workflow.services import Services
from tests.fakes import ManualClock, RecordingTransport
from tests.support import REPO

BUCKET = "raw-mail"
RAW = b"From: a@shop.example\r\nTo: alice@nutrition.co\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def world(tmp_path: Path):
    state = SqliteState(tmp_path / "state.db")
    workspace, m365 = RecordingTransport(), RecordingTransport()
    services = Services(
        objects=FileObjectStore(tmp_path / "objects"),
        timeline=state,
        idempotency=state,
        transports={"workspace": workspace, "m365": m365},
        app_events=FileAppEvents(tmp_path / "events"),
        dead_letters=state,
        routes=load_routes(REPO / "config" / "routes.yaml"),
        clock=ManualClock(),
    )
    return services, state, workspace, m365


def stored(
    services: Services, recipients: list[str], message_id: str = "01TESTMESSAGE", variant: int = 0
) -> ProcessInput:
    key = variant_key(f"raw/{message_id}", variant)
    services.objects.put(BUCKET, key, RAW)
    envelope = Envelope(
        message_id=message_id,
        mail_from="bounce@shop.example",
        recipients=recipients,
        helo="mx.shop.example",
        source_ip="192.0.2.7",
    )
    return ProcessInput(bucket=BUCKET, key=key, envelope=envelope)


def test_process_plans_one_delivery_per_destination_and_quarantines_the_unknown(world):
    services, state, _, _ = world
    plan = steps.process(
        stored(
            services,
            [
                "alice@nutrition.co",
                "carol@nutrition.co",
                "zed@nutrition.co",
                "orders+x@customer-support.nutrition.co",
                "nobody@customer-support.nutrition.co",
            ],
        ),
        services,
    )
    by_destination = {d.destination: d for d in plan.deliveries}
    assert sorted(by_destination) == ["m365", "orders", "workspace"]
    assert by_destination["workspace"].recipients == ["alice@nutrition.co", "zed@nutrition.co"]
    assert by_destination["orders"].kind == "app"
    assert plan.message.envelope_sender == "bounce@shop.example"
    assert [(s.recipient, s.outcome) for s in state.states("01TESTMESSAGE")] == [
        ("nobody@customer-support.nutrition.co", Outcome.QUARANTINED)
    ]


def test_process_splits_more_than_fifty_recipients(world):
    services, _, _, _ = world
    recipients = [f"user{n}@nutrition.co" for n in range(120)]
    plan = steps.process(stored(services, recipients), services)
    assert [len(d.recipients) for d in plan.deliveries] == [50, 50, 20]
    assert len({d.delivery_id for d in plan.deliveries}) == 3


def test_deliver_prepends_trace_fields_and_keeps_the_original_bytes(world):
    services, state, workspace, _ = world
    plan = steps.process(stored(services, ["alice@nutrition.co"]), services)
    result = steps.deliver(DeliverInput(delivery=plan.deliveries[0]), services)
    assert [r.outcome for r in result.results] == ["delivered"]
    sender, recipients, raw = workspace.sent[0]
    assert (sender, recipients) == ("bounce@shop.example", ("alice@nutrition.co",))
    assert raw.startswith(
        b"Received: from mx.shop.example ([192.0.2.7]) by mxgate.local (mxgate) with ESMTP"
    )
    assert raw.endswith(RAW)
    assert state.states("01TESTMESSAGE")[0].outcome is Outcome.DELIVERED


def test_deliver_twice_sends_once(world):
    services, _, workspace, _ = world
    plan = steps.process(stored(services, ["alice@nutrition.co"]), services)
    request = DeliverInput(delivery=plan.deliveries[0])
    steps.deliver(request, services)
    again = steps.deliver(request, services)
    assert len(workspace.sent) == 1
    assert again.results[0].detail == "already settled"


def test_partial_transient_failure_retries_only_the_rest(world):
    services, state, workspace, _ = world
    workspace.script["bob@nutrition.co"] = [SendResult(ok=False, transient=True, detail="451 busy")]
    plan = steps.process(stored(services, ["alice@nutrition.co", "bob@nutrition.co"]), services)
    request = DeliverInput(delivery=plan.deliveries[0])
    with pytest.raises(TransientError, match="451 busy"):
        steps.deliver(request, services)
    steps.deliver(request, services)
    assert [s[1] for s in workspace.sent] == [
        ("alice@nutrition.co", "bob@nutrition.co"),
        ("bob@nutrition.co",),
    ]
    assert {s.outcome for s in state.states("01TESTMESSAGE")} == {Outcome.DELIVERED}


def test_permanent_failure_then_dead_letter_settles_only_the_undelivered(world):
    services, state, workspace, _ = world
    workspace.script["bob@nutrition.co"] = [SendResult(ok=False, detail="550 5.1.1 no such user")]
    plan = steps.process(stored(services, ["alice@nutrition.co", "bob@nutrition.co"]), services)
    delivery = plan.deliveries[0]
    with pytest.raises(PermanentError, match="550"):
        steps.deliver(DeliverInput(delivery=delivery), services)
    steps.dead_letter(
        DeadLetterInput(
            delivery=delivery, error=StepError(Error="PermanentError", Cause="550 5.1.1")
        ),
        services,
    )
    outcomes = {s.recipient: s.outcome for s in state.states("01TESTMESSAGE")}
    assert outcomes == {
        "alice@nutrition.co": Outcome.DELIVERED,
        "bob@nutrition.co": Outcome.DEAD_LETTERED,
    }
    (record,) = list(state.list())
    assert record.recipients == ["bob@nutrition.co"]


def test_app_delivery_writes_one_event_per_recipient(world, tmp_path):
    services, state, _, _ = world
    plan = steps.process(stored(services, ["orders@customer-support.nutrition.co"]), services)
    steps.deliver(DeliverInput(delivery=plan.deliveries[0]), services)
    files = list((tmp_path / "events" / "orders").glob("*.json"))
    assert len(files) == 1
    event = json.loads(files[0].read_text())
    assert event["recipient"] == "orders@customer-support.nutrition.co"
    assert event["message"]["subject"] == "hi"
    assert state.states("01TESTMESSAGE")[0].outcome is Outcome.HANDED_TO_APP


def test_a_message_without_its_envelope_is_never_delivered_to_its_header_recipients(world):
    """To: names alice, but without the SMTP envelope nobody knows who the recipients are: a
    permanent error (the state machine's Catch quarantines it), never a guess from headers."""
    services, state, workspace, _ = world
    services.objects.put(BUCKET, "raw/01NOENVELOPE", RAW)
    with pytest.raises(PermanentError, match="no SMTP envelope"):
        steps.process(ProcessInput(bucket=BUCKET, key="raw/01NOENVELOPE"), services)
    assert workspace.sent == []
    assert state.states("01NOENVELOPE") == []


def test_quarantine_settles_every_recipient_with_the_reason(world):
    services, state, _, _ = world
    request = stored(services, ["alice@nutrition.co", "carol@nutrition.co"], "01BROKEN")
    steps.quarantine(
        QuarantineInput(
            bucket=request.bucket,
            key=request.key,
            error=StepError(Error="KeyError", Cause="boom"),
            envelope=request.envelope,
        ),
        services,
    )
    states = state.states("01BROKEN")
    assert {s.outcome for s in states} == {Outcome.QUARANTINED}
    assert "KeyError: boom" in states[0].detail


def test_the_versions_of_one_message_keep_its_id_and_get_their_own_deliveries(world):
    """AddHeader can give a message's recipients different versions, stored under
    `<key>.variant-<n>`: each is the same message on the timeline, but its deliveries (and so
    its deferred records and dead letters) must never share an id with another version's."""
    services, _, _, _ = world
    first = steps.process(stored(services, ["alice@nutrition.co"], "01SPLIT", 1), services)
    second = steps.process(stored(services, ["bob@nutrition.co"], "01SPLIT", 2), services)
    assert first.message.message_id == second.message.message_id == "01SPLIT"
    assert [d.delivery_id for d in first.deliveries] == ["01SPLIT.variant-1.workspace.0"]
    assert [d.delivery_id for d in second.deliveries] == ["01SPLIT.variant-2.workspace.0"]
    plain = steps.process(stored(services, ["carol@nutrition.co"], "01PLAIN"), services)
    assert [d.delivery_id for d in plain.deliveries] == ["01PLAIN.m365.0"]


@pytest.mark.parametrize(
    ("key", "message_id", "variant"),
    [
        ("raw/01ABC", "01ABC", ""),
        ("raw/01ABC.variant-2", "01ABC", ".variant-2"),
        ("Archive/01ABC.variant-12.eml", "01ABC", ".variant-12"),
        ("raw/01ABC.variant-x", "01ABC.variant-x", ""),
        ("raw/.variant-2", ".variant-2", ""),
    ],
)
def test_message_id_and_version_of_a_key(key, message_id, variant):
    assert (message_id_of(key), variant_of(key)) == (message_id, variant)


def test_quarantining_a_version_settles_under_the_message_id(world):
    services, state, _, _ = world
    request = stored(services, ["alice@nutrition.co"], "01BROKENV", 2)
    steps.quarantine(
        QuarantineInput(
            bucket=request.bucket,
            key=request.key,
            error=StepError(Error="E"),
            envelope=request.envelope,
        ),
        services,
    )
    assert [s.recipient for s in state.states("01BROKENV")] == ["alice@nutrition.co"]
