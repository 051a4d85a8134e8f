"""The ingress as an attacker finds it, against `mxgate run`: recipients checked at RCPT, bad
bytes refused with a 5xx, AUTH guessing cut off, connection limits answered 421, a burst of
1,000 connections each answered, STARTTLS once, a dropped handshake quiet, DATA taken
exactly."""

from __future__ import annotations

import asyncio
import base64
import json
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_gateway import only_file
from tests.support import RunningGateway, local_config, start_gateway, tls_context, wait_for

pytestmark = pytest.mark.e2e

PASSWORD = "local-submission-password"  # config/local.yaml's SubmissionSecret


def limits(**values: Any) -> dict[str, Any]:
    """The `smtp:` section of local.yaml with free ports and these limits."""
    return {"smtp": {"host": "127.0.0.1", "port": 0, "auth_port": 0, "limits": values}}


class Session:
    """A raw SMTP session on loopback: bytes in, replies out (multi-line ones whole)."""

    def __init__(self, port: int, *, tls: bool = True) -> None:
        self.socket: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.stream = self.socket.makefile("rb")
        self.greeting = self.reply()
        if tls and self.greeting.startswith(b"220"):
            assert self.send(b"EHLO client.example").startswith(b"250")
            assert self.send(b"STARTTLS").startswith(b"220")
            self.socket = tls_context().wrap_socket(self.socket)
            self.stream = self.socket.makefile("rb")
            assert self.send(b"EHLO client.example").startswith(b"250")

    def reply(self) -> bytes:
        line = self.stream.readline()
        while line[3:4] == b"-":
            line = self.stream.readline()
        return line

    def send(self, line: bytes) -> bytes:
        self.socket.sendall(line + b"\r\n")
        return self.reply()

    def data(self, content: bytes) -> bytes:
        """DATA with `content` sent as it is (no stuffing added), then the end of data."""
        assert self.send(b"DATA").startswith(b"354")
        self.socket.sendall(content + b".\r\n")
        return self.reply()

    def closed(self) -> bool:
        """Whether the server closed the connection (EOF); the session is closed either way."""
        ended = self.stream.read() == b""
        self.close()
        return ended

    def close(self) -> None:
        self.stream.close()
        self.socket.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """One gateway with the shipped configuration for the tests that change nothing of it."""
    directory = tmp_path_factory.mktemp("defences")
    gateway = start_gateway(directory / "home", local_config(directory))
    yield gateway
    gateway.stop()


def without_tracebacks(home: Path) -> None:
    for log in (home / "gateway.out", home / "logs" / "errors.log"):
        if log.exists():
            assert "Traceback" not in log.read_text(errors="replace"), log


def test_rcpt_refuses_unknown_users_source_routes_and_bad_bytes(shipped):
    gateway = shipped
    session = Session(gateway.smtp_port)
    assert session.send(b"MAIL FROM:<sender@example.org>").startswith(b"250")
    replies = {
        rcpt: session.send(b"RCPT TO:<" + rcpt + b">")
        for rcpt in (
            b"alice@nutrition.co",
            b"alice+news@nutrition.co",
            b"orders@customer-support.nutrition.co",
            b"no-such-user@nutrition.co",
            b"nobody@customer-support.nutrition.co",
            b"victim%example.org@nutrition.co",
            b"example.org!victim@nutrition.co",
            b'"victim@example.org"@nutrition.co',
            b"someone@elsewhere.example",
            b"caf\xe9@nutrition.co",  # Latin-1, not UTF-8
            b"bo\x00b@nutrition.co",
            b"bo\x07b@nutrition.co",
        )
    }
    session.close()
    for accepted in list(replies)[:3]:
        assert replies[accepted].startswith(b"250 2.1.5"), accepted
    assert replies[b"no-such-user@nutrition.co"].startswith(b"550 5.1.1")
    assert replies[b"nobody@customer-support.nutrition.co"].startswith(b"550 5.1.1")
    for source_route in list(replies)[5:8]:
        assert replies[source_route].startswith(b"550 5.7.1"), source_route
    assert replies[b"someone@elsewhere.example"].startswith(b"550 5.7.1")
    assert (
        replies[b"caf\xe9@nutrition.co"] == b"501 5.1.3 Bad recipient address syntax: not UTF-8\r\n"
    )
    for control in list(replies)[10:]:
        assert replies[control].startswith(b"501 5.1.3"), control
    # each evaluated recipient logged as Mail Manager's traffic-policy record: valid JSON lines
    records = {
        record["recipient"]: record
        for line in (gateway.home / "logs" / "traffic-policy.jsonl").read_text().splitlines()
        if (record := json.loads(line))
    }
    assert records["alice+news@nutrition.co"]["verdict"] == "ACCEPT"
    assert records["no-such-user@nutrition.co"]["verdict"] == "REJECT"
    assert "bo\x00b@nutrition.co" not in records  # refused before any policy saw it
    without_tracebacks(gateway.home)


