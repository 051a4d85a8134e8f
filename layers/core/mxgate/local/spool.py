"""The ingress spool: each accepted message is one fsynced file before `250` is answered.

File layout: one line of JSON (the envelope), then the message bytes exactly as received.
A file stays until its message has been through the rule set and the workflow, so a crash
at any point is recovered by replaying what is left on start.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from mxgate.records import Envelope

_SUFFIX = ".msg"
_PARTIAL = ".partial"


class Spool:
    def __init__(
        self, directory: Path, keep: Callable[[Path, Envelope], None] | None = None
    ) -> None:
        self.directory = directory
        self.keep = keep  # called with each new spool file: the replay history links it
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, envelope: Envelope, raw: bytes) -> Path:
        """Durably store one message: written under a temporary name and fsynced, renamed, and
        the directory fsynced, so the file the workers see is always whole and survives a crash."""
        path = self.directory / f"{envelope.message_id}{_SUFFIX}"
        partial = self.directory / f"{envelope.message_id}{_PARTIAL}"
        header = envelope.model_dump_json().encode() + b"\n"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, header)
            view = memoryview(raw)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            partial.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(partial, path)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        if self.keep is not None:
            self.keep(path, envelope)
        return path

    def discard_partial(self) -> None:
        """Remove files a crash left half-written: none of them was ever answered 250."""
        for partial in self.directory.glob(f"*{_PARTIAL}"):
            partial.unlink(missing_ok=True)

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
