"""An object store in a directory: `<root>/<bucket>/<key>`, S3's semantics where they matter."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from mxgate.adapters.local.files import link_atomically, write_atomically
from mxgate.errors import PermanentError
from mxgate.ports import ObjectInfo

_META = ".meta"


class FileObjectStore:
    def __init__(self, root: Path, *, durable: bool = False) -> None:
        self.root = root
        self.durable = durable  # fsync each object (the ingress spool is fsynced regardless)

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
        size = write_atomically(path, body, durable=self.durable)
        if metadata:
            write_atomically(
                self._path(bucket, key, meta=True), json.dumps(dict(metadata)).encode()
            )
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
        try:
            link_atomically(self._file(source_bucket, source_key), self._file(bucket, key))
        except FileNotFoundError as error:
            raise PermanentError(f"no object {source_bucket}/{source_key}") from error
        try:
            with open(self._file(source_bucket, source_key, meta=True), "rb") as stream:
                metadata = stream.read()
        except FileNotFoundError:  # none, as a message has (and like put, the old one stays)
            return
        write_atomically(self._path(bucket, key, meta=True), metadata)

    def delete(self, bucket: str, key: str) -> None:
        """Remove an object and its metadata (gone already: nothing to do, as on S3)."""
        self._path(bucket, key).unlink(missing_ok=True)
        self._path(bucket, key, meta=True).unlink(missing_ok=True)

    def link(self, bucket: str, key: str, expires_at: datetime | None = None) -> str:
        """A file URI: it works as long as the file is there (`expires_at` asks no more)."""
        return self._path(bucket, key).resolve().as_uri()
