"""A streaming MIME parser: reads the raw message from a stream in chunks and builds a tree of
parts, decoding each body as it goes. Memory stays near the size of the largest decoded part
that must be kept (bodies, and attachments when they are stored), never the whole message.

Everything odd in the input becomes a defect on its part; only the limits stop the parse
(`LimitExceeded`), and what was parsed until then is kept. Past the usual size on purpose:
one state machine over the byte stream, whose states (boundaries, transfer decoders, headers)
are read together.
"""

from __future__ import annotations

import binascii
import hashlib
import io
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from functools import cached_property
from typing import BinaryIO, cast

from mxgate.message.model import ParseLimits
from mxgate.message.parameters import Parameter, parse_parameters
from mxgate.message.parameters import value as parameter_value
from mxgate.message.parameters import values as parameter_values
from mxgate.message.text import decode_words, header_text, unfold

_CHUNK = 1 << 16
_SNIFF_BYTES = 512
KEPT_IN_MEMORY = 1 << 20  # bytes of a kept part held in memory; the rest in a temporary file
_MAX_DELIMITER_LINE = 70 + 2 + 2 + 256  # RFC 2046: boundaries are at most 70 characters
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
_BROKEN_FIELD = re.compile(rb"[A-Za-z][\x21-\x39\x3b-\x7e ]{0,76}:")
_IDENTITY = frozenset({"", "7bit", "8bit", "binary"})
_ENCODING_SPELLINGS = {
    "quotedprintable": "quoted-printable",
    "base64": "base64",
    "7bit": "7bit",
    "8bit": "8bit",
    "8bits": "8bit",
    "7bits": "7bit",
    "binary": "binary",
}
_UUENCODE = frozenset({"x-uuencode", "uuencode", "x-uue", "uue"})
_B64_JUNK = bytes(
    sorted(
        set(range(256)) - set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
    )
)
# Content types whose body is itself a message (RFC 2046 5.2.1, RFC 6532 3.7).
MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
# Small parts whose content is kept for a closer look: DSN fields, returned headers.
KEPT_TYPES = frozenset(
    {"message/delivery-status", "message/global-delivery-status", "text/rfc822-headers"}
)


class LimitExceeded(Exception):  # noqa: N818 -- a reason to stop, not a failure
    """A configured limit stopped the parse; the message is not understood."""


class Content:
    """The decoded bytes of one part seen once: counted, hashed, their start kept for
    sniffing, and the whole kept only when asked (to store it, or to read it as text): in
    memory up to KEPT_IN_MEMORY, in a temporary file past it, so a 30 MB attachment on its
    way to the store is never whole in memory. A body text is not hashed (`digest` False):
    no attachment is made of it, and its digest would never be read."""

    __slots__ = ("_digest", "_kept", "head", "outer", "size")

    def __init__(
        self, keep: bool, outer: frozenset[bytes] = frozenset(), *, digest: bool = True
    ) -> None:
        self._digest = hashlib.sha256() if digest else None
        self._kept: BinaryIO | None = _kept_bytes() if keep else None
        self.size = 0
        self.head = b""
        self.outer = outer  # for a message tapped from the stream: the enclosing boundaries

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if self._digest is not None:
            self._digest.update(data)
        self.size += len(data)
        if len(self.head) < _SNIFF_BYTES:
            self.head += data[: _SNIFF_BYTES - len(self.head)]
        if self._kept is not None:
            self._kept.write(data)

    @property
    def sha256(self) -> str:
        """The decoded bytes' SHA-256; "" for content not hashed."""
        return self._digest.hexdigest() if self._digest is not None else ""

    @property
    def data(self) -> bytes | None:
        """All the kept bytes (for text and the small parts read whole)."""
        stream = self.stream()
        return None if stream is None else stream.read()

    def stream(self) -> BinaryIO | None:
        """The kept bytes from their start, to be read in chunks (None: not kept)."""
        if self._kept is not None:
            self._kept.seek(0)
        return self._kept

    def release(self) -> None:
        """Stop holding the bytes; the size, digest and head stay."""
        if self._kept is not None:
            self._kept.close()
        self._kept = None


