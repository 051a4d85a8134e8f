"""The ingress spool: each accepted message is one fsynced file before `250` is answered.

File layout: one line of JSON (the envelope), then the message bytes exactly as received.
A file stays until its message has been through the rule set and the workflow, so a crash
at any point is recovered by replaying what is left on start.
"""

from __future__ import annotations

import os
from pathlib import Path

from mxgate.workflow.model import Envelope

_SUFFIX = ".msg"


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, envelope: Envelope, raw: bytes) -> Path:
        """Durably store one message. On ext4 and xfs the fsync also commits the new name."""
        path = self.directory / f"{envelope.message_id}{_SUFFIX}"
        header = envelope.model_dump_json().encode() + b"\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, header)
            view = memoryview(raw)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        return path

    @staticmethod
    def read(path: Path) -> tuple[Envelope, bytes]:
        data = path.read_bytes()
        newline = data.index(b"\n")
        return Envelope.model_validate_json(data[:newline]), data[newline + 1 :]

    def pending(self) -> list[Path]:
        """Spooled messages not yet finished, oldest first (ids sort by time)."""
        return sorted(self.directory.glob(f"*{_SUFFIX}"))

    @staticmethod
    def remove(path: Path) -> None:
        path.unlink(missing_ok=True)
