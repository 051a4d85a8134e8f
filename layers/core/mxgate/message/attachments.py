"""Attachments: what their bytes really are, names safe to write anywhere, uuencoded files in
text bodies, and keeping their content in the object store, addressed by its sha256."""

from __future__ import annotations

import mimetypes
import re
import unicodedata
from typing import BinaryIO, Protocol

from mxgate.message.mime import uu_line
from mxgate.message.text import header_text
from mxgate.ports import ObjectStore

# (offset, magic bytes, type): the first match wins, so longer signatures come first.
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%PDF-", "application/pdf"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),  # .doc .xls .msg
    (0, b"Rar!\x1a\x07", "application/vnd.rar"),
    (0, b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (0, b"\x1f\x8b", "application/gzip"),
    (0, b"BZh", "application/x-bzip2"),
    (0, b"\xfd7zXZ\x00", "application/x-xz"),
    (0, b"MSCF", "application/vnd.ms-cab-compressed"),
    (0, b"\x7fELF", "application/x-executable"),
    (0, b"MZ", "application/vnd.microsoft.portable-executable"),
    (0, b"{\\rtf", "application/rtf"),
    (0, b"%!PS", "application/postscript"),
    (0, b"OggS", "application/ogg"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"BEGIN:VCALENDAR", "text/calendar"),
    (0, b"BEGIN:VCARD", "text/vcard"),
    (4, b"ftypheic", "image/heic"),
    (4, b"ftyp", "video/mp4"),
)
# Zip containers named by their first entry (the OOXML and OpenDocument conventions).
_ZIP_KINDS = (
    (b"mimetypeapplication/vnd.oasis.opendocument.text", "application/vnd.oasis.opendocument.text"),
    (
        b"mimetypeapplication/vnd.oasis.opendocument.spreadsheet",
        "application/vnd.oasis.opendocument.spreadsheet",
    ),
    (b"word/", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    (b"xl/", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    (b"ppt/", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
)
_MARKUP = re.compile(rb"\s*(<\?xml|<!doctype html|<html|<svg)", re.IGNORECASE)
_TEXT_CONTROLS = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")


def sniff(head: bytes) -> str | None:
    """The content type the first bytes show, or None when they show nothing known."""
    if not head:
        return None
    for offset, magic, content_type in _SIGNATURES:
        if head.startswith(magic, offset):
            return content_type
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        for marker, content_type in _ZIP_KINDS:
            if marker in head[30:200]:
                return content_type
        return "application/zip"
    if head.startswith((b"RIFF", b"RIFX")) and head[8:12] in (b"WEBP", b"WAVE", b"AVI "):
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}[head[8:12]]
    markup = _MARKUP.match(head.removeprefix(b"\xef\xbb\xbf"))
    if markup is not None:
        tag = markup.group(1).lower()
        if tag == b"<?xml":
            return "image/svg+xml" if b"<svg" in head else "application/xml"
        return "image/svg+xml" if tag == b"<svg" else "text/html"
    if _TEXT_CONTROLS.search(head) is None:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as error:
            if error.start < len(head) - 3:  # not just a character cut at the end
                return None
        return "text/plain"
    return None


# Names Windows refuses as files, whatever the extension.
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", "clock$", "conin$", "conout$"}
    | {f"com{n}" for n in "0123456789¹²³"}
    | {f"lpt{n}" for n in "0123456789¹²³"}
)
_UNSAFE_CHARACTERS = re.compile(r'[<>:"/\\|?*]')
_MAX_NAME = 180


def safe_filename(filename: str | None, sha256: str, content_type: str) -> str:
    """A name safe on any file system: no directories, no control or invisible formatting
    characters (no right-to-left override spoofing `gpj.exe`), no reserved device names, and
    never empty (the content's digest stands in for a missing name)."""
    name = unicodedata.normalize("NFC", filename or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(
        "_" if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp") else c for c in name
    )
    name = _UNSAFE_CHARACTERS.sub("_", name).strip(" .")
    if len(name) > _MAX_NAME:
        _, dot, extension = name.rpartition(".")
        keep = extension if dot and len(extension) <= 16 else ""
        name = name[: _MAX_NAME - len(keep) - 1].rstrip(" .") + (f".{keep}" if keep else "")
    if name.split(".", 1)[0].strip().lower() in _RESERVED:
        name = f"_{name}"
    if not name.strip("_"):
        extension = mimetypes.guess_extension(content_type, strict=False) or ".bin"
        name = f"attachment-{sha256[:12]}{extension}"
    return name


def file_names(names: list[str]) -> list[str]:
    """What the names make of a file on the systems that open it: each name as written, its
    last path component, and that without an NTFS stream suffix (`x.exe::$DATA` and
    `x.exe:Zone.Identifier` are `x.exe` to Windows)."""
    found: list[str] = []
    for written in names:
        name = unicodedata.normalize("NFC", written)
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        found += [name, base, base.split(":", 1)[0]]
    return list(dict.fromkeys(n for n in found if n))


_UU_BEGIN = re.compile(rb"^begin [0-7]{3,4} ([^\r\n]+)\r?$", re.MULTILINE)
_UU_END = re.compile(rb"^end[ \t]*(?:\r?\n|$)", re.MULTILINE)


def extract_uuencoded(data: bytes) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Files uuencoded inside a text body, and the body without them."""
    if b"begin " not in data:
        return data, []
    files = []
    kept = []
    position = 0
    for begin in _UU_BEGIN.finditer(data):
        if begin.start() < position:
            continue
        end = _UU_END.search(data, begin.end())
        if end is None:
            break
        lines = data[begin.end() : end.start()].splitlines()
        content = b"".join(uu_line(line.rstrip(b"\r")) for line in lines if line.strip())
        files.append((header_text(begin.group(1).strip()), content))
        kept.append(data[position : begin.start()])
        position = end.end()
    kept.append(data[position:])
    return b"".join(kept), files


class AttachmentStore(Protocol):
    def keep(self, sha256: str, content_type: str, content: BinaryIO) -> str:
        """Store the content, read from `content` in chunks (once per digest); returns where
        it is."""
        ...


class ObjectStoreAttachments:
    """Attachments in the object store at `<prefix><sha256>`: one copy per distinct content,
    and a key that no filename can influence."""

    def __init__(self, objects: ObjectStore, bucket: str, prefix: str = "attachments/") -> None:
        self.objects = objects
        self.bucket = bucket
        self.prefix = prefix

    def keep(self, sha256: str, content_type: str, content: BinaryIO) -> str:
        key = f"{self.prefix}{sha256}"
        if not self.objects.exists(self.bucket, key):
            self.objects.put(self.bucket, key, content, {"content-type": content_type})
        return key