def _kept_bytes() -> BinaryIO:
    return cast("BinaryIO", tempfile.SpooledTemporaryFile(max_size=KEPT_IN_MEMORY))


def match_delimiter(line: bytes, boundaries: tuple[bytes, ...]) -> tuple[bytes, bool] | None:
    """(boundary, is_close) when `line` is a delimiter line of one of `boundaries`."""
    if not line.startswith(b"--"):
        return None
    rest = line[2:].rstrip(b" \t\r\n")
    for boundary in boundaries:
        if rest.startswith(boundary):
            tail = rest[len(boundary) :]
            if not tail:
                return boundary, False
            if tail == b"--":
                return boundary, True
    return None


class Source:
    """Buffered reading of the raw message: header lines, and bodies up to a delimiter.

    Every byte read is hashed and counted (the whole message's digest and size); taps see the
    bytes of a message nested inside it as they are consumed.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._buffer = b""
        self._position = 0
        self._eof = False
        self._digest = hashlib.sha256()
        self.size = 0
        self.taps: list[Content] = []

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def _fill(self) -> bool:
        if self._eof:
            return False
        data = self._stream.read(_CHUNK)
        if not data:
            self._eof = True
            return False
        self._digest.update(data)
        self.size += len(data)
        self._buffer = self._buffer[self._position :] + data
        self._position = 0
        return True

    def _consume(self, end: int) -> bytes:
        data = self._buffer[self._position : end]
        self._position = end
        for tap in self.taps:
            tap.feed(data)
        return data

    def peek_line(self, limit: int) -> bytes:
        """The next line with its line break (b"" at the end); at most about `limit` bytes."""
        while True:
            end = self._buffer.find(b"\n", self._position)
            if end >= 0:
                return self._buffer[self._position : end + 1]
            if len(self._buffer) - self._position > limit or not self._fill():
                return self._buffer[self._position :]

    def skip(self, count: int) -> None:
        self._consume(self._position + count)

    def drain(self) -> None:
        """Read to the end, so the digest and size cover the whole message."""
        self._consume(len(self._buffer))
        while self._fill():
            self._consume(len(self._buffer))

    def body(self, boundaries: tuple[bytes, ...]) -> Iterator[bytes]:
        """The content up to the next delimiter line of `boundaries` (or the end). The line
        break before a delimiter belongs to the delimiter (RFC 2046), so it is not yielded;
        the delimiter line itself is left to read."""
        if not boundaries:
            yield from self._rest()
            return
        if self._opens_with_delimiter(boundaries):
            return
        while True:
            buffer, start = self._buffer, self._position
            index = buffer.find(b"\n--", start)
            waiting = False
            while index >= 0:
                found = self._delimiter_at(index + 1, boundaries)
                if found is None:  # the candidate line is not complete yet
                    waiting = True
                    break
                if found:
                    end = index - 1 if index > start and buffer[index - 1] == 13 else index
                    if end > start:
                        yield self._consume(end)
                    self._end_content(index + 1, found)
                    return
                index = buffer.find(b"\n--", index + 1)
            if waiting:
                cut = index - 1 if index > start and buffer[index - 1] == 13 else index
            else:
                cut = max(start, len(buffer) - 3)  # keep a possible "\r\n-" for the next look
            if cut > start:
                yield self._consume(cut)
            if not self._fill():
                if waiting:
                    continue  # at the end now: the candidate line can be judged
                if self._position < len(self._buffer):
                    yield self._consume(len(self._buffer))
                return

    def _rest(self) -> Iterator[bytes]:
        while True:
            if self._position < len(self._buffer):
                yield self._consume(len(self._buffer))
            if not self._fill():
                return

    def _opens_with_delimiter(self, boundaries: tuple[bytes, ...]) -> bool:
        """A body may start with a delimiter, no line break before it (an empty part)."""
        while (found := self._delimiter_at(self._position, boundaries)) is None:
            self._fill()
        return bool(found)

    def _delimiter_at(self, line_start: int, boundaries: tuple[bytes, ...]) -> bytes | None:
        """The boundary whose delimiter line starts at `line_start`, b"" when none does, and
        None when more input is needed to tell."""
        buffer = self._buffer
        end = buffer.find(b"\n", line_start)
        if end < 0:
            waiting_room = len(buffer) - line_start
            if (
                not self._eof
                and waiting_room <= _MAX_DELIMITER_LINE
                and (waiting_room < 2 or buffer.startswith(b"--", line_start))
            ):
                return None
            end = len(buffer)
        found = match_delimiter(buffer[line_start : end + 1], boundaries)
        return found[0] if found else b""

    def _end_content(self, line_start: int, boundary: bytes) -> None:
        """Consume the line break before a delimiter: part of a tapped message's bytes only
        when the delimiter is one of that message's own boundaries."""
        data = self._buffer[self._position : line_start]
        self._position = line_start
        for tap in self.taps:
            if boundary not in tap.outer:
                tap.feed(data)


