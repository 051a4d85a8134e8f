"""The SMTP transport's pipelined path against a scripted server on loopback: how replies
arrive (all together, split mid-line, multiline), a reused connection the server has closed,
a connection lost in the middle of a transaction, a reply line too long."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from mxgate.delivery.smtp import SmtpTarget, SmtpTransport
from mxgate.message.raw import RawMessage

MESSAGE = RawMessage.of(b"Subject: wire\r\n\r\n.dot\r\nbody\r\n")
Script = Callable[["Session"], None]


class Session:
    """One connection's side of the server: lines read, replies written as the script says."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection
        self.reader = connection.makefile("rb")

    def line(self) -> bytes:
        return self.reader.readline()

    def write(self, data: bytes) -> None:
        self.connection.sendall(data)

    def greet_and_ehlo(self) -> None:
        self.write(b"220 scripted ESMTP\r\n")
        assert self.line().upper().startswith(b"EHLO")
        self.write(b"250-scripted\r\n250-PIPELINING\r\n250 8BITMIME\r\n")

    def envelope(self, recipients: int) -> list[bytes]:
        """MAIL, the RCPTs and DATA, read as the client sent them."""
        return [self.line() for _ in range(recipients + 2)]

    def message(self) -> bytes:
        lines = []
        while (line := self.line()) != b".\r\n":
            assert line, "the connection ended inside the message"
            lines.append(line)
        return b"".join(lines)


class Server:
    def __init__(self, scripts: list[Script]) -> None:
        self.scripts = scripts  # one a connection, in order
        self.sessions = 0
        self.messages: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for script in self.scripts:
            connection, _ = self.listener.accept()
            self.sessions += 1
            session = Session(connection)
            with connection, session.reader, contextlib.suppress(OSError):
                script(session)


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[Server, SmtpTransport]]]:
    made: list[tuple[Server, SmtpTransport]] = []

    def start(*scripts: Script) -> tuple[Server, SmtpTransport]:
        server = Server(list(scripts))
        transport = SmtpTransport(SmtpTarget("127.0.0.1", server.port, timeout=5))
        made.append((server, transport))
        return server, transport

    yield start
    for server, transport in made:
        transport.close()
        server.listener.close()


def _deliver_all(received: list[bytes], count: int, *, close_after: bool = False) -> Script:
    def script(session: Session) -> None:
        session.greet_and_ehlo()
        for _ in range(count):
            session.envelope(1)
            session.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
            received.append(session.message())
            session.write(b"250 2.0.0 queued\r\n")
        if not close_after:
            assert session.line().upper().startswith(b"QUIT")
            session.write(b"221 bye\r\n")

    return script


def test_replies_split_anywhere_and_multiline_are_read_as_smtplib_reads_them(serve):
    def script(session: Session) -> None:
        session.greet_and_ehlo()
        session.envelope(2)
        session.write(b"250 ok\r\n55")
        time.sleep(0.05)  # the rest of a reply in a later segment
        session.write(b"0-5.1.1 no such\r\n550 5.1.1 user here\r\n250 ok\r\n354 go\r\n")
        server.messages.append(session.message())
        session.write(b"250-2.0.0 queued\r\n250 2.0.0 as 12345\r\n")
        assert session.line().upper().startswith(b"QUIT")
        session.write(b"221 bye\r\n")

    server, transport = serve(script)
    results = transport.send("s@x.example", ["gone@x.example", "ok@x.example"], MESSAGE)
    assert not results["gone@x.example"].ok
    assert not results["gone@x.example"].transient
    assert results["gone@x.example"].detail == "550 5.1.1 no such 5.1.1 user here"
    assert results["ok@x.example"].ok
    assert results["ok@x.example"].detail == "250 2.0.0 queued 2.0.0 as 12345"
    assert server.messages == [b"Subject: wire\r\n\r\n..dot\r\nbody\r\n"]  # as sent, stuffed


def test_a_reused_connection_the_server_closed_is_opened_again_for_the_next_message(serve):
    received: list[bytes] = []
    server, transport = serve(
        _deliver_all(received, 1, close_after=True), _deliver_all(received, 1)
    )
    assert transport.send("s@x.example", ["a@x.example"], MESSAGE)["a@x.example"].ok
    time.sleep(0.1)  # the server has closed the first connection
    assert transport.send("s@x.example", ["b@x.example"], MESSAGE)["b@x.example"].ok
    assert server.sessions == 2
    assert len(received) == 2


def test_a_connection_lost_before_the_final_reply_is_transient_for_everyone(serve):
    def drop_after_the_message(session: Session) -> None:
        session.greet_and_ehlo()
        session.envelope(2)
        session.write(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
        session.message()
        session.connection.shutdown(socket.SHUT_RDWR)  # no reply to the final dot

    server, transport = serve(drop_after_the_message, drop_after_the_message)
    results = transport.send("s@x.example", ["a@x.example", "b@x.example"], MESSAGE)
    assert server.sessions == 2  # tried once again on a new connection, as smtplib's path did
    for result in results.values():
        assert not result.ok
        assert result.transient
        assert result.detail.startswith("disconnected:")


def test_a_reply_line_over_smtplibs_limit_fails_the_transaction_permanently(serve):
    def long_reply(session: Session) -> None:
        session.greet_and_ehlo()
        session.envelope(1)
        session.write(b"250 " + b"x" * 9000 + b"\r\n")
        session.line()  # whatever follows: the client has closed

    _server, transport = serve(long_reply)
    (result,) = transport.send("s@x.example", ["a@x.example"], MESSAGE).values()
    assert not result.ok
    assert not result.transient
    assert result.detail == "500 Line too long."
