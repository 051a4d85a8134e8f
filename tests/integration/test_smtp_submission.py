"""SMTP submission, as into an AUTH ingress point: STARTTLS, then AUTH, envelope sender kept,
one connection reused, and 4xx / 5xx per recipient. A real aiosmtpd server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mxgate.delivery.smtp import submission_or_deferral, submission_transport
from mxgate.errors import ConfigError
from mxgate.local.tls import ensure_certificate, server_context
from mxgate.message.raw import RawMessage
from mxgate.routing.routes import Destination
from tests.delivery_harness import LoopThread

USER, PASSWORD = "inp-0123456789abcdef", "correct horse"


@dataclass
class Received:
    mail_from: str
    recipients: list[str]
    login: str
    tls: bool
    data: bytes


@dataclass
class SubmissionHost:
    """Records what it receives; `replies` refuses chosen recipients."""

    replies: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    pipelining: bool = False  # offered after STARTTLS: the transport's pipelined path over TLS

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.replies:
            return self.replies[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        login = (
            session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else ""
        )
        self.received.append(
            Received(
                mail_from=envelope.mail_from or "",
                recipients=list(envelope.rcpt_tos),
                login=login,
                tls=session.ssl is not None,
                data=envelope.original_content or b"",
            )
        )
        return "250 2.0.0 queued"


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = (
        isinstance(data, LoginPassword)
        and data.login == USER.encode()
        and data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


@pytest.fixture(params=[False, True], ids=["one-by-one", "pipelining"])
def submission(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[SubmissionHost, LoopThread, Path]]:
    loop = LoopThread()
    yield SubmissionHost(pipelining=request.param), loop, tmp_path
    loop.close()


def serve(host: SubmissionHost, loop: LoopThread, tls_dir: Path, *, tls: bool = True) -> int:
    cert, key = ensure_certificate(tls_dir / "tls", "submission.test", datetime.now(UTC))

    def factory() -> SMTP:
        host.connections += 1
        return SMTP(
            host,
            hostname="submission.test",
            tls_context=server_context(cert, key) if tls else None,
            require_starttls=tls,
            auth_required=tls,  # (aiosmtpd warns about AUTH without TLS)
            auth_require_tls=tls,
            authenticator=authenticator,
        )

    return loop.serve(factory)


def destination(port: int, **changes: Any) -> Destination:
    return Destination.model_validate(
        {
            "transport": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "verify_tls": False,  # a self-signed test certificate
            "username": USER,
            "password_env": "SUBMISSION_PASSWORD",
            **changes,
        }
    )


RAW = b"From: buyer@shop.example\r\nTo: alice@nutrition.co\r\nSubject: s\r\n\r\nbody\r\n"


def test_starttls_auth_envelope_preserved_and_connection_reused(submission):
    host, loop, tmp = submission
    port = serve(host, loop, tmp)
    transport = submission_transport(
        destination(port), {"SUBMISSION_PASSWORD": PASSWORD}, "mxgate.test"
    )
    try:
        first = transport.send(
            "bounces@shop.example", ["alice@nutrition.co", "bob@nutrition.co"], RawMessage.of(RAW)
        )
        second = transport.send("other@shop.example", ["carol@nutrition.co"], RawMessage.of(RAW))
        client = transport._client
        assert client is not None
        assert client.has_extn("pipelining") is host.pipelining  # the path this case is for
    finally:
        transport.close()
    assert all(r.ok for r in (*first.values(), *second.values()))
    assert [r.mail_from for r in host.received] == ["bounces@shop.example", "other@shop.example"]
    assert host.received[0].recipients == ["alice@nutrition.co", "bob@nutrition.co"]
    assert {r.login for r in host.received} == {USER}
    assert all(r.tls for r in host.received)
    assert host.received[0].data == RAW
    assert host.connections == 1  # one connection for both messages


def test_4xx_and_5xx_per_recipient(submission):
    host, loop, tmp = submission
    host.replies = {
        "full@nutrition.co": "452 4.2.2 Mailbox full",
        "gone@nutrition.co": "550 5.1.1 No such user",
    }
    port = serve(host, loop, tmp)
    transport = submission_transport(
        destination(port), {"SUBMISSION_PASSWORD": PASSWORD}, "mxgate.test"
    )
    try:
        results = transport.send(
            "bounces@shop.example",
            ["ok@nutrition.co", "full@nutrition.co", "gone@nutrition.co"],
            RawMessage.of(RAW),
        )
    finally:
        transport.close()
    assert results["ok@nutrition.co"].ok
    assert (results["full@nutrition.co"].ok, results["full@nutrition.co"].transient) == (
        False,
        True,
    )
    assert (results["gone@nutrition.co"].ok, results["gone@nutrition.co"].transient) == (
        False,
        False,
    )
    assert results["gone@nutrition.co"].detail == "550 5.1.1 No such user"
    assert host.received[0].recipients == ["ok@nutrition.co"]


def test_a_wrong_password_is_permanent(submission):
    host, loop, tmp = submission
    port = serve(host, loop, tmp)
    transport = submission_transport(
        destination(port), {"SUBMISSION_PASSWORD": "wrong"}, "mxgate.test"
    )
    try:
        results = transport.send("bounces@shop.example", ["alice@nutrition.co"], RawMessage.of(RAW))
    finally:
        transport.close()
    (result,) = results.values()
    assert (result.ok, result.transient) == (False, False)
    assert result.detail.startswith("535")
    assert host.received == []


def test_no_plain_text_fallback_when_starttls_is_missing(submission):
    host, loop, tmp = submission
    port = serve(host, loop, tmp, tls=False)
    transport = submission_transport(
        destination(port), {"SUBMISSION_PASSWORD": PASSWORD}, "mxgate.test"
    )
    try:
        results = transport.send("bounces@shop.example", ["alice@nutrition.co"], RawMessage.of(RAW))
    finally:
        transport.close()
    (result,) = results.values()
    assert not result.ok
    assert "does not offer STARTTLS" in result.detail
    assert host.received == []  # nothing, and no password, went out in clear


def test_a_missing_password_variable_is_a_configuration_error():
    with pytest.raises(ConfigError, match="SUBMISSION_PASSWORD is not set"):
        submission_transport(destination(587), {}, "mxgate.test")


def test_a_destination_without_its_password_defers_its_deliveries():
    transport = submission_or_deferral(destination(587), {}, "mxgate.test")
    (result,) = transport.send(
        "bounces@shop.example", ["alice@nutrition.co"], RawMessage.of(RAW)
    ).values()
    assert (result.ok, result.transient) == (False, True)
    assert result.detail == "4.3.5 the SMTP password variable SUBMISSION_PASSWORD is not set"