# ------------------------------------------------------------------------------ decoders


class _Identity:
    def feed(self, data: bytes) -> bytes:
        return data

    def end(self) -> bytes:
        return b""


class _Base64:
    """Lenient base64: junk characters skipped, padding in mid-stream honoured (some mailers
    encode line by line), a truncated end decoded as far as it goes."""

    def __init__(self, defects: list[str]) -> None:
        self._rest = b""
        self._defects = defects

    def _segment(self, data: bytes) -> bytes:
        core = data.rstrip(b"=")
        if len(core) % 4 == 1:
            core = core[:-1]
            self._defects.append("base64: a stray character at the end of a run")
        core += b"=" * (-len(core) % 4)
        return binascii.a2b_base64(core)

    def feed(self, data: bytes) -> bytes:
        data = self._rest + data.translate(None, _B64_JUNK)
        decoded = []
        while (padding := data.find(b"=")) >= 0:
            end = padding
            while end < len(data) and data[end] == 61:
                end += 1
            if end == len(data):  # the padding may go on in the next chunk
                break
            decoded.append(self._segment(data[:end]))
            data = data[end:]
        whole = len(data) - len(data) % 4 if b"=" not in data else 0
        if whole:
            decoded.append(binascii.a2b_base64(data[:whole]))
        self._rest = data[whole:]
        return b"".join(decoded)

    def end(self) -> bytes:
        rest, self._rest = self._rest, b""
        return self._segment(rest) if rest.rstrip(b"=") else b""


class _QuotedPrintable:
    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> bytes:
        data = self._rest + data
        cut = data.rfind(b"\n") + 1
        self._rest = data[cut:]
        return binascii.a2b_qp(data[:cut]) if cut else b""

    def end(self) -> bytes:
        rest, self._rest = self._rest, b""
        return binascii.a2b_qp(rest)


def uu_line(line: bytes) -> bytes:
    """One uuencoded line, tolerating the padding errors real encoders make."""
    try:
        return binascii.a2b_uu(line)
    except binascii.Error:
        if not line:
            return b""
        count = (((line[0] - 32) & 63) * 4 + 5) // 3
        try:
            return binascii.a2b_uu(line[:count])
        except binascii.Error:
            return b""


class _Uuencode:
    """Content-Transfer-Encoding: x-uuencode: the lines between `begin` and `end`."""

    def __init__(self) -> None:
        self._rest = b""
        self._state = "before"  # before | inside | after
        self.filename: str | None = None

    def _lines(self, data: bytes) -> bytes:
        decoded = []
        for line in data.splitlines():
            if self._state == "before":
                if line.startswith(b"begin "):
                    self._state = "inside"
                    parts = line.split(None, 2)
                    if len(parts) == 3:
                        self.filename = header_text(parts[2].strip())
            elif self._state == "inside":
                if line.strip() == b"end":
                    self._state = "after"
                elif line.strip():
                    decoded.append(uu_line(line.rstrip(b"\r")))
        return b"".join(decoded)

    def feed(self, data: bytes) -> bytes:
        data = self._rest + data
        cut = data.rfind(b"\n") + 1
        self._rest = data[cut:]
        return self._lines(data[:cut])

    def end(self) -> bytes:
        rest, self._rest = self._rest, b""
        return self._lines(rest)


Decoder = _Identity | _Base64 | _QuotedPrintable | _Uuencode


