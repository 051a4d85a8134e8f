"""A message's bytes as the gateway relays them, never whole in memory: its header section in
memory, where trace fields are put on top and forged ones taken off (header edits never touch
the body: re-serialising breaks DKIM), and its body read in chunks from where it is stored (the
spool file, an object). A 40 MB message costs its header section and a chunk, not 40 MB."""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from mxgate.message.headers import read_header_section

if TYPE_CHECKING:
    from mxgate.ports import ObjectStore
    from mxgate.records import MessageRef

CHUNK = 1 << 16


@dataclass(frozen=True)
class RawMessage:
    """`header`: the header section through its blank line (all of a message without one);
    `open_body`: opens a stream at the body's first byte, of `body_size` bytes from there."""

    header: bytes
    open_body: Callable[[], BinaryIO]
    body_size: int
    eight_bit: bool | None = None  # the stored bytes hold a byte >= 0x80; None: not known
    whole: bytes | None = None  # the message as it came, when it is in memory
    # a file whose whole content is this message and is never written again (a spool file
    # with its envelope in an attribute): the local object store links it instead of copying
    file: str | None = None

    @classmethod
    def of(cls, raw: bytes, *, file: str | None = None) -> RawMessage:
        """A message whose bytes are at hand (a DSN, a claim check stub, a test's message, a
        small spool file's, `file`)."""
        header, _ = read_header_section(io.BytesIO(raw))

        def open_body() -> BinaryIO:
            stream = io.BytesIO(raw)  # shares the bytes, copies none
            stream.seek(len(header))
            return stream

        return cls(header, open_body, len(raw) - len(header), whole=raw, file=file)

    @classmethod
    def read_from(cls, opener: Callable[[], BinaryIO], size: int) -> RawMessage:
        """The message a stream holds (`opener` opens it at its first byte; `size` bytes):
        the header section is read now, the body each time it is opened."""
        with opener() as stream:
            header, _ = read_header_section(stream)

        def open_body() -> BinaryIO:
            stream = opener()
            skip(stream, len(header))
            return stream

        return cls(header, open_body, size - len(header))

    @classmethod
    def in_file(cls, path: Path, offset: int = 0, *, file: str | None = None) -> RawMessage:
        """The message a file holds from `offset` to its end (an older spool file's after its
        envelope line); `file`: the file's name, when the message is the whole file."""

        def opener() -> BinaryIO:
            stream = path.open("rb")
            stream.seek(offset)
            return stream

        message = cls.read_from(opener, path.stat().st_size - offset)
        if file is None:
            return message
        return cls(message.header, message.open_body, message.body_size, file=file)

    @classmethod
    def stored(cls, objects: ObjectStore, bucket: str, key: str) -> RawMessage:
        """The message an object holds, read from the store each time it is opened."""
        return cls.read_from(lambda: objects.open(bucket, key), objects.head(bucket, key).size)

    @classmethod
    def referenced(
        cls, ref: MessageRef, objects: ObjectStore, *, known: bytes | None = None
    ) -> RawMessage:
        """The message a delivery names: inside its document when small, else in the store;
        with the 8-bit flag the record keeps (a message over 48 KB is then read once).
        `known`: its bytes, when the caller has them already (`ParseOnce.kept_bytes`)."""
        if known is not None:
            message = cls.of(known)
        elif ref.inline is not None:
            message = cls.of(base64.b64decode(ref.inline))
        else:  # its size is known: no HEAD request (on S3) to learn it
            message = cls.read_from(lambda: objects.open(ref.bucket, ref.key), ref.size)
        return RawMessage(
            message.header, message.open_body, message.body_size, ref.eight_bit, message.whole
        )

    @property
    def size(self) -> int:
        return len(self.header) + self.body_size

    def with_header(self, header: bytes) -> RawMessage:
        """The same body under an edited header section (itself, when the edit changed
        nothing: a message is immutable; `dataclasses.replace` walks the fields each call).
        An edited one has no `file`: its bytes are no longer the file's."""
        if header == self.header:
            return self
        return RawMessage(header, self.open_body, self.body_size, self.eight_bit, self.whole)

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The message's bytes in order: the header section, then the body a chunk at a time."""
        if self.header:
            yield self.header
        with self.open_body() as body:
            while chunk := body.read(size):
                yield chunk

    def open(self) -> BinaryIO:
        """A stream of the whole message (what a parser, a hash or an upload reads)."""
        whole = self.whole
        if whole is not None and len(whole) == self.size and whole.startswith(self.header):
            return io.BytesIO(whole)  # in memory, its header as it came: shared, not copied
        return io.BufferedReader(_Concatenated(self), CHUNK)

    def read(self) -> bytes:
        """All of it in memory: only where a library takes nothing else (SES's raw message,
        an SNS notification's content), never on the path of an ordinary delivery."""
        return b"".join(self.chunks())

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for chunk in self.chunks():
            digest.update(chunk)
        return digest.hexdigest()

    def isascii(self) -> bool:
        if self.eight_bit is not None:  # known when it was stored: no pass over the body
            return not self.eight_bit and self.header.isascii()
        return all(chunk.isascii() for chunk in self.chunks())


def skip(stream: BinaryIO, count: int) -> None:
    """Move a stream `count` bytes on: by seeking where it can, else by reading."""
    if stream.seekable():
        stream.seek(count, io.SEEK_CUR)
        return
    while count > 0:
        got = stream.read(min(count, CHUNK))
        if not got:
            return
        count -= len(got)


class _Concatenated(io.RawIOBase):
    """The header section, then the body, as one readable (and seekable) stream."""

    def __init__(self, message: RawMessage) -> None:
        self._message = message
        self._position = 0
        self._body: BinaryIO | None = None
        self._body_position = 0  # where `_body` stands, counted from the body's start

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._message.size}
        self._position = max(0, base[whence] + offset)
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        header = self._message.header
        view = memoryview(buffer).cast("B")
        if self._position < len(header):
            piece = header[self._position : self._position + len(view)]
        else:
            piece = self._read_body(self._position - len(header), len(view))
        view[: len(piece)] = piece
        self._position += len(piece)
        return len(piece)

    def _read_body(self, at: int, count: int) -> bytes:
        if self._body is None or at != self._body_position:
            if self._body is not None and at > self._body_position:
                skip(self._body, at - self._body_position)
            else:
                if self._body is not None:
                    self._body.close()
                self._body = self._message.open_body()
                skip(self._body, at)
            self._body_position = at
        data = self._body.read(count)
        self._body_position += len(data)
        return data

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None
        super().close()
