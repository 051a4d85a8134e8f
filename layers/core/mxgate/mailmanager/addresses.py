"""Address lists: membership with Mail Manager's wildcards (`*@example.com`, `user*@x`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol


class AddressBook(Protocol):
    """Looks up members of Mail Manager address lists by list id."""

    def contains(self, list_id: str, address: str) -> bool: ...


@lru_cache(maxsize=4096)
def _pattern(entry: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else re.escape(c) for c in entry), re.IGNORECASE)


def matches_entry(entry: str, address: str) -> bool:
    if "*" not in entry:
        return entry.casefold() == address.casefold()
    return _pattern(entry).fullmatch(address) is not None


def in_list(entries: Iterable[str], address: str) -> bool:
    return any(matches_entry(entry, address) for entry in entries)


class StaticAddressBook:
    """An address book held in memory (tests, `rules explain`, and the loaded local lists)."""

    def __init__(self, lists: Mapping[str, Iterable[str]] | None = None) -> None:
        self._exact: dict[str, set[str]] = {}
        self._wild: dict[str, list[str]] = {}
        for list_id, entries in (lists or {}).items():
            self.replace(list_id, entries)

    def replace(self, list_id: str, entries: Iterable[str]) -> None:
        items = [entry.strip() for entry in entries if entry.strip()]
        self._exact[list_id] = {e.casefold() for e in items if "*" not in e}
        self._wild[list_id] = [e for e in items if "*" in e]

    def contains(self, list_id: str, address: str) -> bool:
        if address.casefold() in self._exact.get(list_id, ()):
            return True
        return in_list(self._wild.get(list_id, ()), address)


class AddressListMembers(Protocol):
    """The members of Mail Manager address lists, to be read and changed (a file per list
    locally, Mail Manager's API on AWS)."""

    def members(self, list_id: str) -> list[str]: ...

    def add(self, list_id: str, addresses: Sequence[str]) -> None: ...

    def remove(self, list_id: str, addresses: Sequence[str]) -> None: ...


@dataclass(frozen=True, slots=True)
class SyncResult:
    list_id: str
    added: list[str]
    removed: list[str]
    members: int  # after the sync (or, for a dry run, after it would have run)

    def as_json(self) -> dict[str, object]:
        return {
            "list": self.list_id,
            "added": self.added,
            "removed": self.removed,
            "members": self.members,
        }


def sync_members(
    lists: AddressListMembers, list_id: str, wanted: Iterable[str], *, dry_run: bool = False
) -> SyncResult:
    """Make a list hold exactly `wanted` (addresses compare without case): additions first,
    so no address that stays listed is ever missing from it in between."""
    target = {entry.casefold(): entry for entry in wanted}
    current = {entry.casefold(): entry for entry in lists.members(list_id)}
    added = sorted(target[key] for key in target.keys() - current.keys())
    removed = sorted(current[key] for key in current.keys() - target.keys())
    if not dry_run:
        if added:
            lists.add(list_id, added)
        if removed:
            lists.remove(list_id, removed)
    return SyncResult(list_id, added, removed, len(target))