def decoder_for(encoding: str, defects: list[str]) -> Decoder:
    if encoding == "base64":
        return _Base64(defects)
    if encoding == "quoted-printable":
        return _QuotedPrintable()
    if encoding in _UUENCODE:
        return _Uuencode()
    if encoding not in _IDENTITY:
        defects.append(f"unknown Content-Transfer-Encoding {encoding!r}, taken as 8bit")
    return _Identity()


# ------------------------------------------------------------------------------ the tree


@dataclass(eq=False)
class Part:
    """One MIME entity: its header fields, then children, a nested message, or content."""

    path: str  # "" for the message itself, "1", "1.2", ... for parts
    fields: list[tuple[bytes, bytes]] = field(default_factory=list)
    default_type: str = "text/plain"
    header_charset: str | None = None  # a fallback for 8-bit header bytes
    defects: list[str] = field(default_factory=list)
    children: list[Part] | None = None
    nested: Part | None = None  # a message/rfc822 body, parsed
    content: Content | None = None
    body_text: bytes | None = None  # decoded bytes of an inline text body
    uu_filename: str | None = None
    _meta: Message | None = None
    # each header's parameters, parsed once: a part's charset, name and filename all ask
    _parameters: dict[str, list[Parameter]] = field(default_factory=dict)

    def text_field(self, name: bytes) -> str | None:
        for key, value in self.fields:
            if key.lower() == name:
                return header_text(value, self.header_charset)
        return None

    @property
    def meta(self) -> Message:
        """The MIME fields in a compat32 Message, for its RFC 2045/2231 parameter handling."""
        if self._meta is None:
            meta = Message()
            for key, value in self.fields:
                name = key.lower()
                if name.startswith(b"content-"):
                    meta[name.decode("ascii")] = unfold(header_text(value, self.header_charset))
            self._meta = meta
        return self._meta

    def reset_meta(self) -> None:
        self._meta = None
        self._parameters.clear()
        self.__dict__.pop("content_type", None)

    @cached_property
    def content_type(self) -> str:
        if self.meta.get("content-type") is None:
            return self.default_type
        return self.meta.get_content_type()

    @property
    def transfer_encoding(self) -> str:
        value = str(self.meta.get("content-transfer-encoding", "")).strip().strip("\"';").lower()
        # lenient spellings seen in the wild: "quoted printable", "7-bit", "8bits", "Base-64"
        squeezed = re.sub(r"[^a-z0-9]", "", value)
        return _ENCODING_SPELLINGS.get(squeezed, value)

    @property
    def charset(self) -> str | None:
        value = self.parameter("charset")
        return value.lower() if value else None

    @property
    def disposition(self) -> str | None:
        return self.meta.get_content_disposition()

    def parameters(self, header: str = "content-type") -> list[Parameter]:
        parsed = self._parameters.get(header)
        if parsed is None:
            parsed = self._parameters[header] = parse_parameters(str(self.meta.get(header) or ""))
        return parsed

    @property
    def boundary(self) -> str | None:
        value = parameter_value(self.parameters(), "boundary")
        return value.rstrip() if value else None

    def parameter(self, name: str, header: str = "content-type") -> str | None:
        """A parameter, RFC 2231 charsets and continuations decoded, RFC 2047 words too."""
        value = parameter_value(self.parameters(header), name)
        return decode_words(value).strip() or None if value else None

    @property
    def filename(self) -> str | None:
        return (
            self.parameter("filename", "content-disposition")
            or self.parameter("name")
            or self.uu_filename
        )

    @property
    def names(self) -> list[str]:
        """Every file name the part gives itself, in whichever parameter, each duplicate and
        RFC 2231 piece apart: mail clients disagree about which one wins."""
        found = [
            *parameter_values(self.parameters("content-disposition"), "filename"),
            *parameter_values(self.parameters(), "name"),
            *([self.uu_filename] if self.uu_filename else []),
        ]
        return list(dict.fromkeys(name for v in found if (name := decode_words(v).strip())))

    @property
    def is_body_text(self) -> bool:
        """An inline text/plain or text/html part: a body rather than an attachment."""
        return (
            self.content_type in ("text/plain", "text/html")
            and self.disposition != "attachment"
            and self.filename is None
        )


