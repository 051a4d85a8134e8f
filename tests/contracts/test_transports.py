"""The Transport port, as the Deliver step relies on it: one result per recipient it was
given, accepted ones with a detail, refusals told transient (4xx, throttling) from permanent
(5xx, a rejected message), and the bytes handed on as given. The scripted fake, SMTP to a
mailbox host on loopback, and SES sending on moto."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP
from moto.core.exceptions import ServiceException
from moto.sesv2.models import SESV2Backend

from mxgate.adapters.aws.bootstrap import ses_client
from mxgate.adapters.aws.ses import SesTransport
from mxgate.delivery.smtp import SmtpTarget, SmtpTransport
from mxgate.local.mailbox import MaildirHandler
from mxgate.message.raw import RawMessage
from mxgate.ports import SendResult
from mxgate.sandbox.stack import sent_messages
from tests.fakes import RecordingTransport

SENDER = "ceo@nutrition.co"  # the template's verified identity (SES sends only from those)
RAW = b"From: ceo@nutrition.co\r\nTo: alice@nutrition.co\r\nSubject: contract\r\n\r\nbody\r\n"


class SesRefusal(ServiceException):
    """An SES error as moto serialises it."""


class Subject:
    """One transport, how to make it refuse a recipient, and what reached the other side."""

    def __init__(
        self,
        transport: Any,
        refuse: Callable[[str, bool], None],
        received: Callable[[str], list[bytes]],
    ) -> None:
        self.transport = transport
        self.refuse = refuse  # (recipient, transient)
        self.received = received


@pytest.fixture
def mailbox_host(tmp_path: Path) -> Iterator[tuple[MaildirHandler, int]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    handler = MaildirHandler(tmp_path / "mailboxes", "workspace")

    async def listen() -> asyncio.Server:
        return await loop.create_server(lambda: SMTP(handler), "127.0.0.1", 0)

    server = asyncio.run_coroutine_threadsafe(listen(), loop).result(10)
    yield handler, int(server.sockets[0].getsockname()[1])

    async def shutdown() -> None:
        server.close()
        await server.wait_closed()

    asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _recording() -> Subject:
    fake = RecordingTransport()

    def refuse(recipient: str, transient: bool) -> None:
        reply = "451 4.3.0 later" if transient else "550 5.1.1 no such user"
        fake.script[recipient] = [SendResult(ok=False, transient=transient, detail=reply)]

    return Subject(fake, refuse, lambda recipient: fake.delivered.get(recipient, []))


def _smtp(request: pytest.FixtureRequest) -> Subject:
    handler, port = request.getfixturevalue("mailbox_host")
    transport = SmtpTransport(SmtpTarget("127.0.0.1", port, helo="mxgate.test", timeout=10))
    request.addfinalizer(transport.close)

    def refuse(recipient: str, transient: bool) -> None:
        reply = "451 4.3.0 later" if transient else "550 5.1.1 no such user"
        (handler.directory / f".reply-{recipient}").write_text(reply)

    def received(recipient: str) -> list[bytes]:
        folder = handler.directory / recipient / "new"
        files = sorted(folder.iterdir()) if folder.is_dir() else []
        return [
            f.read_bytes().split(b"\r\n", 2)[2] for f in files
        ]  # after Return-Path, Delivered-To

    return Subject(transport, refuse, received)


def _ses(request: pytest.FixtureRequest) -> Subject:
    request.getfixturevalue("aws")
    monkeypatch = request.getfixturevalue("monkeypatch")
    refused: dict[str, bool] = {}
    send = SESV2Backend.send_raw_email

    def answering(backend: Any, source: Any, destinations: list[str], raw_data: str) -> Any:
        for recipient, transient in refused.items():
            if recipient in destinations:
                if transient:
                    raise SesRefusal("TooManyRequestsException", "Maximum sending rate exceeded.")
                raise SesRefusal("MessageRejected", "Message rejected.")
        return send(backend, source, destinations, raw_data)

    monkeypatch.setattr(SESV2Backend, "send_raw_email", answering)

    def received(recipient: str) -> list[bytes]:
        return [
            m.raw_data.encode()
            for m in sent_messages()
            if recipient in m.destinations and getattr(m, "raw_data", None)
        ]

    return Subject(SesTransport(ses_client()), refused.__setitem__, received)


@pytest.fixture(params=["fake", "smtp", "ses"])
def subject(request: pytest.FixtureRequest) -> Subject:
    if request.param == "smtp":
        return _smtp(request)
    if request.param == "ses":
        return _ses(request)
    return _recording()


def test_accepted_recipients_get_the_bytes_as_given(subject):
    recipients = ["alice@nutrition.co", "bob@nutrition.co"]
    results = subject.transport.send(SENDER, recipients, RawMessage.of(RAW))
    assert set(results) == set(recipients)
    assert all(r.ok and r.detail for r in results.values())
    for recipient in recipients:
        assert subject.received(recipient)[-1] == RAW


@pytest.mark.parametrize("transient", [True, False], ids=["transient", "permanent"])
def test_a_refusal_says_whether_it_may_pass(subject, transient):
    subject.refuse("carol@nutrition.co", transient)
    (result,) = subject.transport.send(SENDER, ["carol@nutrition.co"], RawMessage.of(RAW)).values()
    assert (result.ok, result.transient) == (False, transient)
    assert result.detail
    assert subject.received("carol@nutrition.co") == []


def test_it_says_what_it_takes(subject):
    assert isinstance(subject.transport.requires_verified_sender, bool)
    limit = subject.transport.max_message_bytes
    assert limit is None or limit > len(RAW)
