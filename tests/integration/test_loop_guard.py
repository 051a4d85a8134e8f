"""The loop guard over the workflow steps with real local adapters (files, SQLite): a message
that comes back through the MX for a recipient it was delivered to is bounced with a DSN, one
forwarded to someone else is delivered, a message past the hop limit is bounced, and tokens
this deployment did not sign count for nothing."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import pytest

from mxgate.adapters.local.appevents import FileAppEvents
from mxgate.adapters.local.objects import FileObjectStore
from mxgate.adapters.local.state import SqliteState
from mxgate.message.headers import prepend_headers
from mxgate.records import Delivery, Envelope, Outcome
from mxgate.routing.loops import HEADER, delivered_messages, hops, loop_token, too_many_hops
from mxgate.workflow import steps
from mxgate.workflow.model import DeadLetterInput, DeliverInput, ProcessInput, StepError
from mxgate.workflow.services import Services
from tests.fakes import ManualClock, RecordingTransport
from tests.support import shipped_routes

BUCKET = "raw-mail"
KEY = b"this deployment's loop key"
RAW = (
    b"From: Buyer <buyer@shop.example>\r\nTo: alice@nutrition.co\r\nSubject: lunch\r\n"
    b"Message-ID: <lunch-1@shop.example>\r\n\r\nNoon?\r\n"
)


def test_a_token_names_its_message_and_only_this_key_makes_it():
    token = loop_token(KEY, "01FIRST")
    assert token.startswith("01FIRST.")
    assert delivered_messages([token], KEY) == ["01FIRST"]
    assert delivered_messages([token], b"another deployment") == []
    assert delivered_messages(["mxgate", "01FIRST.forged", f" {token} ", token], KEY) == ["01FIRST"]


def test_the_hop_limit_counts_received_fields():
    assert hops(["Received", "received", "From", "X-Received"]) == 2
    assert too_many_hops(50, 50) is None
    assert "51 Received fields, more than the hop limit of 50" in str(too_many_hops(51, 50))


@pytest.fixture
def world(tmp_path: Path):
    state = SqliteState(tmp_path / "state.db")
    workspace, internet = RecordingTransport(), RecordingTransport()
    services = Services(
        objects=FileObjectStore(tmp_path / "objects"),
        timeline=state,
        idempotency=state,
        transports={"workspace": workspace, "m365": RecordingTransport()},
        app_events=FileAppEvents(tmp_path / "events"),
        dead_letters=state,
        routes=shipped_routes(),
        clock=ManualClock(),
        loop_key=KEY,
        bounces=internet,
    )
    return services, state, workspace, internet


def arrive(
    services: Services, raw: bytes, message_id: str, recipients: list[str], sender: str
) -> ProcessInput:
    key = f"raw/{message_id}"
    services.objects.put(BUCKET, key, raw)
    envelope = Envelope(
        message_id=message_id,
        mail_from=sender,
        recipients=recipients,
        helo="mail-gw.google.example",
        source_ip="192.0.2.44",
    )
    return ProcessInput(bucket=BUCKET, key=key, envelope=envelope)


def run(services: Services, request: ProcessInput) -> list[Delivery]:
    """Process, then every planned delivery once (what the Map does)."""
    planned = steps.process(request, services).deliveries
    for delivery in planned:
        steps.deliver(DeliverInput(delivery=delivery), services)
    return planned


def delivered_bytes(workspace: RecordingTransport) -> bytes:
    """What the mailbox host received last: the bytes a user's forward or a loop sends back."""
    return workspace.sent[-1][2]


