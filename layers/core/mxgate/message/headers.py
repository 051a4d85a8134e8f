"""Edits to raw message bytes. The relayed message is always the original bytes with new
header fields prepended: re-serialising a parsed message breaks DKIM signatures."""

from __future__ import annotations

from collections.abc import Iterable
from email.header import Header

_CRLF = b"\r\n"


def format_field(name: str, value: str) -> bytes:
    """One header field, RFC 2047-encoded if it is not ASCII, folded, CRLF-terminated."""
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


def header_block_end(raw: bytes) -> int:
    """Offset just past the blank line that ends the header section (len(raw) if none)."""
    ends = [
        index + len(separator)
        for separator in (b"\r\n\r\n", b"\n\n")
        if (index := raw.find(separator)) >= 0
    ]
    return min(ends, default=len(raw))
