"""What DKIM (RFC 6376) and ARC (RFC 8617) signatures are computed over: tag lists, the header
fields as a verifier reads them, header and body canonicalization, and the body hashes, computed
while the body streams by (one canonical copy per canonicalization in use, never the whole
message in memory)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

Field = tuple[bytes, bytes]  # a header field's name, and its value as received, CRLF included
TagList = dict[bytes, bytes]

HASHES: dict[bytes, Callable[[], Any]] = {b"sha256": hashlib.sha256, b"sha1": hashlib.sha1}


class TagListError(ValueError):
    """Not a tag=value list (RFC 6376 3.2)."""


class HeaderSectionError(ValueError):
    """A header line that is neither a field nor a continuation."""


_TAG_NAME = re.compile(rb"[A-Za-z]\w*")
_FIELD_NAME = re.compile(rb"([\x21-\x7e]+?):")
# The b= tag's value, which is left out of the signature field when its hash is computed.
_FWS = rb"(?:(?:\s*\r?\n)?\s+)?"
_B_VALUE = re.compile(rb"([;\s]b" + _FWS + rb"=)(?:" + _FWS + rb"[a-zA-Z0-9+/=])*(?:\r?\n\Z)?")
_WSP_RUN = re.compile(rb"[ \t]+")
_LINE_BREAK = re.compile(rb"\r?\n")


def parse_tags(value: bytes) -> TagList:
    """RFC 6376 3.2: `tag=value` pairs split by ";", each tag once; a trailing ";" is fine."""
    tags: TagList = {}
    specs = value.strip().split(b";")
    if not specs[-1].strip():
        specs.pop()
    for spec in specs:
        name, equals, tag_value = spec.partition(b"=")
        name = name.strip()
        if not equals or _TAG_NAME.match(name) is None:
            raise TagListError(f"not a tag=value: {spec[:40]!r}")
        if name in tags:
            raise TagListError(f"{name.decode(errors='replace')}= appears twice")
        tags[name] = tag_value.strip()
    return tags


def unfolded(value: bytes) -> bytes:
    """A tag value without folding whitespace (b=, bh= and h= may be folded anywhere)."""
    return re.sub(rb"\s+", b"", value)


def verifier_fields(header_section: bytes) -> list[Field]:
    """The fields as DKIM verifiers read them: lines end in CRLF whatever the message used, a
    continuation belongs to the field above it, an mbox "From " line is skipped."""
    fields: list[list[bytes]] = []
    for line in _LINE_BREAK.split(header_section):
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise HeaderSectionError("the header section starts with a continuation line")
            fields[-1][1] += line + b"\r\n"
            continue
        match = _FIELD_NAME.match(line)
        if match is not None:
            fields.append([match.group(1), line[match.end() :] + b"\r\n"])
        elif not line.startswith(b"From "):
            raise HeaderSectionError(f"not a header field: {line[:40]!r}")
    return [(name, value) for name, value in fields]


def relaxed_field(name: bytes, value: bytes) -> bytes:
    """RFC 6376 3.4.2: lower-case name, unfolded value, whitespace runs as one space."""
    value = _WSP_RUN.sub(b" ", _LINE_BREAK.sub(b"", value)).strip()
    return name.lower().rstrip() + b":" + value + b"\r\n"


def canonical_field(name: bytes, value: bytes, *, relaxed: bool) -> bytes:
    return relaxed_field(name, value) if relaxed else name + b":" + value


def select_fields(fields: list[Field], names: list[bytes]) -> list[Field]:
    """RFC 6376 5.4.2: each name in h= takes the last instance not taken yet, from the bottom."""
    chosen = []
    taken: dict[bytes, int] = {}
    for name in names:
        index = taken.get(name, len(fields))
        while index > 0:
            index -= 1
            if fields[index][0].lower() == name:
                chosen.append(fields[index])
                break
        taken[name] = index
    return chosen


def signed_header_data(
    fields: list[Field], names: list[bytes], signature: Field, *, relaxed: bool
) -> bytes:
    """The bytes a signature's b= covers: the fields h= names, canonicalized, then the
    signature field itself with b= empty and no line break at its end (RFC 6376 3.7)."""
    parts = [canonical_field(n, v, relaxed=relaxed) for n, v in select_fields(fields, names)]
    name, value = signature
    parts.append(canonical_field(name, _B_VALUE.sub(rb"\1", value), relaxed=relaxed).rstrip())
    return b"".join(parts)


def header_names(h_value: bytes) -> list[bytes]:
    return [name.lower() for name in re.split(rb"\s*:\s*", h_value.strip())]


class BodyHash:
    """A hash over the first `limit` bytes of a canonical body (all of it without l=)."""

    def __init__(self, hash_name: bytes, limit: int | None) -> None:
        self._hash = HASHES[hash_name]()
        self._left = limit

    def update(self, data: bytes) -> None:
        if self._left is not None:
            data = data[: self._left]
            self._left -= len(data)
        self._hash.update(data)

    def digest(self) -> bytes:
        return bytes(self._hash.digest())


_TRAILING_WSP = re.compile(rb"[ \t]+\n")


class BodyCanonicalizer:
    """RFC 6376 3.4.3 (simple) or 3.4.4 (relaxed) body canonicalization, streamed: lines end
    in CRLF, empty lines at the end are dropped, and relaxed also folds whitespace. An
    unfinished last line is finished with CRLF, its whitespace kept as it was, as dkimpy does."""

    def __init__(self, relaxed: bool) -> None:
        self.relaxed = relaxed
        self.hashes: list[BodyHash] = []
        self._rest = b""
        self._blank_lines = 0  # empty lines seen but not yet written: they may end the body
        self._written = False

    def _emit(self, data: bytes) -> None:
        self._written = True
        for body_hash in self.hashes:
            body_hash.update(data)

    def _lines(self, block: bytes, *, finished: bool = True) -> None:
        """Whole lines, the block ending with a line break; or the unfinished last line."""
        block = block.replace(b"\r\n", b"\n")
        if not finished:
            block += b"\n"  # a CR at its very end stays a CR, as dkimpy keeps it
        if self.relaxed:
            block = _WSP_RUN.sub(b" ", _TRAILING_WSP.sub(b"\n", block) if finished else block)
        text = block.rstrip(b"\n")
        if not text:
            self._blank_lines += len(block)
            return
        self._emit(b"\r\n" * self._blank_lines + text.replace(b"\n", b"\r\n") + b"\r\n")
        self._blank_lines = len(block) - len(text) - 1

    def feed(self, data: bytes) -> None:
        data = self._rest + data
        cut = data.rfind(b"\n") + 1
        self._rest = data[cut:]
        if cut:
            self._lines(data[:cut])

    def end(self) -> None:
        if self._rest:
            last, self._rest = self._rest, b""
            self._lines(last, finished=False)
        if not self._written and not self.relaxed:
            self._emit(b"\r\n")  # an empty body is one CRLF in simple


class BodyHashes:
    """Every body hash one message's signatures ask for, from one pass over the body."""

    def __init__(self) -> None:
        self._canonicalizers: dict[bool, BodyCanonicalizer] = {}

    def request(self, *, relaxed: bool, hash_name: bytes, limit: int | None) -> BodyHash:
        body_hash = BodyHash(hash_name, limit)
        canonicalizer = self._canonicalizers.setdefault(relaxed, BodyCanonicalizer(relaxed))
        canonicalizer.hashes.append(body_hash)
        return body_hash

    @property
    def wanted(self) -> bool:
        return bool(self._canonicalizers)

    def feed(self, data: bytes) -> None:
        for canonicalizer in self._canonicalizers.values():
            canonicalizer.feed(data)

    def end(self) -> None:
        for canonicalizer in self._canonicalizers.values():
            canonicalizer.end()
