"""The ingress's DATA reader against a real client on loopback: the message goes to its spool
file as it arrives (never whole in memory), dot-stuffing undone wherever the network splits
it, a line of exactly the reader's limit taken whole, and a message over the size limit
refused with 552 with nothing left in the spool."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session

from mxgate.clock import SystemClock
from mxgate.local.limits import Defences, SmtpLimits
from mxgate.local.smtp import IngressSMTP
from mxgate.local.spool import Spool, SpoolWriter
from mxgate.records import Envelope
from tests.support import free_port

LIMIT = 200_000  # the ingress point's MaxMessageSizeBytes here


class Spooling:
    """The ingress handler's DATA half: each message into the spool as it arrives."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.count = 0

    def start_data(self, session: Session, envelope: SmtpEnvelope) -> SpoolWriter:
        self.count += 1
        return self.spool.receive(
            Envelope(
                message_id=f"01STREAM{self.count:04d}",
                mail_from=envelope.mail_from or "",
                recipients=list(envelope.rcpt_tos),
            )
        )

    async def end_data(self, writer: SpoolWriter) -> str:
        path = await asyncio.to_thread(writer.commit)
        return f"250 2.0.0 Ok: queued as {path.stem}"


class Ingress(Controller):
    def __init__(self, handler: Spooling, port: int) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=port)
        self.defences = Defences.counting(SmtpLimits(), SystemClock())

    def factory(self) -> IngressSMTP:
        return IngressSMTP(
            self.handler,
            gate=self.defences.gate,
            guard=self.defences.guard,
            data_slots=asyncio.Semaphore(4),
            data_size_limit=LIMIT,
            hostname="ingress.test",
        )


@pytest.fixture
def ingress(tmp_path: Path) -> Iterator[tuple[int, Spool]]:
    spool = Spool(tmp_path / "spool")
    controller = Ingress(Spooling(spool), free_port())
    controller.start()
    try:
        yield controller.port, spool
    finally:
        controller.stop()


