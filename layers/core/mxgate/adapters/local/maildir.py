"""Maildir on disk: what the local mailbox hosts and WorkMail stand-ins write.

`<root>/<mailbox>/new/<unique name>`, written under tmp/ and renamed into new/, with
`Return-Path:` and `Delivered-To:` prepended as a delivery agent does, so the envelope the
gateway used can be seen. A mailbox is named by its recipient, encoded so that no two
recipients share one and the name gives the recipient back (`mailbox_name`).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote

from mxgate.adapters.local.files import safe_name, write_all
from mxgate.message.raw import RawMessage
from mxgate.message.text import shown

_hostname = socket.gethostname()
_KEPT = re.compile(r"[a-z0-9@.+_-]")  # written as they are; anything else as %XX of its UTF-8
_ALL_KEPT = re.compile(r"[a-z0-9@.+_-]{1,255}")  # a name of kept characters that fits
_MAX_NAME = 255  # bytes in a file name (ext4, xfs, tmpfs)


def mailbox_name(recipient: str) -> str:
    """The mailbox directory of a recipient (case does not matter, as in the directory): plain
    addresses stay as they are (`alice@nutrition.co`); any other character, `%` included, is
    percent-encoded, so `jürg@` (`j%c3%bcrg@`) and `j_rg@` differ, as do `user%o@`
    (`user%25o@`) and `user_o@`, and `recipient_of` reverses it. A name too long for the file
    system ends in `~` and a digest of the recipient instead (`~` is never written plain)."""
    address = recipient.casefold()
    if _ALL_KEPT.fullmatch(address) and not address.startswith("."):
        return address  # the usual address, at once (a regular expression a character else)
    encoded = "".join(
        c if _KEPT.fullmatch(c) else "".join(f"%{b:02x}" for b in c.encode("utf-8", "replace"))
        for c in address
    )
    if encoded.startswith("."):  # never a hidden directory, never `..`
        encoded = "%2e" + encoded[1:]
    if len(encoded) > _MAX_NAME:
        digest = hashlib.sha256(address.encode("utf-8", "replace")).hexdigest()[:32]
        start = encoded[: _MAX_NAME - 33]
        if "%" in start[-2:]:  # never half an escape
            start = start[: start.rindex("%")]
        encoded = f"{start}~{digest}"
    return encoded


def recipient_of(name: str) -> str:
    """The recipient a mailbox directory holds (for a digest-named one, its readable start)."""
    return unquote(name.split("~", 1)[0], errors="replace")


class Maildir:
    """Mailboxes by recipient under one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._count = itertools.count(1)  # unique names across the threads that store

    def mailbox(self, recipient: str) -> Path:
        return self.directory / mailbox_name(recipient)

    def find(self, recipient: str, needle: bytes) -> Path | None:
        """The newest message in a recipient's mailbox whose first 8 KB hold `needle`."""
        new = self.mailbox(recipient) / "new"
        if not new.is_dir():
            return None
        for path in sorted(new.iterdir(), reverse=True):
            if needle in path.read_bytes()[:8192]:
                return path
        return None

    def store(self, recipient: str, message: Iterable[bytes]) -> Path:
        """Maildir delivery: the message's chunks written under tmp/, then renamed into new/."""
        # each path one string, parsed once; the mailbox's directories made only when its
        # first message finds none (three mkdir calls a delivery fewer)
        mailbox = f"{self.directory}/{mailbox_name(recipient)}"
        name = f"{time.time_ns()}.P{os.getpid()}Q{next(self._count)}.{_hostname}"
        temporary = f"{mailbox}/tmp/{name}"  # noqa: S108 -- the Maildir's tmp/
        final = f"{mailbox}/new/{name}"
        try:
            descriptor = os.open(temporary, _CREATE, 0o666)
        except FileNotFoundError:
            # tmp/ last: another thread's first message, written once tmp/ is there, must find
            # new/ there too for its rename
            for sub in ("new", "cur", "tmp"):
                Path(f"{mailbox}/{sub}").mkdir(parents=True, exist_ok=True)
            descriptor = os.open(temporary, _CREATE, 0o666)
        try:
            try:
                _write_chunks(descriptor, message)
            finally:
                os.close(descriptor)
            os.rename(temporary, final)
        except OSError:
            with contextlib.suppress(OSError):  # a full disk keeps no half-written copy
                os.unlink(temporary)
            raise
        return Path(final)

    def deliver(self, envelope_sender: str, recipient: str, raw: RawMessage) -> Path:
        # streamed, a chunk a write: the message is never whole in memory here
        return self.store(
            recipient, itertools.chain([trace_fields(envelope_sender, recipient)], raw.chunks())
        )

    def deliver_bytes(self, envelope_sender: str, recipient: str, raw: bytes) -> Path:
        """`deliver` of a message in memory: the same file, its bytes written as they are
        (the header section needs no finding, nothing is put between it and the body)."""
        return self.store(recipient, [trace_fields(envelope_sender, recipient), raw])


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


def trace_fields(envelope_sender: str, recipient: str) -> bytes:
    """`Return-Path:` and `Delivered-To:`: the envelope as the ingress took it; a control
    character is never written raw."""
    trace = f"Return-Path: <{shown(envelope_sender)}>\r\nDelivered-To: {shown(recipient)}\r\n"
    return trace.encode("utf-8", "backslashreplace")


def _write_chunks(descriptor: int, chunks: Iterable[bytes]) -> None:
    """The chunks one after another: a list's (a few pieces in memory) in one `writev`, what
    a short write left of them after it."""
    if isinstance(chunks, list):
        written = os.writev(descriptor, chunks)
        for chunk in chunks:
            if written < len(chunk):
                write_all(descriptor, memoryview(chunk)[written:])
            written = max(0, written - len(chunk))
        return
    for chunk in chunks:
        write_all(descriptor, chunk)


class WorkMailFolders:
    """The Mailboxes port on one machine: `<root>/<organization>/<recipient>/new/`, the
    organization taken from the mailbox ARN."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def deliver(
        self, mailbox_arn: str, envelope_sender: str, recipient: str, raw: RawMessage
    ) -> str:
        organization = safe_name(mailbox_arn.rsplit("/", 1)[-1].rsplit(":", 1)[-1])
        Maildir(self.root / organization).deliver(envelope_sender, recipient, raw)
        return f"{self.root.name}/{organization}/"
