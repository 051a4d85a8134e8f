"""File helpers shared by the local adapters."""

from __future__ import annotations

import os
import re
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")


def safe_name(text: str) -> str:
    """A file name that cannot escape its directory or confuse a shell."""
    cleaned = _UNSAFE.sub("_", text).lstrip(".") or "_"
    return cleaned[:200]


def write_atomically(path: Path, body: bytes, *, durable: bool = False) -> None:
    """Readers see the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as stream:
            stream.write(body)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk must not keep half a file's space
        raise


def append_line(path: Path, line: bytes) -> None:
    """One write() of one line in append mode: readers never see half a record, and several
    processes can share the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line + b"\n")
    finally:
        os.close(fd)