@dataclass
class Counters:
    parts: int = 0
    decoded: int = 0


class MimeParser:
    """Builds the part tree of one message from a Source, within the limits."""

    def __init__(self, source: Source, limits: ParseLimits, keep_attachments: bool) -> None:
        self.source = source
        self.limits = limits
        self.keep_attachments = keep_attachments
        self.counters = Counters()
        self.contents: list[Content] = []  # released by `release` once the model is built

    def release(self) -> None:
        """Let go of every part's kept bytes (their temporary files too)."""
        for content in self.contents:
            content.release()

    def message(self, root: Part, boundaries: tuple[bytes, ...] = (), depth: int = 0) -> Part:
        """Parse one entity (the message itself, or a nested one) into `root`."""
        self._header_section(root, boundaries)
        self._use_own_charset(root)
        self._entity_body(root, boundaries, depth)
        return root

    @staticmethod
    def _use_own_charset(message: Part) -> None:
        """A message's 8-bit header bytes are most likely in its own body's charset."""
        charset = message.charset
        if charset:
            message.header_charset = charset
            message.reset_meta()

    def header_section(self, part: Part) -> None:
        """Only the header section, into `part` (returned headers in a DSN)."""
        self._header_section(part, ())

    def _header_section(self, part: Part, boundaries: tuple[bytes, ...]) -> None:
        limits, source = self.limits, self.source
        total = 0
        current: list[bytes] | None = None
        pending: list[tuple[bytes, list[bytes]]] = []
        try:
            while True:
                line = source.peek_line(limits.max_header_bytes)
                if not line:
                    break
                if line in (b"\r\n", b"\n"):
                    source.skip(len(line))
                    break
                if boundaries and match_delimiter(line, boundaries) is not None:
                    part.defects.append("a part ends in its header section (no body)")
                    break
                total += len(line)
                if total > limits.max_header_bytes:
                    raise LimitExceeded(
                        f"header section larger than {limits.max_header_bytes} bytes"
                    )
                if line[:1] in (b" ", b"\t"):
                    if current is not None:
                        current.append(line)
                    else:
                        part.defects.append("the header section starts with a folded line")
                    source.skip(len(line))
                    continue
                colon = line.find(b":")
                name = line[:colon].rstrip(b" \t") if colon > 0 else b""
                if name and _FIELD_NAME.fullmatch(name):
                    current = [line[colon + 1 :]]
                    pending.append((name, current))
                    if len(pending) > limits.max_header_fields:
                        raise LimitExceeded(
                            f"more than {limits.max_header_fields} header fields in one section"
                        )
                    source.skip(len(line))
                    continue
                if not pending and line.startswith(b"From "):
                    part.defects.append("an mbox 'From ' line before the header")
                    source.skip(len(line))
                    continue
                if pending and _BROKEN_FIELD.match(line):  # e.g. "quite Delivered-To: x"
                    part.defects.append("a malformed header field skipped")
                    source.skip(len(line))
                    current = None
                    continue
                part.defects.append("no blank line between the header section and the body")
                break
        finally:
            part.fields = [(name, _strip_line_break(b"".join(lines))) for name, lines in pending]

    def _entity_body(self, part: Part, boundaries: tuple[bytes, ...], depth: int) -> None:
        self.counters.parts += 1
        if self.counters.parts > self.limits.max_parts:
            raise LimitExceeded(f"more than {self.limits.max_parts} MIME parts")
        content_type = part.content_type
        if content_type.startswith("multipart/"):
            boundary = part.boundary
            if boundary:
                if depth + 1 > self.limits.max_depth:
                    raise LimitExceeded(f"MIME nesting deeper than {self.limits.max_depth}")
                self._multipart(part, boundary.encode("utf-8", "replace"), boundaries, depth)
                return
            part.defects.append(f"{content_type} without a boundary, read as text")
        if content_type in MESSAGE_TYPES and part.transfer_encoding in _IDENTITY:
            if depth + 1 > self.limits.max_depth:
                raise LimitExceeded(f"MIME nesting deeper than {self.limits.max_depth}")
            self._nested_inline(part, boundaries, depth)
            return
        self._leaf(part, boundaries, depth)

    def _multipart(
        self, part: Part, boundary: bytes, boundaries: tuple[bytes, ...], depth: int
    ) -> None:
        inner = (boundary, *boundaries)
        source = self.source
        part.children = []
        for _ in source.body(inner):  # the preamble
            pass
        child_type = "message/rfc822" if part.content_type == "multipart/digest" else "text/plain"
        while True:
            line = source.peek_line(_MAX_DELIMITER_LINE)
            found = match_delimiter(line, inner) if line else None
            if found is None:
                part.defects.append(
                    "multipart ends without its closing boundary"
                    if part.children
                    else "no part delimited by the declared boundary (content left unread)"
                )
                return
            if found[0] != boundary:  # an enclosing part's delimiter: ours never closed
                part.defects.append("multipart ends without its closing boundary")
                return
            source.skip(len(line))
            if found[1]:
                break
            child = Part(
                path=f"{part.path}.{len(part.children) + 1}".lstrip("."),
                default_type=child_type,
                header_charset=part.header_charset,
            )
            part.children.append(child)
            self._header_section(child, inner)
            self._entity_body(child, inner, depth + 1)
        for _ in source.body(boundaries):  # the epilogue
            pass

    def _nested_inline(self, part: Part, boundaries: tuple[bytes, ...], depth: int) -> None:
        """A message/rfc822 part in 7bit/8bit/binary: its bytes are parsed as they stream by,
        and tapped to count, hash (and keep) them as the attachment they also are."""
        tap = Content(self.keep_attachments, outer=frozenset(boundaries))
        self.contents.append(tap)
        part.content = tap
        part.nested = Part(path=part.path, header_charset=part.header_charset)
        self.source.taps.append(tap)
        try:
            self._header_section(part.nested, boundaries)
            self._use_own_charset(part.nested)
            self._entity_body(part.nested, boundaries, depth + 1)
        finally:
            self.source.taps.remove(tap)
        self._count(tap.size)

    def _count(self, size: int) -> None:
        self.counters.decoded += size
        if self.counters.decoded > self.limits.max_decoded_bytes:
            raise LimitExceeded(f"more than {self.limits.max_decoded_bytes} bytes decoded")

    def _leaf(self, part: Part, boundaries: tuple[bytes, ...], depth: int) -> None:
        content_type = part.content_type
        encoding = part.transfer_encoding
        decoder = decoder_for(encoding, part.defects)
        body_text = part.is_body_text and encoding not in _UUENCODE
        keep = (
            body_text
            or self.keep_attachments
            or content_type in MESSAGE_TYPES
            or content_type in KEPT_TYPES
        )
        content = Content(keep, digest=not body_text)
        self.contents.append(content)
        for chunk in self.source.body(boundaries):
            data = decoder.feed(chunk)
            self._count(len(data))
            content.feed(data)
        tail = decoder.end()
        self._count(len(tail))
        content.feed(tail)
        if isinstance(decoder, _Uuencode):
            part.uu_filename = decoder.filename
        if body_text:
            part.body_text = content.data
            return
        part.content = content
        if content_type in MESSAGE_TYPES:  # an encoded message/rfc822: parse the decoded bytes
            data = content.data or b""
            if not self.keep_attachments:
                content.release()
            self._nested_from_bytes(part, data, depth)

    def _nested_from_bytes(self, part: Part, data: bytes, depth: int) -> None:
        if depth + 1 > self.limits.max_depth:
            raise LimitExceeded(f"MIME nesting deeper than {self.limits.max_depth}")
        part.defects.append("message/rfc822 with a transfer encoding (RFC 2046 forbids it)")
        outer = self.source
        self.source = Source(io.BytesIO(data))
        try:
            part.nested = Part(path=part.path, header_charset=part.header_charset)
            self._header_section(part.nested, ())
            self._use_own_charset(part.nested)
            self._entity_body(part.nested, (), depth + 1)
        finally:
            self.source = outer


def _strip_line_break(value: bytes) -> bytes:
    if value.endswith(b"\r\n"):
        return value[:-2]
    if value.endswith(b"\n"):
        return value[:-1]
    return value
