"""The archive's ports: where the Archive rule action's copies are indexed, and how an
operator searches them (the local SQLite FTS index, or Mail Manager's archive API on AWS)."""

from __future__ import annotations

from typing import Protocol

from mxgate.archive.query import ArchivedMessage, ArchiveQuery


class Archive(Protocol):
    """An archive's index: the local SQLite FTS index, or Mail Manager's archive API."""

    def search(self, query: ArchiveQuery) -> list[ArchivedMessage]:
        """At most `query.limit` matches, newest first."""
        ...

    def get(self, archived_message_id: str) -> ArchivedMessage | None: ...

    def raw(self, archived_message_id: str) -> bytes:
        """The message as archived (raises PermanentError when it is not there)."""
        ...


class ArchiveIndex(Protocol):
    """Where the Archive rule action's copies are indexed for search (SQLite FTS here; on AWS
    Mail Manager archives and indexes them itself)."""

    def add(self, message: ArchivedMessage) -> None: ...
