"""An object store in a directory: `<root>/<bucket>/<key>`, S3's semantics where they matter.

A message stored unchanged from a spool file is a hard link of that file (`link_file`), as the
Archive action's object is of WriteToS3's (`copy`): one inode holds the spool file, its replay
history entry and its objects, so nothing writes into an object's file in place (a rewrite
replaces the name).

Objects are written without fsync: while the spool file (fsynced before 250) is there, a
crash replays it. What outlives the spool file in an object alone is a message a durable
record points at (a deferral, a dead letter, a quarantine record): the state database's
durable commit calls `make_written_durable` first, which fsyncs the objects written (or
linked) since (file, then directories). A message delivered at once never waits on a disk
flush: its run ends (`one_run`) and its objects are forgotten.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from mxgate.adapters.local.files import link_atomically, write_atomically
from mxgate.errors import PermanentError
from mxgate.ports import ObjectInfo

_META = ".meta"


class FileObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        # files written (or linked) and not yet fsynced, in writing order: path strings
        self._written: dict[str, None] = {}
        # directories whose own name is on disk (fsynced in their parent): the store never
        # removes one, so once is enough
        self._named: set[str] = set()

    @contextmanager
    def one_run(self) -> Iterator[None]:
        """A worker's run over one message (or one deferred record): what it wrote that no
        durable record came to point at needs no fsync, and is forgotten at its end."""
        try:
            yield
        finally:
            self._written.clear()

    def make_written_durable(self) -> None:
        """Fsync every object written since the last call (or the run's start): each file,
        then its directory (the new name), and once a process each directory up to the root
        (a new directory's own name). Called before a durable record is committed, so no
        record points at bytes not on disk."""
        if not self._written:
            return
        root = str(self.root)
        directories: dict[str, None] = {}
        named: list[str] = []
        for path in self._written:
            _fsync(path, os.O_RDONLY)
            directory = os.path.dirname(path)
            directories[directory] = None
            while directory != root and directory not in self._named:
                named.append(directory)  # its name is in its parent: that one too
                directory = os.path.dirname(directory)
                directories[directory] = None
        for directory in directories:
            _fsync(directory, os.O_RDONLY | os.O_DIRECTORY)
        self._named.update(named)
        self._written.clear()

    def _path(self, bucket: str, key: str, *, meta: bool = False) -> Path:
        return Path(self._file(bucket, key, meta=meta))

    def _file(self, bucket: str, key: str, *, meta: bool = False) -> str:
        """The object's file name: one string (a Path parses it again, and each join does)."""
        parts = key.split("/")
        if (
            not bucket
            or bucket.startswith(".")
            or "/" in bucket
            or any(p in ("", ".", "..") for p in parts)
        ):
            raise PermanentError(f"invalid object location {bucket}/{key}")
        if meta:
            return f"{self.root}/{_META}/{bucket}/{key}.json"
        return f"{self.root}/{bucket}/{key}"

    def put(
        self,
        bucket: str,
        key: str,
        body: bytes | BinaryIO,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        path = self._path(bucket, key)
        size = write_atomically(path, body)
        self._written[str(path)] = None
        if metadata:
            meta_path = self._path(bucket, key, meta=True)
            write_atomically(meta_path, json.dumps(dict(metadata)).encode())
            self._written[str(meta_path)] = None
        return ObjectInfo(bucket, key, size, dict(metadata or {}))

    def head(self, bucket: str, key: str) -> ObjectInfo:
        try:
            size = os.stat(self._file(bucket, key)).st_size
        except FileNotFoundError as error:
            raise PermanentError(f"no object {bucket}/{key}") from error
        try:
            with open(self._file(bucket, key, meta=True), "rb") as stream:
                metadata = json.loads(stream.read())
        except FileNotFoundError:  # none, as a message has
            metadata = {}
        return ObjectInfo(bucket, key, size, metadata)

    def open(self, bucket: str, key: str) -> BinaryIO:
        try:
            return open(self._file(bucket, key), "rb")
        except FileNotFoundError as error:
            raise PermanentError(f"no object {bucket}/{key}") from error

    def get(self, bucket: str, key: str) -> bytes:
        with self.open(bucket, key) as stream:
            return stream.read()

    def exists(self, bucket: str, key: str) -> bool:
        return os.path.isfile(self._file(bucket, key))

    def copy(self, source_bucket: str, source_key: str, bucket: str, key: str) -> None:
        """A hard link: the bytes are written once however many objects hold them (WriteToS3
        and Archive of one message); each object is still deleted on its own."""
        path = self._file(bucket, key)
        try:
            link_atomically(self._file(source_bucket, source_key), path)
        except FileNotFoundError as error:
            raise PermanentError(f"no object {source_bucket}/{source_key}") from error
        self._written[path] = None
        try:
            with open(self._file(source_bucket, source_key, meta=True), "rb") as stream:
                metadata = stream.read()
        except FileNotFoundError:  # none, as a message has (and like put, the old one stays)
            return
        meta_path = self._path(bucket, key, meta=True)
        write_atomically(meta_path, metadata)
        self._written[str(meta_path)] = None

    def link_file(self, path: str, bucket: str, key: str) -> bool:
        """The file at `path` (a spool file, the message whole) as the object, another name
        of it: no byte written, no inode made (FileLinks). Its bytes and inode are durable
        already (fsynced before `250`); its new name is fsynced with the objects written
        (`make_written_durable`). The old object's metadata, if any, stays, as with `put`."""
        target = self._file(bucket, key)
        try:
            link_atomically(path, target, copy=False)
        except OSError:  # another file system, too many links, the file gone: bytes written
            return False
        self._written[target] = None
        return True

    def delete(self, bucket: str, key: str) -> None:
        """Remove an object and its metadata (gone already: nothing to do, as on S3)."""
        self._path(bucket, key).unlink(missing_ok=True)
        self._path(bucket, key, meta=True).unlink(missing_ok=True)

    def link(self, bucket: str, key: str, expires_at: datetime | None = None) -> str:
        """A file URI: it works as long as the file is there (`expires_at` asks no more)."""
        return self._path(bucket, key).resolve().as_uri()


def _fsync(path: str, flags: int) -> None:
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:  # deleted since (a run's own rewrite): nothing to keep
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