def test_a_bad_sender_gets_a_5xx_never_a_451(shipped):
    gateway = shipped
    session = Session(gateway.smtp_port)
    assert session.send(b"MAIL FROM:<\xff\xfe@example.org>").startswith(b"501 5.1.7")
    assert session.send(b"MAIL FROM:<a\x00b@example.org>").startswith(b"501 5.1.7")
    assert session.send(b"MAIL FROM:<fine@example.org>").startswith(b"250")
    session.close()
    without_tracebacks(gateway.home)


def auth_plain(user: str, password: str) -> bytes:
    return b"AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode())


def test_auth_guessing_is_delayed_then_cut_off_per_client(gateway_factory):
    gateway = gateway_factory(**limits(auth_failures=3, auth_failure_delay=0.05, auth_lockout=600))
    user = "SubmissionIngressPoint"
    port = gateway.ports["smtp_auth"]
    guesser = Session(port)
    assert guesser.send(auth_plain(user, "guess-1")).startswith(b"535 5.7.8")
    assert guesser.send(auth_plain(user, "guess-2")).startswith(b"535 5.7.8")
    assert guesser.send(auth_plain(user, "guess-3")).startswith(b"421 4.7.0")
    assert guesser.closed()
    # a new session from the same address is refused even with the right password
    again = Session(port)
    assert again.send(auth_plain(user, PASSWORD)).startswith(b"421 4.7.0")
    assert again.closed()
    log = (gateway.home / "gateway.out").read_text()
    assert "authentication failed client_ip=127.0.0.1 failures=3 cut_off=True" in log


def test_the_right_password_still_works_for_a_client_that_has_not_been_cut_off(gateway_factory):
    gateway = gateway_factory(**limits(auth_failures=3, auth_failure_delay=0.01))
    session = Session(gateway.ports["smtp_auth"])
    assert session.send(auth_plain("SubmissionIngressPoint", "typo")).startswith(b"535")
    assert session.send(auth_plain("SubmissionIngressPoint", PASSWORD)).startswith(b"235")
    session.close()


def test_starttls_twice_is_503_and_a_dropped_handshake_logs_no_traceback(shipped):
    gateway = shipped
    session = Session(gateway.smtp_port)
    assert session.send(b"STARTTLS") == b"503 5.5.1 TLS is already active\r\n"
    assert session.send(b"NOOP").startswith(b"250")
    session.close()
    for goodbye in (b"", b"\x16\x03\x01\x00\x05hello", b"not tls at all\r\n" * 20):
        with socket.create_connection(("127.0.0.1", gateway.smtp_port), timeout=10) as raw:
            stream = raw.makefile("rb")
            stream.readline()
            raw.sendall(b"EHLO x.example\r\n")
            while stream.readline()[3:4] == b"-":
                pass
            raw.sendall(b"STARTTLS\r\n")
            assert stream.readline().startswith(b"220")
            raw.sendall(goodbye)  # then gone in the middle of the handshake
    fresh = Session(gateway.smtp_port)  # the gateway serves on
    assert fresh.send(b"NOOP").startswith(b"250")
    fresh.close()
    wait_for(lambda: "TLS handshake not completed" in (gateway.home / "gateway.out").read_text())
    without_tracebacks(gateway.home)


def test_nul_and_bare_cr_are_refused_and_long_lines_and_lone_dots_kept(shipped):
    gateway = shipped
    session = Session(gateway.smtp_port)

    def send(content: bytes) -> bytes:
        assert session.send(b"MAIL FROM:<sender@example.org>").startswith(b"250")
        assert session.send(b"RCPT TO:<alice@nutrition.co>").startswith(b"250")
        return session.data(content)

    smuggled = b"Subject: one\r\n\r\nhi\r.\r\nMAIL FROM:<x@evil.example>\r\n"
    assert send(smuggled).startswith(b"550 5.6.0 Message refused: a bare CR")
    injected = b"Subject: two\rBcc: everyone@nutrition.co\r\n\r\nhi\r\n"
    assert send(injected).startswith(b"550 5.6.0")
    assert send(b"Subject: three\r\n\r\nnul \x00 here\r\n").startswith(
        b"550 5.6.0 Message refused: a NUL"
    )
    long_line = b"<p>" + b"machine-written html " * 300 + b"</p>"  # 6,307 octets
    kept = b"Subject: four\r\n\r\n" + long_line + b"\r\nbefore\r\n.\nafter\r\n..stuffed\r\n"
    assert send(kept).startswith(b"250 2.0.0")
    session.close()
    delivered = only_file(gateway.mailbox("workspace", "alice@nutrition.co")).read_bytes()
    assert b"Subject: four" in delivered  # the refused three never got in
    assert long_line + b"\r\n" in delivered
    assert b"\r\nbefore\r\n.\r\nafter\r\n.stuffed\r\n" in delivered  # the dot kept, CRLF'd
    without_tracebacks(gateway.home)


