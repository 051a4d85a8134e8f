"""The SMTP transport against a real SMTP server on loopback, one that offers PIPELINING (the
transport then sends MAIL, RCPT and DATA in one write) and one that does not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from mxgate.delivery.smtp import SmtpTarget, SmtpTransport
from mxgate.message.raw import RawMessage
from tests.support import started_on_free_port


class Recorder:
    def __init__(self, pipelining: bool) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.sessions = 0
        self.pipelining = pipelining

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        return "250 ok"

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        self.sessions += 1
        session.host_name = hostname
        if self.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("busy"):
            return "452 4.2.2 mailbox full"
        if address.startswith("gone"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(
            (envelope.mail_from or "", list(envelope.rcpt_tos), envelope.original_content or b"")
        )
        return "250 2.0.0 queued"


@pytest.fixture(params=[True, False], ids=["pipelining", "one-by-one"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[Recorder, int]]:
    recorder = Recorder(pipelining=request.param)
    controller = started_on_free_port(
        lambda port: Controller(recorder, hostname="127.0.0.1", port=port, enable_SMTPUTF8=True)
    )
    try:
        yield recorder, controller.port
    finally:
        controller.stop()


def test_per_recipient_results_and_connection_reuse(server):
    recorder, port = server
    transport = SmtpTransport(SmtpTarget("127.0.0.1", port))
    try:
        results = transport.send(
            "s@shop.example",
            ["ok@x.example", "busy@x.example", "gone@x.example"],
            RawMessage.of(b"Subject: a\n\nbare LF body\n"),
        )
        assert results["ok@x.example"].ok
        assert results["busy@x.example"].transient
        assert not results["gone@x.example"].ok
        assert not results["gone@x.example"].transient
        assert results["gone@x.example"].detail == "550 5.1.1 no such user"
        transport.send("", ["ok2@x.example"], RawMessage.of(b"Subject: b\r\n\r\nx\r\n"))
    finally:
        transport.close()
    assert recorder.sessions == 1  # one connection for both messages
    (sender, rcpts, raw), (bounce_sender, _, _) = recorder.messages
    assert (sender, rcpts) == ("s@shop.example", ["ok@x.example"])
    assert raw == b"Subject: a\r\n\r\nbare LF body\r\n"  # CRLF on the wire
    assert bounce_sender == "<>"  # the null sender (MAIL FROM:<>) passes through


def test_a_refused_transaction_leaves_the_connection_ready_and_dots_go_through(server):
    recorder, port = server
    transport = SmtpTransport(SmtpTarget("127.0.0.1", port))
    body = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nlast"
    try:
        message = RawMessage.of(body)
        refused = transport.send("s@shop.example", ["busy@x.example", "gone@x.example"], message)
        delivered = transport.send("s@shop.example", ["ok@x.example"], message)
    finally:
        transport.close()
    assert refused["busy@x.example"].transient
    assert not refused["gone@x.example"].transient
    assert delivered["ok@x.example"].ok
    assert recorder.sessions == 1
    ((_, rcpts, raw),) = recorder.messages
    assert rcpts == ["ok@x.example"]
    assert raw == body + b"\r\n"  # unstuffed by the server as sent; the last line ended


def test_smtputf8_and_8bit(server):
    recorder, port = server
    transport = SmtpTransport(SmtpTarget("127.0.0.1", port))
    try:
        results = transport.send(
            "josé@correo.example",
            ["ok@x.example"],
            RawMessage.of("Subject: ñ\r\n\r\nñ\r\n".encode()),
        )
    finally:
        transport.close()
    assert results["ok@x.example"].ok
    assert recorder.messages[0][0] == "josé@correo.example"


def test_unreachable_host_is_transient_for_everyone():
    transport = SmtpTransport(SmtpTarget("127.0.0.1", 1, timeout=2))
    results = transport.send("s@x.example", ["a@x.example", "b@x.example"], RawMessage.of(b"\r\n"))
    assert all(not r.ok and r.transient for r in results.values())
