"""The mailbox hosts' storage: forced replies seen as soon as their files are written, every
copy of a message or none, small messages stored on the loop and large ones in a thread."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from aiosmtpd.smtp import Envelope

from mxgate.local import mailbox
from mxgate.local.mailbox import MaildirHandler

MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"


def _settle(directory: Path) -> None:
    """The directory's mtime a minute old, as a cache by mtime would trust it."""
    status = directory.stat()
    os.utime(directory, ns=(status.st_atime_ns, status.st_mtime_ns - 60_000_000_000))


def test_a_reply_file_is_seen_as_soon_as_it_is_written_and_gone_once_removed(tmp_path):
    handler = MaildirHandler(tmp_path, "workspace")
    _settle(handler.directory)
    assert handler.forced_reply("bob@nutrition.co") is None
    assert handler.forced_reply("bob@nutrition.co") is None
    (handler.directory / ".reply-bob@nutrition.co").write_text("550 5.1.1 no such user\n")
    assert handler.forced_reply("bob@nutrition.co") == "550 5.1.1 no such user"
    assert handler.forced_reply("alice@nutrition.co") is None
    _settle(handler.directory)
    (handler.directory / ".reply-bob@nutrition.co").write_text("451 4.3.0 later")  # new text
    assert handler.forced_reply("bob@nutrition.co") == "451 4.3.0 later"
    (handler.directory / ".reply").write_text("421 4.3.2 down")
    assert handler.forced_reply("alice@nutrition.co") == "421 4.3.2 down"
    assert handler.forced_reply("bob@nutrition.co") == "451 4.3.0 later"  # its own first
    (handler.directory / ".reply").unlink()
    (handler.directory / ".reply-bob@nutrition.co").unlink()
    assert handler.forced_reply("alice@nutrition.co") is None
    assert handler.forced_reply("bob@nutrition.co") is None


def test_a_reply_file_is_seen_though_the_directorys_mtime_says_nothing_changed(tmp_path):
    """A file made in the clock tick of an earlier look can leave the directory's mtime as it
    was (shown here by putting the mtime back): the reply files are looked for each time."""
    handler = MaildirHandler(tmp_path, "workspace")
    before = handler.directory.stat()
    assert handler.forced_reply() is None
    (handler.directory / ".reply").write_text("451 4.3.0 later")
    os.utime(handler.directory, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert handler.forced_reply() == "451 4.3.0 later"


def _envelope(*recipients: str, content: bytes = MESSAGE) -> Envelope:
    envelope = Envelope()
    envelope.mail_from = "sender@example.org"
    envelope.rcpt_tos = list(recipients)
    envelope.original_content = content
    return envelope


def _data(handler: MaildirHandler, envelope: Envelope) -> str:
    return asyncio.run(handler.handle_DATA(None, None, envelope))  # type: ignore[arg-type]


def test_every_copy_is_stored_or_none_and_a_storage_failure_is_answered_452(tmp_path):
    handler = MaildirHandler(tmp_path, "workspace")
    (handler.directory / "bob@nutrition.co").write_text("not a mailbox")  # its mkdir fails
    reply = _data(handler, _envelope("alice@nutrition.co", "bob@nutrition.co"))
    assert reply.startswith("452 4.3.1 Mailbox storage unavailable")
    assert list((handler.directory / "alice@nutrition.co" / "new").iterdir()) == []
    assert list((handler.directory / "alice@nutrition.co" / "tmp").iterdir()) == []


@pytest.mark.parametrize("size", [1000, mailbox.STORE_ON_LOOP + 1])
def test_a_small_message_is_stored_on_the_loop_and_a_large_one_in_a_thread(tmp_path, size):
    handler = MaildirHandler(tmp_path, "workspace")
    threads = set()
    deliver = handler.maildir.deliver_bytes

    def noting(sender: str, recipient: str, raw: bytes) -> Path:
        threads.add(threading.current_thread())
        return deliver(sender, recipient, raw)

    handler.maildir.deliver_bytes = noting  # type: ignore[method-assign]
    content = MESSAGE + b"x" * (size - len(MESSAGE))
    assert _data(handler, _envelope("alice@nutrition.co", content=content)).startswith("250")
    on_loop = threads == {threading.main_thread()}
    assert on_loop is (size <= mailbox.STORE_ON_LOOP)
    (stored,) = (handler.directory / "alice@nutrition.co" / "new").iterdir()
    assert stored.read_bytes() == (
        b"Return-Path: <sender@example.org>\r\nDelivered-To: alice@nutrition.co\r\n" + content
    )