def test_connections_over_the_per_client_limit_get_421_and_are_freed(gateway_factory):
    gateway = gateway_factory(**limits(max_connections_per_client=3))
    held = [Session(gateway.smtp_port, tls=False) for _ in range(3)]
    assert all(s.greeting.startswith(b"220") for s in held)
    over = Session(gateway.smtp_port, tls=False)
    assert over.greeting == b"421 4.7.0 Too many connections from your address, try again later\r\n"
    assert over.closed()
    held.pop().close()

    def greeted() -> bool:
        late = Session(gateway.smtp_port, tls=False)
        late.close()
        return late.greeting.startswith(b"220")

    wait_for(greeted, timeout=10)
    for session in held:
        session.close()
    assert "connections refused over the limit" in (gateway.home / "gateway.out").read_text()


def test_an_idle_session_is_told_421_and_closed(gateway_factory):
    gateway = gateway_factory(**limits(idle_timeout=0.5))
    session = Session(gateway.smtp_port, tls=False)
    started = time.monotonic()
    assert session.reply() == b"421 4.4.2 Idle for too long, closing the connection\r\n"
    assert session.closed()
    assert time.monotonic() - started < 10  # told, not left hanging for the default 300 s


def test_a_session_idle_in_its_tls_handshake_is_closed_without_a_plain_text_reply(
    gateway_factory,
):
    """After `220` to STARTTLS the next bytes are TLS: a client that never starts its
    handshake is cut off at the idle limit with nothing written into the handshake."""
    gateway = gateway_factory(**limits(idle_timeout=0.5))
    session = Session(gateway.smtp_port, tls=False)
    assert session.send(b"EHLO client.example").startswith(b"250")
    assert session.send(b"STARTTLS").startswith(b"220")
    started = time.monotonic()
    assert session.stream.read() == b""  # EOF, and no 421 before it
    session.close()
    assert time.monotonic() - started < 10


async def _greetings(port: int, count: int) -> list[bytes]:
    """`count` connections at once; the first line each one is sent."""

    async def one() -> tuple[bytes, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return await reader.readline(), writer

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    lines = []
    for result in results:
        if isinstance(result, BaseException):
            lines.append(repr(result).encode())
            continue
        line, writer = result
        lines.append(line)
        writer.close()
    return lines


def test_a_burst_of_1000_connections_is_answered_220_or_421_every_one(gateway_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # this test holds 1,000 sockets
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    try:
        gateway = gateway_factory(**limits(max_connections=300, max_connections_per_client=1000))
        lines = asyncio.run(asyncio.wait_for(_greetings(gateway.smtp_port, 1000), timeout=120))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    greeted = sum(line.startswith(b"220 ") for line in lines)
    refused = sum(line.startswith(b"421 4.7.0 Too many connections") for line in lines)
    assert (greeted, refused) == (300, 700), {
        line for line in lines if line[:4] not in (b"220 ", b"421 ")
    }
    after = Session(gateway.smtp_port)  # and it serves on once the burst is gone
    assert after.send(b"NOOP").startswith(b"250")
    after.close()
    without_tracebacks(gateway.home)


def _two_tls_sessions(port: int) -> list[Session] | None:
    sessions = [Session(port), Session(port)]
    if all(s.greeting.startswith(b"220") for s in sessions):
        return sessions
    for session in sessions:
        session.close()
    return None


def test_tls_sessions_count_once_and_are_released(gateway_factory):
    gateway = gateway_factory(**limits(max_connections_per_client=2))
    for _ in range(3):  # STARTTLS re-enters the session: it must count once, and end once
        for session in wait_for(lambda: _two_tls_sessions(gateway.smtp_port), timeout=10):
            session.close()
