"""Edits to raw message bytes. The relayed message is always the original bytes with new
header fields prepended: re-serialising a parsed message breaks DKIM signatures."""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.header import Header
from typing import BinaryIO

_CRLF = b"\r\n"
# A line break that is not folding (CRLF then a space or tab), and NUL: never in a field value.
_CONTROL = re.compile(r"\r\n(?![ \t])|\r(?!\n)|(?<!\r)\n|\x00")


def format_field(name: str, value: str) -> bytes:
    """One header field, RFC 2047-encoded if it is not ASCII, folded, CRLF-terminated. A bare
    CR, LF or NUL in the value (from a HELO name, say) becomes a space: never a field of its own."""
    if "\r" in value or "\n" in value or "\x00" in value:  # else no search: most values
        value = _CONTROL.sub(" ", value)
    if value.isascii():
        line = f"{name}: {value}"
        return line.encode("ascii") + _CRLF
    encoded = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}".encode("ascii") + _CRLF


def line_ending(raw: bytes) -> bytes:
    """The message's own line ending, so prepended fields match the rest of the header."""
    end = raw.find(b"\n", 0, 4096)
    return _CRLF if end > 0 and raw[end - 1 : end] == b"\r" else b"\n"


def prepend_headers(raw: bytes, fields: Iterable[tuple[str, str]]) -> bytes:
    """The original bytes with `fields` in front, in the order given (trace fields go on top)."""
    ending = line_ending(raw)
    block = b"".join(format_field(name, value) for name, value in fields)
    if ending != _CRLF:
        block = block.replace(_CRLF, ending)
    return block + raw


_CHUNK = 1 << 16
MAX_HEADER_SECTION = 1 << 20


def header_section_end(data: bytes) -> int | None:
    """Offset just past the empty line that ends the header section (CRLF or LF line endings,
    mixed too: the empty line follows any line's LF), or None when `data` has none (yet)."""
    if data.startswith((b"\r\n", b"\n")):  # no header fields at all
        return 2 if data.startswith(b"\r\n") else 1
    crlf = data.find(b"\n\r\n")
    lf = data.find(b"\n\n", 0, crlf if crlf >= 0 else len(data))  # before it: it ends first
    if lf >= 0:
        return lf + 2
    return crlf + 3 if crlf >= 0 else None


def header_block_end(raw: bytes) -> int:
    """Offset just past the blank line that ends the header section (len(raw) if none)."""
    end = header_section_end(raw)
    return len(raw) if end is None else end


def read_header_section(stream: BinaryIO, limit: int = MAX_HEADER_SECTION) -> tuple[bytes, bytes]:
    """The header section (through its blank line) and the first bytes of the body, read from a
    stream. A header section larger than `limit` is cut there: what follows counts as body."""
    data = b""
    while True:
        end = header_section_end(data)
        if end is not None:
            return data[:end], data[end:]
        if len(data) > limit:
            return data[:limit], data[limit:]
        chunk = stream.read(_CHUNK)
        if not chunk:
            return data, b""
        data += chunk


def header_fields(raw: bytes) -> list[tuple[bytes, int, int]]:
    """(name, start, end) of each field in the header section, folded lines included; the
    bytes raw[start:end] are the field exactly as received, line break and all."""
    limit = header_block_end(raw)
    fields: list[tuple[bytes, int, int]] = []
    position = 0
    while position < limit:
        end = raw.find(b"\n", position, limit)
        end = limit if end < 0 else end + 1
        line = raw[position:end]
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            name, start, _ = fields[-1]
            fields[-1] = (name, start, end)
        elif b":" in line:
            fields.append((line.split(b":", 1)[0].strip(), position, end))
        position = end
    return fields


def _authserv_id(value: bytes) -> bytes:
    """The authserv-id an Authentication-Results value starts with (RFC 8601 2.2)."""
    text = value.strip()
    while text.startswith(b"("):  # a leading comment
        close = text.find(b")")
        text = text[close + 1 :].strip() if close >= 0 else b""
    if text.startswith(b'"'):
        return text[1:].split(b'"', 1)[0]
    for stop in (b";", b" ", b"\t", b"\r", b"\n", b"("):
        text = text.split(stop, 1)[0]
    return text


def remove_authentication_results(raw: bytes, authserv_id: str) -> bytes:
    """The message without the Authentication-Results fields that claim to be ours: a sender
    must not be able to forge our verdicts (RFC 8601 5). Every other byte stays as it was."""
    ours = authserv_id.encode("ascii", "replace").lower()
    doomed = [
        (start, end)
        for name, start, end in header_fields(raw)
        if name.lower() == b"authentication-results"
        and _authserv_id(raw[start:end].split(b":", 1)[1]).lower() == ours
    ]
    return without_fields(raw, doomed)


def without_fields(raw: bytes, spans: Iterable[tuple[int, int]]) -> bytes:
    """The message without the fields at `spans` (header_fields' start and end, in order)."""
    kept = []
    position = 0
    for start, end in spans:
        kept.append(raw[position:start])
        position = end
    kept.append(raw[position:])
    return b"".join(kept)


def remove_fields(raw: bytes, name: str) -> bytes:
    """The message without any field of this name; every other byte stays as it was."""
    wanted = name.encode("ascii").lower()
    return without_fields(raw, [(s, e) for n, s, e in header_fields(raw) if n.lower() == wanted])
