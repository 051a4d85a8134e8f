"""The local mailbox hosts' Maildirs as a mail client shows them: hosts, mailboxes, messages
(newest first) with their header fields, body and attachments."""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

from mxgate.message.parse import parse_message


def _inside(root: Path, *parts: str) -> Path | None:
    """root/parts, or None if that would leave root (names come from the address bar)."""
    if any(not p or p in (".", "..") or "/" in p or p.startswith(".") for p in parts):
        return None
    path = root.joinpath(*parts)
    return path if path.resolve().is_relative_to(root.resolve()) else None


class Maildirs:
    def __init__(self, root: Path) -> None:
        self.root = root  # mailboxes/<host>/<recipient>/{new,cur}/

    def hosts(self) -> dict[str, list[tuple[str, int]]]:
        found: dict[str, list[tuple[str, int]]] = {}
        if not self.root.is_dir():
            return found
        for host in sorted(p for p in self.root.iterdir() if p.is_dir()):
            found[host.name] = [
                (box.name, len(self._files(box)))
                for box in sorted(p for p in host.iterdir() if p.is_dir())
            ]
        return found

    @staticmethod
    def _files(box: Path) -> list[Path]:
        files = [f for sub in ("new", "cur") if (box / sub).is_dir() for f in (box / sub).iterdir()]
        return sorted(
            (f for f in files if f.is_file()), key=lambda f: f.stat().st_mtime, reverse=True
        )

    def letters(self, host: str, recipient: str) -> list[dict[str, Any]] | None:
        box = _inside(self.root, host, recipient)
        if box is None or not box.is_dir():
            return None
        rows = []
        for path in self._files(box):
            parsed = parse_message(path.read_bytes()[: 256 * 1024])
            rows.append(
                {
                    "name": path.name,
                    "from": ", ".join(a.address for a in parsed.from_),
                    "subject": parsed.subject,
                    "date": parsed.date or "",
                    "attachments": len(parsed.attachments),
                }
            )
        return rows

    def _path(self, host: str, recipient: str, name: str) -> Path | None:
        box = _inside(self.root, host, recipient)
        if box is None:
            return None
        for sub in ("new", "cur"):
            path = _inside(box, sub, name)
            if path is not None and path.is_file():
                return path
        return None

    def letter(self, host: str, recipient: str, name: str) -> dict[str, Any] | None:
        path = self._path(host, recipient, name)
        if path is None:
            return None
        raw = path.read_bytes()
        return {"name": name, "parsed": parse_message(raw), "size": len(raw)}

    def attachment(
        self, host: str, recipient: str, name: str, number: int
    ) -> tuple[str, bytes] | None:
        path = self._path(host, recipient, name)
        if path is None:
            return None
        store = _Kept()
        parsed = parse_message(path.read_bytes(), store=store)
        if not 0 <= number < len(parsed.attachments):
            return None
        chosen = parsed.attachments[number]
        return chosen.safe_filename, store.contents[chosen.sha256]


class _Kept:
    """An AttachmentStore in memory: one message's attachments, for a download."""

    def __init__(self) -> None:
        self.contents: dict[str, bytes] = {}

    def keep(self, sha256: str, content_type: str, content: BinaryIO) -> str:
        self.contents[sha256] = content.read()
        return sha256
