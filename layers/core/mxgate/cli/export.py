"""Writing exported messages: one `.eml` file each, or one mbox file (mboxrd: a `From ` line
per message, body lines that start with `>*From ` quoted with one more `>`), with a progress
bar on the operator's terminal."""

from __future__ import annotations

import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from mxgate.adapters.local.files import safe_name

_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)


class ExportDirectory:
    """Where an export lands: DIR/<archived message id>.eml, or DIR/archive.mbox."""

    def __init__(self, directory: Path, *, mbox: bool) -> None:
        self.directory = directory
        self.mbox = mbox
        self.written: list[Path] = []
        self.count = 0  # messages written
        directory.mkdir(parents=True, exist_ok=True)
        self.mbox_path = directory / "archive.mbox"
        if mbox:
            self.mbox_path.write_bytes(b"")
            self.written.append(self.mbox_path)

    def add(self, name: str, raw: bytes, *, envelope_from: str, received_at: datetime) -> None:
        self.count += 1
        if not self.mbox:
            path = self.directory / f"{safe_name(name)}.eml"
            path.write_bytes(raw)
            self.written.append(path)
            return
        stamp = time.asctime(received_at.astimezone(UTC).timetuple())
        body = raw.replace(b"\r\n", b"\n")
        body = _FROM_LINE.sub(rb">\1", body)
        if not body.endswith(b"\n"):
            body += b"\n"
        with self.mbox_path.open("ab") as mbox:
            mbox.write(f"From {envelope_from or 'MAILER-DAEMON'} {stamp}\n".encode())
            mbox.write(body + b"\n")


class ProgressBar:
    """`[#####.....] 12/40 messages` redrawn in place on a terminal; on anything else (a pipe,
    a log) only the last line is printed."""

    WIDTH = 30

    def __init__(self, total: int | None, what: str, stream: TextIO | None = None) -> None:
        self.total = total
        self.what = what
        self.stream = stream or sys.stderr
        self.done = 0
        self.live = self.stream.isatty()

    def _line(self) -> str:
        if not self.total:
            return f"{self.done} {self.what}"
        filled = self.WIDTH * self.done // self.total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        return f"[{bar}] {self.done}/{self.total} {self.what}"

    def step(self, count: int = 1) -> None:
        self.done += count
        if self.live:
            self.stream.write("\r" + self._line())
            self.stream.flush()

    def status(self, text: str) -> None:
        """A phase without a count (waiting for an export job)."""
        if self.live:
            self.stream.write("\r" + text.ljust(self.WIDTH + 20))
            self.stream.flush()

    def finish(self) -> None:
        self.stream.write(("\r" if self.live else "") + self._line() + "\n")
        self.stream.flush()
