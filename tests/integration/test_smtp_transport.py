"""The SMTP transport against a real SMTP server on loopback, one that offers PIPELINING (the
transport then sends MAIL, RCPT and DATA in one write) and one that does not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from mxgate.adapters.local.objects import FileObjectStore
from mxgate.delivery.smtp import WRITE_SIZE, SmtpTarget, SmtpTransport
from mxgate.message.raw import RawMessage
from mxgate.records import MessageRef
from tests.support import started_on_free_port


class Recorder:
    def __init__(self, pipelining: bool) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.mail_options: list[list[str]] = []
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
        self.mail_options.append(list(envelope.mail_options))
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


def test_a_message_longer_than_one_write_goes_through_as_it_is(server):
    """DATA is gathered into writes of WRITE_SIZE: lines with leading dots on either side of
    each write's end arrive unstuffed and whole."""
    recorder, port = server
    line = b".dot at the start, and a line long enough to cross the writes\r\n"
    header = b"Subject: long\r\n\r\n"
    body = header + line * (3 * WRITE_SIZE // len(line) + 7)
    transport = SmtpTransport(SmtpTarget("127.0.0.1", port))
    try:
        # the header and the body as separate chunks, as a delivery with trace fields has them
        message = RawMessage.of(body).with_header(header)
        assert transport.send("s@shop.example", ["ok@x.example"], message)["ok@x.example"].ok
    finally:
        transport.close()
    ((_, _, raw),) = recorder.messages
    assert raw == body


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


class CountingStore(FileObjectStore):
    """The file object store, counting how often an object is opened for reading."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.opened = 0

    def open(self, bucket: str, key: str) -> BinaryIO:
        self.opened += 1
        return super().open(bucket, key)


@pytest.mark.parametrize(
    ("body", "eight_bit", "opened"),
    [
        ("caf\u00e9\r\n".encode() * 12_000, True, 2),
        (b"plain\r\n" * 12_000, False, 2),
        ("caf\u00e9\r\n".encode() * 12_000, None, 3),  # a record from before the flag: scanned
        (b"plain\r\n" * 12_000, None, 3),
    ],
    ids=["8bit-known", "ascii-known", "8bit-old-record", "ascii-old-record"],
)
def test_a_large_stored_message_is_read_once_when_its_8bit_flag_is_known(
    server, tmp_path, body, eight_bit, opened
):
    """Over 48 KB a message is not inline: its header section is read, then the whole of it
    as it is sent; the 8-bit scan that chose BODY=8BITMIME was a third read."""
    recorder, port = server
    objects = CountingStore(tmp_path / "objects")
    raw = b"Subject: big\r\nFrom: s@shop.example\r\n\r\n" + body
    objects.put("raw-mail", "raw/M1", raw)
    ref = MessageRef(
        message_id="M1",
        bucket="raw-mail",
        key="raw/M1",
        digest="0" * 64,
        envelope_sender="s@shop.example",
        size=len(raw),
        eight_bit=eight_bit,
    )
    transport = SmtpTransport(SmtpTarget("127.0.0.1", port))
    try:
        results = transport.send(
            "s@shop.example", ["ok@x.example"], RawMessage.referenced(ref, objects)
        )
    finally:
        transport.close()
    assert results["ok@x.example"].ok
    assert objects.opened == opened
    assert recorder.messages[0][2] == raw
    assert ("BODY=8BITMIME" in recorder.mail_options[0]) is (not body.isascii())


def test_unreachable_host_is_transient_for_everyone():
    transport = SmtpTransport(SmtpTarget("127.0.0.1", 1, timeout=2))
    results = transport.send("s@x.example", ["a@x.example", "b@x.example"], RawMessage.of(b"\r\n"))
    assert all(not r.ok and r.transient for r in results.values())
