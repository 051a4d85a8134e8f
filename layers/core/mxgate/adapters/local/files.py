"""File helpers shared by the local adapters."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import threading
from functools import cache
from pathlib import Path
from typing import BinaryIO

_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")
_COPY_CHUNK = 1 << 16
_NO_LINKS = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP})
_TMPFILE = getattr(os, "O_TMPFILE", 0)  # Linux's
# what open(O_TMPFILE) fails with where the file system cannot make files with no name
_NO_TMPFILE = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})


def safe_name(text: str) -> str:
    """A file name that cannot escape its directory or confuse a shell."""
    cleaned = _UNSAFE.sub("_", text).lstrip(".") or "_"
    return cleaned[:200]


def write_atomically(path: Path, body: bytes | BinaryIO, *, durable: bool = False) -> int:
    """Readers see the old file or the new one, never half of it. `body`: bytes, or a stream
    copied in chunks. Returns the number of bytes written. `durable`: the file and its name
    are on disk when this returns (the file fsynced before its rename, then its directory)."""
    if not durable and unnamed_files():
        written = _write_unnamed(path, body)
        if written is not None:
            return written
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        file = temporary.open("wb")
    except FileNotFoundError:  # its directory's first file (one syscall less for the others)
        path.parent.mkdir(parents=True, exist_ok=True)
        file = temporary.open("wb")
    try:
        with file as stream:
            if isinstance(body, bytes):
                stream.write(body)
            else:
                shutil.copyfileobj(body, stream, _COPY_CHUNK)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
            size = stream.tell()
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk must not keep half a file's space
        raise
    if durable:
        fsync_directory(path.parent)
    return size


def fsync_directory(directory: str | Path) -> None:
    """The names made or removed in `directory` on disk (an fsync of the directory itself)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@cache
def unnamed_files() -> bool:
    """Whether files can be made with no name (Linux's O_TMPFILE) and linked from their
    descriptor (`/proc/self/fd`)."""
    return _TMPFILE != 0 and os.path.isdir("/proc/self/fd")


def open_unnamed(directory: str, mode: int = 0o666) -> int | None:
    """A file with no name in `directory`, open for writing (`link_descriptor` names it), or
    None where the file system makes none."""
    try:
        return os.open(directory, os.O_WRONLY | _TMPFILE, mode)
    except OSError as error:
        if error.errno in _NO_TMPFILE:
            return None
        raise


def _write_unnamed(path: Path, body: bytes | BinaryIO) -> int | None:
    """`write_atomically` through a file with no name, linked under `path` once written (a
    rename over the old file when there is one): no temporary name made in the directory and
    removed again, which for a directory of many files (the objects) was a search of its
    entries each, and no Python file object (four system calls). None: the file system makes
    no such files (the caller writes under a temporary name). Not for a durable write: its
    fsync must come after the link (see `Spool`'s `SpoolWriter.link`)."""
    directory = os.path.dirname(path) or "."
    try:
        fd = open_unnamed(directory)
    except FileNotFoundError:  # its directory's first file
        os.makedirs(directory, exist_ok=True)
        fd = open_unnamed(directory)
    if fd is None:
        return None
    try:
        size = 0
        if isinstance(body, bytes):
            write_all(fd, body)
            size = len(body)
        else:
            while chunk := body.read(_COPY_CHUNK):
                write_all(fd, chunk)
                size += len(chunk)
        try:
            link_descriptor(fd, path)  # the usual case: a new name
        except FileExistsError:  # a rewrite: linked beside it, then renamed over it
            temporary = f"{directory}/.{path.name}.{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            link_descriptor(fd, temporary)
            try:
                os.replace(temporary, path)
            except BaseException:
                os.unlink(temporary)
                raise
    finally:
        os.close(fd)  # a file never linked goes with its descriptor: nothing to remove
    return size


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Every byte of `data` to `fd`: a short write (a disk filling up) goes on from where it
    stopped, and the next write says why."""
    written = os.write(fd, data)
    while written < len(data):
        written += os.write(fd, memoryview(data)[written:])


def link_descriptor(fd: int, target: str | Path) -> None:
    """A name for the file open at `fd`: linkat(2) following `/proc/self/fd/N` (os.link alone
    calls link(2), which would link that entry itself, EXDEV; a directory descriptor, here
    the file's own, which the absolute source ignores, makes it call linkat)."""
    os.link(f"/proc/self/fd/{fd}", target, src_dir_fd=fd, follow_symlinks=True)


def link_atomically(source: str | Path, target: str | Path, *, copy: bool = True) -> None:
    """`target` becomes another name of `source`'s file (a hard link: no byte is copied, and
    removing either name leaves the other's bytes), replacing what it named; readers see the
    old file or the new one. Where the file system has no hard links, the bytes are copied
    (`copy`; else the OSError is the caller's). Strings or Paths: the usual case builds no
    Path."""
    try:
        os.link(source, target)  # the usual case: a new name
    except FileExistsError:  # a rewrite of the same object: link beside it, then rename
        path = Path(target)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.unlink(missing_ok=True)
        os.link(source, temporary)
        temporary.replace(path)
        # already a name of the same file (a retry's link): the rename did nothing (rename(2))
        temporary.unlink(missing_ok=True)
    except FileNotFoundError:
        parent = Path(target).parent
        if not parent.is_dir():  # else the source is gone: the caller's to say
            parent.mkdir(parents=True, exist_ok=True)
            link_atomically(source, target, copy=copy)
            return
        raise
    except OSError as error:  # no hard links here (or not across these directories)
        if error.errno not in _NO_LINKS or not copy:
            raise
        with Path(source).open("rb") as stream:
            write_atomically(Path(target), stream)


def append_line(path: Path, line: bytes) -> None:
    """One write() of one line in append mode: readers never see half a record, and several
    processes can share the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line + b"\n")
    finally:
        os.close(fd)


class LineAppender:
    """`append_line` with each file kept open between records (one write() a record, as
    there), for the files a process appends to all the time: the vended logs. Before each
    record the path is looked at again, as logging's WatchedFileHandler does: a file that was
    removed or rotated away (another file, or none, at its path) is closed and the path opened
    anew, so records never go on into a file nobody will read. A write that fails forgets
    the file, so the next record opens it again."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[int, int, int]] = {}  # path: fd, device, inode
        self._lock = threading.Lock()  # the ingress writes from its loop and its threads

    def append(self, path: str, line: bytes) -> None:
        """`path` a string: a Path made and hashed anew each record costs more than the write."""
        with self._lock:
            fd = self._descriptor(path)
            try:
                os.write(fd, line + b"\n")
            except OSError:
                self._forget(path)
                raise

    def _descriptor(self, path: str) -> int:
        held = self._open.get(path)
        if held is not None:
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == held[1:]:
                return held[0]
            self._forget(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        opened = os.fstat(fd)
        self._open[path] = (fd, opened.st_dev, opened.st_ino)
        return fd

    def _forget(self, path: str) -> None:
        held = self._open.pop(path, None)
        if held is not None:
            os.close(held[0])

    def close(self) -> None:
        with self._lock:
            for path in list(self._open):
                self._forget(path)

    def __del__(self) -> None:
        for fd, _, _ in self._open.values():
            os.close(fd)
        self._open.clear()
