"""One full parse a message in a worker: the rule set's Archive index parses the spooled
message, and the Process step of the same run reuses that parse for the same bytes (the
stored object WriteToS3 wrote); nothing of it is kept once the message's run is over."""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable
from typing import Any

import pytest

from mxgate.local.pipeline import receive_spooled
from mxgate.message import parse as parse_module
from mxgate.message.model import ParsedMessage, ParseLimits
from mxgate.records import Envelope, Outcome
from tests.worker_harness import RAW, mailbox, outcomes

ATTACHED = (
    b"From: a@shop.example\r\nTo: alice@nutrition.co\r\nSubject: invoice\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
    b"--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
    b"--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
    b'filename="invoice.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n'
    b"--b1--\r\n"
)


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each message the parser reads in full, in order."""
    seen: list[int] = []
    real: Callable[..., ParsedMessage] = parse_module.parse_stream

    def counted(stream: Any, **options: Any) -> ParsedMessage:
        parsed = real(stream, **options)
        seen.append(parsed.size)
        return parsed

    monkeypatch.setattr(parse_module, "parse_stream", counted)
    return seen


def spool(worker: Any, message_id: str, raw: bytes) -> Any:
    envelope = Envelope(
        message_id=message_id,
        mail_from="bounce@shop.example",
        recipients=["alice@nutrition.co"],
        helo="mx.shop.example",
        source_ip="192.0.2.1",
    )
    return worker.spool.write(envelope, raw)


def test_the_archive_index_and_process_share_one_parse(worker, parses):
    assert receive_spooled(worker, spool(worker, "01ONEPARSE", RAW)) == "done"
    assert outcomes(worker, "01ONEPARSE") == {"alice@nutrition.co": Outcome.DELIVERED}
    assert mailbox(worker, "workspace", "alice@nutrition.co")[0].endswith(RAW)
    assert parses == [len(RAW)]  # the Archive index's; Process took it
    # not held past the message: the same bytes are parsed again
    worker.mail_manager.actions.parses.parse(io.BytesIO(RAW))
    assert parses == [len(RAW), len(RAW)]


def test_a_message_with_an_attachment_to_keep_is_parsed_again_with_the_store(worker, parses):
    # the Archive index's parse keeps no attachment; Process must store it
    assert receive_spooled(worker, spool(worker, "01ATTACHED", ATTACHED)) == "done"
    assert parses == [len(ATTACHED), len(ATTACHED)]
    assert outcomes(worker, "01ATTACHED") == {"alice@nutrition.co": Outcome.DELIVERED}
    content = hashlib.sha256(base64.b64decode("JVBERi0xLjQK")).hexdigest()
    stored = [p for p in worker.setup.dirs.objects.rglob(content) if ".meta" not in p.parts]
    assert [p.read_bytes() for p in stored] == [base64.b64decode("JVBERi0xLjQK")]


def test_a_parse_serves_only_the_same_bytes_and_limits():
    once = parse_module.ParseOnce()
    other = RAW.replace(b"Subject: hi", b"Subject: ho")
    with once.one_message():
        first = once.parse(io.BytesIO(RAW))
        assert once.parse(io.BytesIO(RAW)) is first
        assert once.parse(io.BytesIO(RAW), limits=ParseLimits(max_parts=5)) is not first
        assert once.parse(io.BytesIO(other)).subject == "ho"
    assert once.parse(io.BytesIO(other)).subject == "ho"


def test_deliver_takes_the_bytes_process_read_not_the_base64_of_its_document(worker, monkeypatch):
    decoded: list[int] = []
    real = base64.b64decode

    def counted(data: Any, *args: Any, **kwargs: Any) -> bytes:
        decoded.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(base64, "b64decode", counted)
    assert receive_spooled(worker, spool(worker, "01KEPTBYTES", RAW)) == "done"
    assert outcomes(worker, "01KEPTBYTES") == {"alice@nutrition.co": Outcome.DELIVERED}
    assert mailbox(worker, "workspace", "alice@nutrition.co")[0].endswith(RAW)
    assert decoded == []  # the delivery document's inline copy was not decoded


def test_kept_bytes_serve_only_their_digest_and_only_inside_the_run():
    once = parse_module.ParseOnce()
    digest = hashlib.sha256(RAW).hexdigest()
    once.keep_bytes(RAW, digest)  # outside a run: not kept
    assert once.kept_bytes(digest) is None
    with once.one_message():
        once.keep_bytes(RAW, digest)
        assert once.kept_bytes(digest) is RAW
        assert once.kept_bytes(hashlib.sha256(b"other").hexdigest()) is None
    assert once.kept_bytes(digest) is None