def test_a_forward_back_through_the_mx_is_delivered_and_a_true_loop_bounced(world):
    services, state, workspace, internet = world
    run(services, arrive(services, RAW, "01FIRST", ["alice@nutrition.co"], "buyer@shop.example"))
    first_copy = delivered_bytes(workspace)
    assert email.message_from_bytes(first_copy)[HEADER] == loop_token(KEY, "01FIRST")

    # alice's Workspace forwards it to bob (Gmail rewrites the envelope sender, SRS)
    forward = run(
        services,
        arrive(services, first_copy, "01FORWARD", ["bob@nutrition.co"], "srs0=x@google.example"),
    )
    assert [d.kind for d in forward] == ["mailbox"]
    assert [(s.recipient, s.outcome) for s in state.states("01FORWARD")] == [
        ("bob@nutrition.co", Outcome.DELIVERED)
    ]
    forwarded_copy = delivered_bytes(workspace)
    assert len(email.message_from_bytes(forwarded_copy).get_all(HEADER)) == 2  # one per pass

    # a misrouted host sends the first copy back to the MX for alice again: a loop
    loop = run(
        services,
        arrive(services, first_copy, "01LOOP", ["alice@nutrition.co"], "buyer@shop.example"),
    )
    assert [(d.kind, d.destination) for d in loop] == [("bounce", "sender")]
    (state_,) = state.states("01LOOP")
    assert state_.outcome is Outcome.BOUNCED
    assert "5.4.6 mail forwarding loop for alice@nutrition.co" in state_.detail
    assert "as message 01FIRST" in state_.detail
    sender, recipients, dsn = internet.sent[-1]
    assert (sender, recipients) == ("", ("buyer@shop.example",))  # a DSN: MAIL FROM:<>
    report = email.message_from_bytes(dsn, policy=policy.default)
    assert report.get_content_type() == "multipart/report"
    status = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    assert "Status: 5.4.6" in status.as_string()
    assert "Final-Recipient: rfc822; alice@nutrition.co" in status.as_string()

    # bob forwards it back to alice: the chain ends where it began, a loop too
    back = run(
        services,
        arrive(services, forwarded_copy, "01BACK", ["alice@nutrition.co"], "srs0=y@google.example"),
    )
    assert [d.kind for d in back] == ["bounce"]
    assert state.states("01BACK")[0].outcome is Outcome.BOUNCED


def test_submitted_mail_is_not_judged_by_the_guard_meant_for_the_mx(world):
    """Alice redirects what she got to herself through the submission ingress point (SMTP
    AUTH): her doing, not a loop; the hop limit alone would still stop a real one."""
    services, state, workspace, _ = world
    run(services, arrive(services, RAW, "01GOT", ["alice@nutrition.co"], "buyer@shop.example"))
    got = delivered_bytes(workspace)
    request = arrive(services, got, "01REDIRECT", ["alice@nutrition.co"], "alice@nutrition.co")
    assert request.envelope is not None
    submitted = request.model_copy(
        update={"envelope": request.envelope.model_copy(update={"authenticated": True})}
    )
    assert [d.kind for d in run(services, submitted)] == ["mailbox"]
    assert state.states("01REDIRECT")[0].outcome is Outcome.DELIVERED


def test_tokens_of_another_deployment_count_for_nothing(world):
    services, state, _, _ = world
    stranger = prepend_headers(RAW, [(HEADER, loop_token(b"their key", "01THEIRS"))])
    plain = prepend_headers(RAW, [(HEADER, "mxgate")])  # the old static header
    for message_id, raw in (("01STRANGER", stranger), ("01OLD", plain)):
        run(services, arrive(services, raw, message_id, ["alice@nutrition.co"], "a@shop.example"))
        assert state.states(message_id)[0].outcome is Outcome.DELIVERED


def test_a_message_past_the_hop_limit_is_bounced(world):
    services, state, _, internet = world
    trace = [("Received", f"from relay{n}.example by relay{n + 1}.example") for n in range(51)]
    looping = prepend_headers(RAW, trace)
    planned = run(
        services, arrive(services, looping, "01HOPS", ["alice@nutrition.co"], "a@shop.example")
    )
    assert [d.kind for d in planned] == ["bounce"]
    (bounced,) = state.states("01HOPS")
    assert bounced.outcome is Outcome.BOUNCED
    assert "51 Received fields, more than the hop limit of 50" in bounced.detail
    at_limit = prepend_headers(RAW, trace[:50])
    run(services, arrive(services, at_limit, "01FIFTY", ["alice@nutrition.co"], "a@shop.example"))
    assert state.states("01FIFTY")[0].outcome is Outcome.DELIVERED
    assert len(internet.sent) == 1


def test_a_loop_of_a_null_sender_is_dead_lettered_never_dropped(world):
    """No DSN answers a DSN (it would loop again): the recipient is dead-lettered, with the
    reason, for an operator to see."""
    services, state, workspace, _ = world
    run(services, arrive(services, RAW, "01DSN", ["alice@nutrition.co"], ""))
    copy = delivered_bytes(workspace)
    (bounce,) = steps.process(
        arrive(services, copy, "01DSNLOOP", ["alice@nutrition.co"], ""), services
    ).deliveries
    with pytest.raises(Exception, match="no DSN to the null sender") as failure:
        steps.deliver(DeliverInput(delivery=bounce), services)
    error = StepError(Error=type(failure.value).__name__, Cause=str(failure.value))
    steps.dead_letter(DeadLetterInput(delivery=bounce, error=error), services)
    (state_,) = state.states("01DSNLOOP")
    assert state_.outcome is Outcome.DEAD_LETTERED
    assert "mail forwarding loop" in state_.detail
