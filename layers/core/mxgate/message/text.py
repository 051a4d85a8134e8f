"""Bytes to text the way mail needs it: declared charsets with their real-world supersets,
RFC 2047 encoded words, RFC 6532 UTF-8, and a fallback that never fails."""

from __future__ import annotations

import binascii
import codecs
import re
from functools import lru_cache

# Labels mail programs write, mapped to the codec that decodes what they really send (the
# WHATWG Encoding Standard does the same: "iso-8859-1" text is windows-1252 in practice).
# Labels that say nothing about 8-bit bytes: such text is UTF-8, else windows-1252.
_UNDECLARED = frozenset(
    {"", "us-ascii", "ascii", "x-unknown", "unknown", "unknown-8bit", "default"}
)
_SUPERSETS = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "iso-2022-jp": "iso2022_jp_ext",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
    "tis-620": "cp874",
    "x-mac-roman": "mac-roman",
    "big5": "big5hkscs",
    "utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
}


@lru_cache(maxsize=256)
def codec_for(label: str | None) -> str | None:
    """The Python text codec for a charset label, or None when there is none."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    name = _SUPERSETS.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    # only text encodings: "base64" or "rot13" as a charset must not select a bytes transform
    return info.name if getattr(info, "_is_text_encoding", True) else None


def decode_bytes(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Decode `data` as declared; never raises.

    Text that is not valid in its declared charset but valid UTF-8 is UTF-8 (the most common
    mislabel); otherwise the declared charset wins with bad bytes replaced. Without a usable
    declaration: UTF-8, else windows-1252. Returns the text and, when the declaration did not
    fit, a defect saying so.
    """
    label = (charset or "").strip().strip("\"'").lower()
    codec = None if label in _UNDECLARED else codec_for(label)
    if codec is not None:
        try:
            return data.decode(codec), None
        except UnicodeDecodeError:
            pass
    elif data.isascii():
        unknown = label and label not in _UNDECLARED
        return data.decode("ascii"), (f"unknown charset {charset!r}" if unknown else None)
    if codec != "utf-8":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return text, (f"charset {charset!r} does not fit, decoded as utf-8" if label else None)
    if codec is not None:
        return data.decode(codec, "replace"), f"bytes not valid {charset} replaced"
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace"), "undecodable text, bad bytes replaced"
    return text, (f"charset {charset!r} unknown, decoded as cp1252" if label else None)


def header_text(data: bytes, fallback: str | None = None) -> str:
    """A raw header value to text: UTF-8 (RFC 6532), else the given charset, else cp1252.
    Raw 8-bit bytes inside an encoded word (older mail programs write
    `=?iso-8859-1?Q?M\xfcller?=`) belong to the word's charset: they become =XX first, so the
    word decodes with its own charset wherever it is decoded."""
    if data.isascii():
        return data.decode("ascii")
    if b"=?" in data:
        data = _ENCODED_WORD.sub(_ascii_word, data)
        if data.isascii():
            return data.decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    codec = codec_for(fallback)
    if codec is not None:
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            pass
    return data.decode("cp1252", "replace")


def clean(text: str) -> str:
    """No surrogate escapes (from undecodable bytes) and no NULs: they break JSON and logs."""
    if text.isascii() and "\x00" not in text:
        return text
    cleaned = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return cleaned.replace("\x00", "\ufffd")


_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown(text: str) -> str:
    """Text safe to write on a terminal or into a header field: each control character
    (NUL, BEL, ESC, CR, LF...) as a visible `\\xNN` escape, never raw."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


# An encoded word: =?charset[*lang]?B|Q?text?= (RFC 2047, RFC 2231 section 5).
_ENCODED_WORD = re.compile(rb"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(rb"[ \t\r\n]*")
_Q_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")


def _ascii_word(match: re.Match[bytes]) -> bytes:
    """An encoded word with its 8-bit bytes written as Q's =XX (B words cannot hold them)."""
    word = match.group(0)
    if word.isascii() or match.group(2) not in b"qQ":
        return word
    payload = match.group(3)
    start = match.start(3) - match.start(0)
    escaped = b"".join(b"=%02X" % byte if byte > 0x7F else bytes([byte]) for byte in payload)
    return word[:start] + escaped + word[start + len(payload) :]


def _word_bytes(encoding: bytes, payload: bytes) -> bytes:
    if encoding in b"bB":
        payload = payload.rstrip(b"=")
        payload += b"=" * (-len(payload) % 4)
        try:
            return binascii.a2b_base64(payload)
        except binascii.Error:
            return b""
    return _Q_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), payload.replace(b"_", b" "))


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words anywhere in `value` (lenient: also inside quotes and next
    to other text, as real mail writes them). Adjacent words are joined before decoding, so a
    character split across two words survives; whitespace between encoded words is dropped."""
    if "=?" not in value:
        return value
    raw = value.encode("utf-8", "surrogateescape")
    pieces: list[str] = []
    position = 0
    pending: list[bytes] = []
    pending_charset = ""

    def flush() -> None:
        nonlocal pending, pending_charset
        if pending:
            text, _ = decode_bytes(b"".join(pending), pending_charset)
            pieces.append(text)
            pending, pending_charset = [], ""

    for match in _ENCODED_WORD.finditer(raw):
        gap = raw[position : match.start()]
        if gap and (not pending or _BETWEEN_WORDS.fullmatch(gap) is None):
            flush()
            pieces.append(gap.decode("utf-8", "surrogateescape"))
        charset = match.group(1).decode("ascii", "replace").lower()
        if pending and charset != pending_charset:
            flush()
        pending_charset = charset
        pending.append(_word_bytes(match.group(2), match.group(3)))
        position = match.end()
    flush()
    pieces.append(raw[position:].decode("utf-8", "surrogateescape"))
    return clean("".join(pieces))


_FOLD = re.compile(r"\r?\n(?=[ \t])")


def unfold(value: str) -> str:
    """RFC 5322 unfolding: a line break before whitespace goes; stray line breaks too."""
    if "\n" not in value and "\r" not in value:  # one line: most fields
        return value
    return _FOLD.sub("", value).replace("\r", "").replace("\n", "")
