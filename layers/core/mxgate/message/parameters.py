"""MIME field parameters (RFC 2045, RFC 2231), read the way a hostile message needs. Pure.

The standard library's compat32 reader raises on a field that mixes `filename*` with
`filename*0`, and its newer one keeps only the first of two `filename` parameters. A gateway
must see every name a part gives itself, because mail clients disagree about which one wins:
so every parameter is kept, duplicates and RFC 2231 sections included, and `value` picks the
one value clients prefer (the RFC 2231 form, else the first plain one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from mxgate.message.text import decode_bytes

_NAME = re.compile(r"^(?P<name>[^*]+)(?:\*(?P<section>\d+))?(?P<extended>\*)?$")
_CHARSET = re.compile(r"^(?P<charset>[^']*)'[^']*'(?P<rest>.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str  # lower case, without RFC 2231's `*N*` marks
    section: int | None  # RFC 2231 continuation number, None for a parameter in one piece
    extended: bool  # RFC 2231 `*`: charset'language'%XX encoding
    raw: str  # the value as written, quotes taken off


def _items(field: str) -> list[str]:
    """The `;`-separated items after the field's main value, quotes respected."""
    items: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in field:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return items[1:]  # the first item is the main value (a type, a disposition)


def _unquoted(value: str) -> str:
    value = value.strip()
    if not value.startswith('"'):
        return value
    out: list[str] = []
    escaped = False
    for char in value[1:]:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            break
        else:
            out.append(char)
    return "".join(out)


def parse_parameters(field: str) -> list[Parameter]:
    """Every parameter of a field value such as `attachment; filename="a.pdf"`, in order."""
    found = []
    for item in _items(field):
        key, equals, value = item.partition("=")
        match = _NAME.fullmatch(key.strip().lower())
        if not equals or match is None:
            continue
        section = match.group("section")
        found.append(
            Parameter(
                name=match.group("name").strip(),
                section=int(section) if section is not None else None,
                extended=match.group("extended") is not None,
                raw=_unquoted(value),
            )
        )
    return found


def _percent_decoded(text: str, charset: str | None) -> str:
    decoded, _ = decode_bytes(unquote_to_bytes(text), charset or "utf-8")
    return decoded


def _extended(raw: str, charset: str | None = None) -> tuple[str, str | None]:
    """An RFC 2231 extended value decoded, and its charset (given in the first piece)."""
    if charset is None and (match := _CHARSET.fullmatch(raw)) is not None:
        charset = match.group("charset") or None
        raw = match.group("rest")
    return _percent_decoded(raw, charset), charset


def _joined(pieces: list[Parameter]) -> str:
    """RFC 2231 sections in order of their numbers, each decoded as its `*` says."""
    charset: str | None = None
    text = []
    for piece in sorted(pieces, key=lambda p: p.section or 0):
        if piece.extended:
            decoded, charset = _extended(piece.raw, charset if piece.section else None)
            text.append(decoded)
        else:
            text.append(piece.raw)
    return "".join(text)


def values(parameters: list[Parameter], name: str) -> list[str]:
    """Every value `name` is given: each plain one, each RFC 2231 one, the sections joined and
    each section alone; duplicates kept once, in the order written."""
    mine = [p for p in parameters if p.name == name]
    sections = [p for p in mine if p.section is not None]
    found = [_extended(p.raw)[0] if p.extended else p.raw for p in mine if p.section is None]
    if sections:
        found.append(_joined(sections))
        found += [_extended(p.raw)[0] if p.extended else p.raw for p in sections]
    return list(dict.fromkeys(v for v in found if v))


def value(parameters: list[Parameter], name: str) -> str | None:
    """The one value: RFC 2231 sections joined, else an RFC 2231 value, else the first plain
    one (as mail clients read it); None when the parameter is not there or empty."""
    mine = [p for p in parameters if p.name == name]
    sections = [p for p in mine if p.section is not None]
    if any(p.section == 0 for p in sections):
        return _joined(sections) or None
    extended = [p for p in mine if p.section is None and p.extended]
    if extended:
        return _extended(extended[0].raw)[0] or None
    plain = [p.raw for p in mine if p.section is None]
    return plain[0] if plain and plain[0] else None