def reply(client: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n") or data.split(b"\r\n")[-2][3:4] == b"-":
        data += client.recv(4096)
    return data


def send_data(port: int, pieces: list[bytes]) -> bytes:
    """One transaction whose message data goes in `pieces`, each its own write (a pause in
    between, so the server reads them apart): the reply to the final dot."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reply(client)
        for command in (b"EHLO client.test", b"MAIL FROM:<a@shop.test>", b"RCPT TO:<b@x.test>"):
            client.sendall(command + b"\r\n")
            assert reply(client)[:1] == b"2"
        client.sendall(b"DATA\r\n")
        assert reply(client).startswith(b"354")
        for piece in pieces:
            client.sendall(piece)
            time.sleep(0.01)
        return reply(client)


def spooled(spool: Spool) -> list[bytes]:
    return [spool.read(path)[1].read() for path in spool.pending()]


def test_dot_stuffing_split_across_reads_is_undone(ingress):
    port, spool = ingress
    pieces = [
        b"Subject: dots\r\n\r\nline\r",
        b"\n.",
        b".hidden\r\n..",
        b"two\r\n",
        b".",
        b"\r",
        b"\n",
    ]
    answer = send_data(port, pieces)
    assert answer.startswith(b"250 2.0.0"), answer
    assert spooled(spool) == [b"Subject: dots\r\n\r\nline\r\n.hidden\r\n.two\r\n"]
    assert [p.suffix for p in spool.directory.iterdir()] == [".msg"]  # no temporary name left


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_a_line_of_the_readers_limit_is_taken_whole(ingress, extra):
    """aiosmtpd's reader gives lines up to its limit at once and longer ones in parts; either
    way the line arrives byte for byte, and its stuffed dot comes off once."""
    port, spool = ingress
    limit = IngressSMTP.line_length_limit
    line = b"." + b"x" * (limit + extra - 3) + b"\r\n"  # `limit + extra` bytes with its CRLF
    assert len(line) == limit + extra
    answer = send_data(port, [b"Subject: long\r\n\r\n", line[:5000], line[5000:], b".\r\n"])
    assert answer.startswith(b"250 2.0.0"), answer
    assert spooled(spool) == [b"Subject: long\r\n\r\n" + line[1:]]


def test_a_message_of_exactly_the_size_limit_is_accepted(ingress):
    port, spool = ingress
    head = b"Subject: just fits\r\n\r\n"
    body = (b"y" * 998 + b"\r\n") * ((LIMIT - len(head)) // 1000)
    message = head + body + b"z" * (LIMIT - len(head) - len(body) - 2) + b"\r\n"
    assert len(message) == LIMIT
    answer = send_data(port, [message, b".\r\n"])
    assert answer.startswith(b"250 2.0.0"), answer
    assert spooled(spool) == [message]


def test_a_message_over_the_size_limit_is_refused_and_nothing_is_spooled(ingress):
    port, spool = ingress
    message = b"Subject: too big\r\n\r\n" + (b"y" * 998 + b"\r\n") * (LIMIT // 1000 + 1)
    answer = send_data(port, [message, b".\r\n"])
    assert answer.startswith(b"552 5.3.4"), answer
    assert not list(spool.directory.iterdir())  # no spool file, no partial one


def test_commands_sent_with_the_final_dot_are_answered(ingress):
    """A pipelining client sends the next transaction in the same write as the final dot:
    the DATA reader reads past the dot and gives the rest back to the command loop."""
    port, spool = ingress
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        reply(client)
        client.sendall(b"EHLO client.test\r\nMAIL FROM:<a@shop.test>\r\nRCPT TO:<b@x.test>\r\n")
        answers = b""
        while answers.count(b"\r\n250 ") + answers.startswith(b"250 ") < 3:
            answers += client.recv(4096)
        client.sendall(b"DATA\r\n")
        assert reply(client).startswith(b"354")
        client.sendall(
            b"Subject: one\r\n\r\nfirst\r\n.\r\nMAIL FROM:<c@shop.test>\r\nRCPT TO:<d@x.test>\r\n"
            b"DATA\r\n"
        )
        answers = b""
        while answers.count(b"\r\n") < 4:
            answers += client.recv(4096)
        codes = [line[:3] for line in answers.split(b"\r\n") if line]
        assert codes == [b"250", b"250", b"250", b"354"], answers
        client.sendall(b"..two\r\n.\r\nQUIT\r\n")
        answers = b""
        while answers.count(b"\r\n") < 2:
            answers += client.recv(4096)
        assert [line[:3] for line in answers.split(b"\r\n") if line] == [b"250", b"221"]
    assert sorted(spooled(spool)) == [b".two\r\n", b"Subject: one\r\n\r\nfirst\r\n"]


def test_a_session_keeps_one_idle_timer_moved_by_its_commands(tmp_path):
    """Each command and each piece of DATA moves the session's idle deadline; the timer is
    armed once, not cancelled and armed again each time, and it closes the session only once
    the session has been idle for the whole timeout."""

    async def session() -> None:
        loop = asyncio.get_running_loop()
        defences = Defences.counting(SmtpLimits(), SystemClock())
        server = IngressSMTP(
            Spooling(Spool(tmp_path / "spool")),
            gate=defences.gate,
            guard=defences.guard,
            data_slots=asyncio.Semaphore(1),
        )
        timed_out = loop.create_future()
        server._timeout_cb = lambda: timed_out.set_result(loop.time())
        server._timeout_duration = 0.3
        server._reset_timeout()
        timer = server._timeout_handle
        for _ in range(100):
            server._reset_timeout()
        assert server._timeout_handle is timer
        for _ in range(6):
            await asyncio.sleep(0.1)  # active for twice the idle timeout
            server._reset_timeout()
        assert not timed_out.done()
        idle_since = loop.time()
        assert await asyncio.wait_for(timed_out, 5) >= idle_since + 0.3 - 0.001

    asyncio.run(session())
