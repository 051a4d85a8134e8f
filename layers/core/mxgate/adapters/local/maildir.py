"""Maildir on disk: what the local mailbox hosts and WorkMail stand-ins write.

`<root>/<mailbox>/new/<unique name>`, written under tmp/ and renamed into new/, with
`Return-Path:` and `Delivered-To:` prepended as a delivery agent does, so the envelope the
gateway used can be seen.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

from mxgate.adapters.local.files import safe_name

_hostname = socket.gethostname()


class Maildir:
    """Mailboxes by recipient under one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._count = itertools.count(1)  # unique names across the threads that store

    def mailbox(self, recipient: str) -> Path:
        return self.directory / safe_name(recipient.casefold())

    def find(self, recipient: str, needle: bytes) -> Path | None:
        """The newest message in a recipient's mailbox whose first 8 KB hold `needle`."""
        new = self.mailbox(recipient) / "new"
        if not new.is_dir():
            return None
        for path in sorted(new.iterdir(), reverse=True):
            if needle in path.read_bytes()[:8192]:
                return path
        return None

    def store(self, recipient: str, message: bytes) -> Path:
        """Maildir delivery: write under tmp/, then rename into new/."""
        mailbox = self.mailbox(recipient)
        for sub in ("tmp", "new", "cur"):
            (mailbox / sub).mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}.P{os.getpid()}Q{next(self._count)}.{_hostname}"
        temporary = mailbox / "tmp" / name
        temporary.write_bytes(message)
        final = mailbox / "new" / name
        temporary.rename(final)
        return final

    def deliver(self, envelope_sender: str, recipient: str, raw: bytes) -> Path:
        trace = f"Return-Path: <{envelope_sender}>\r\nDelivered-To: {recipient}\r\n"
        return self.store(recipient, trace.encode() + raw)


class WorkMailFolders:
    """The Mailboxes port on one machine: `<root>/<organization>/<recipient>/new/`, the
    organization taken from the mailbox ARN."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def deliver(self, mailbox_arn: str, envelope_sender: str, recipient: str, raw: bytes) -> str:
        organization = safe_name(mailbox_arn.rsplit("/", 1)[-1].rsplit(":", 1)[-1])
        Maildir(self.root / organization).deliver(envelope_sender, recipient, raw)
        return f"{self.root.name}/{organization}/"
