"""A message is authenticated once on one machine: the rule set checks it before the rules,
and the Process step, moments later, finds the verdicts the worker's authenticator kept by the
message's ingress id (no DNS question asked twice, no cache in front to hide one)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from mxgate.authn import keys
from mxgate.authn.arc import Sealer
from mxgate.authn.check import Authenticator
from tests.dnsserver import Zone, ZoneServer
from tests.mailtools import make_keys

MESSAGE = b"From: someone@example.test\r\nTo: alice@nutrition.co\r\nSubject: hi\r\n\r\nhello\r\n"
ENVELOPE = {"client_ip": "192.0.2.7", "mail_from": "someone@example.test", "helo": "mx.example"}


@pytest.fixture
def server() -> Iterator[ZoneServer]:
    zone = Zone()
    zone.add("example.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.add("_dmarc.example.test", "TXT", "v=DMARC1; p=reject")
    running = ZoneServer(zone)
    yield running
    running.stop()


def questions(server: ZoneServer) -> int:
    return sum(server.zone.queries.values())


def test_the_same_message_is_checked_once(server: ZoneServer) -> None:
    authenticator = Authenticator(server.resolver(), "mxgate.test", remember=4)
    first = authenticator.authenticate(io.BytesIO(MESSAGE), message_id="M1", **ENVELOPE)
    asked = questions(server)
    assert asked > 0
    # the Process step: the stored copy carries a field the rules added; same message id
    stored = b"X-Rule: added\r\n" + MESSAGE
    again, fields = authenticator.trace_fields(io.BytesIO(stored), message_id="M1", **ENVELOPE)
    assert questions(server) == asked
    assert again == first
    assert first.spf_mail_from.result.value == "pass"
    assert fields[0][0] == "Authentication-Results"


def test_another_message_or_another_envelope_is_checked_again(server: ZoneServer) -> None:
    authenticator = Authenticator(server.resolver(), "mxgate.test", remember=4)
    authenticator.authenticate(io.BytesIO(MESSAGE), message_id="M1", **ENVELOPE)
    asked = questions(server)
    authenticator.authenticate(io.BytesIO(MESSAGE), message_id="M2", **ENVELOPE)
    assert questions(server) > asked
    asked = questions(server)
    other = {**ENVELOPE, "client_ip": "203.0.113.9"}
    failed = authenticator.authenticate(io.BytesIO(MESSAGE), message_id="M1", **other)
    assert questions(server) > asked
    assert failed.spf_mail_from.result.value == "fail"


def test_without_a_message_id_or_a_memory_every_call_checks(server: ZoneServer) -> None:
    for authenticator, message_id in (
        (Authenticator(server.resolver(), "mxgate.test", remember=4), ""),
        (Authenticator(server.resolver(), "mxgate.test"), "M1"),
    ):
        authenticator.authenticate(io.BytesIO(MESSAGE), message_id=message_id, **ENVELOPE)
        asked = questions(server)
        authenticator.authenticate(io.BytesIO(MESSAGE), message_id=message_id, **ENVELOPE)
        assert questions(server) > asked


def test_the_memory_keeps_only_the_last_messages(server: ZoneServer) -> None:
    authenticator = Authenticator(server.resolver(), "mxgate.test", remember=2)
    for message_id in ("M1", "M2", "M3"):
        authenticator.authenticate(io.BytesIO(MESSAGE), message_id=message_id, **ENVELOPE)
    asked = questions(server)
    authenticator.authenticate(io.BytesIO(MESSAGE), message_id="M1", **ENVELOPE)
    assert questions(server) > asked


def test_with_a_sealer_the_digest_is_part_of_the_key(server: ZoneServer) -> None:
    """The seal signs the fields of the message it goes with: kept results are reused only for
    the same bytes, and a message of unknown digest is checked every time."""
    sealer = Sealer("mxgate.test", "arc", keys.load_private_key(make_keys(1024).private))
    authenticator = Authenticator(server.resolver(), "mxgate.test", sealer=sealer, remember=4)
    authenticator.authenticate(io.BytesIO(MESSAGE), message_id="M1", sha256="a" * 64, **ENVELOPE)
    asked = questions(server)
    authenticator.trace_fields(io.BytesIO(MESSAGE), message_id="M1", sha256="a" * 64, **ENVELOPE)
    assert questions(server) == asked
    authenticator.trace_fields(io.BytesIO(MESSAGE), message_id="M1", sha256="b" * 64, **ENVELOPE)
    assert questions(server) > asked
    for _ in range(2):
        asked = questions(server)
        authenticator.authenticate(io.BytesIO(MESSAGE), message_id="M2", **ENVELOPE)
        assert questions(server) > asked
