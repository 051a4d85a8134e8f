"""SES sending through a real HTTP endpoint on loopback (moto's server, behind a proxy that can
answer SES's throttling error): routed recipients, the sender policy, error classes, splitting."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes, policy

import pytest

from mxgate.adapters.aws.bootstrap import ses_client
from mxgate.adapters.aws.ses import SesTransport
from mxgate.message.raw import RawMessage
from tests.delivery_harness import message
from tests.ses_endpoint import CREDENTIALS, SesEndpoint, ses_endpoint


@pytest.fixture(scope="module")
def ses_server() -> Iterator[SesEndpoint]:
    with ses_endpoint() as endpoint:
        yield endpoint


@pytest.fixture
def ses(ses_server: SesEndpoint, monkeypatch: pytest.MonkeyPatch) -> SesEndpoint:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    ses_server.reset()
    ses_server.throttle = ses_server.throttled = ses_server.passed = 0
    ses_server.verify("nutrition.co")
    return ses_server


def transport(ses: SesEndpoint, routing_domain: str | None = None) -> SesTransport:
    return SesTransport(ses_client(endpoint_url=ses.url, region="us-east-1"), routing_domain)


def test_raw_message_goes_to_the_routed_recipients(ses):
    raw = message("alice@nutrition.co", "routed", sender="ceo@nutrition.co")
    results = transport(ses, "nutrition.co.test-google-a.com").send(
        "ceo@nutrition.co", ["alice@nutrition.co", "bob@nutrition.co"], RawMessage.of(raw)
    )
    assert all(r.ok and r.detail.startswith("SES message ") for r in results.values())
    (sent,) = ses.sent()
    assert {"alice@nutrition.co.test-google-a.com", "bob@nutrition.co.test-google-a.com"} <= set(
        sent["destinations"]
    )
    assert sent["raw_data"].encode() == raw


def test_an_unverified_sender_is_a_permanent_refusal(ses):
    raw = message("alice@nutrition.co", "unverified")
    (result,) = (
        transport(ses)
        .send("buyer@shop.example", ["alice@nutrition.co"], RawMessage.of(raw))
        .values()
    )
    assert (result.ok, result.transient) == (False, False)
    assert result.detail.startswith("SES MessageRejected")


def test_throttling_is_transient_and_not_retried_by_the_sdk(ses):
    ses.throttle = 1
    raw = message("alice@nutrition.co", "throttled", sender="ceo@nutrition.co")
    (result,) = (
        transport(ses).send("ceo@nutrition.co", ["alice@nutrition.co"], RawMessage.of(raw)).values()
    )
    assert (result.ok, result.transient) == (False, True)
    assert result.detail.startswith("SES TooManyRequestsException")
    assert (ses.throttled, ses.passed) == (1, 0)  # one call: retries belong to the state machine


def test_an_unreachable_endpoint_is_transient():
    client = ses_client(endpoint_url="http://127.0.0.1:9", region="us-east-1")
    (result,) = (
        SesTransport(client)
        .send("a@nutrition.co", ["b@nutrition.co"], RawMessage.of(b"x"))
        .values()
    )
    assert (result.ok, result.transient) == (False, True)
    assert "unreachable" in result.detail


def test_more_than_fifty_recipients_are_split(ses):
    # moto adds header To/Cc to the recipients it counts; a group keeps the header empty
    raw = message("undisclosed-recipients:;", "all hands", sender="ceo@nutrition.co")
    recipients = [f"user{n:03d}@nutrition.co" for n in range(120)]
    results = transport(ses).send("ceo@nutrition.co", recipients, RawMessage.of(raw))
    assert {r.detail[:20] for r in results.values() if not r.ok} == set()
    sends = ses.sent()
    assert len(sends) == 3
    assert sorted(len([d for d in s["destinations"] if d.startswith("user")]) for s in sends) == [
        20,
        50,
        50,
    ]


def test_the_deliver_step_rewrites_the_sender_for_ses_and_survives_throttling(ses, benches):
    ses.throttle = 2
    bench = benches(
        transports={
            "workspace": transport(ses, "nutrition.co.test-google-a.com"),
            "m365": transport(ses, "nutritionco.mail.onmicrosoft.com"),
        }
    )
    raw = message("alice@nutrition.co", "from outside")
    message_id = bench.store(raw, ["alice@nutrition.co"])
    bench.run(message_id)
    assert bench.outcomes(message_id) == {"alice@nutrition.co": "relayed"}
    retries = [e.detail for e in bench.state.events(message_id) if e.stage.value == "retry"]
    assert len(retries) == 2
    assert all("TransientError" in r for r in retries)
    attempts = [e.detail for e in bench.state.events(message_id) if e.stage.value == "attempt"]
    assert all("TooManyRequestsException" in a for a in attempts)
    (sent,) = ses.sent()  # delivered once, after two throttled calls
    assert "alice@nutrition.co.test-google-a.com" in sent["destinations"]
    delivered = message_from_bytes(sent["raw_data"].encode(), policy=policy.default)
    assert delivered["From"] == '"Buyer via nutrition.co" <mxgate@nutrition.co>'
    assert delivered["Reply-To"] == "Buyer <buyer@shop.example>"
    assert delivered["X-Original-From"] == "Buyer <buyer@shop.example>"
    assert "by mxgate.test (mxgate) with ESMTP" in delivered["Received"]
    assert sent["raw_data"].encode().endswith(raw.split(b"\r\nTo:", 1)[1])
    (state,) = bench.state.states(message_id)
    assert "rewritten to mxgate@nutrition.co" in state.detail
