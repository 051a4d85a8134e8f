"""Mail Manager address lists on one machine: one file per list, one address (or pattern) per
line, under $MXGATE_HOME/address-lists/<list logical id>.txt; a list the template marks
`MxgateMembers: directory` is read from the routes file instead
(routing/recipients.py `DirectoryAddressBook`)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from mxgate.adapters.local.files import write_atomically
from mxgate.errors import ConfigError
from mxgate.mailmanager.addresses import StaticAddressBook

_ENTRY = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+$")
MAX_ENTRY = 320  # Mail Manager's limit for one address


def valid_entry(entry: str) -> bool:
    """An address, or a pattern with `*` wildcards (`*@example.com`, `user*@example.com`)."""
    return len(entry) <= MAX_ENTRY and bool(_ENTRY.fullmatch(entry))


class FileAddressBook:
    """Reads each list file when it changes, so `mxgate address-list` edits apply at once."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._book = StaticAddressBook()
        self._stamps: dict[str, int] = {}

    def path(self, list_id: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", list_id):
            raise ConfigError(f"invalid address list id {list_id!r}")
        return self.directory / f"{list_id}.txt"

    def entries(self, list_id: str) -> list[str]:
        try:
            text = self.path(list_id).read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [
            line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
        ]

    def save(self, list_id: str, entries: list[str]) -> None:
        unique = {entry.casefold(): entry for entry in reversed(entries)}  # first spelling wins
        body = "".join(f"{e}\n" for e in sorted(unique.values(), key=str.casefold))
        write_atomically(self.path(list_id), body.encode())

    def contains(self, list_id: str, address: str) -> bool:
        path = self.path(list_id)
        try:
            stamp = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            stamp = -1
        if self._stamps.get(list_id) != stamp:
            self._book.replace(list_id, self.entries(list_id))
            self._stamps[list_id] = stamp
        return self._book.contains(list_id, address)
