"""The archive index on one machine: SQLite with an FTS5 trigram index over the six attributes
Mail Manager searches, beside the archived copies in the object store
(`mxgate-archive/<archive>/<archived message id>.eml`).

The trigram index finds substrings of three characters or more, case-insensitively, without
reading every row; every candidate is then checked against `ArchiveQuery.matches`, which is
the meaning (shorter values and `Unless`-free exact semantics rest on it alone).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from mxgate.adapters.local.database import SqliteDatabase, utc
from mxgate.adapters.local.objects import FileObjectStore
from mxgate.archive.query import STRING_FIELDS, ArchivedMessage, ArchiveQuery, retention_cutoff
from mxgate.errors import PermanentError
from mxgate.mailmanager.actions import ARCHIVE_BUCKET

_COLUMNS = {attribute: name.rstrip("_") + "_text" for name, attribute in STRING_FIELDS.items()}
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS archived (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    received_at TEXT NOT NULL,  -- UTC ISO text: text order is time order
    row TEXT NOT NULL  -- the ArchivedMessage as JSON
);
CREATE INDEX IF NOT EXISTS archived_by_time ON archived (received_at);
CREATE VIRTUAL TABLE IF NOT EXISTS archived_text USING fts5(
    {", ".join(_COLUMNS.values())}, tokenize = 'trigram'
);
"""
_TRIGRAM = 3  # the shortest value the trigram index can look up


def _phrase(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class SqliteArchive(SqliteDatabase):
    """Implements the Archive port, and what only this machine does: indexing and purging."""

    schema = _SCHEMA
    what = "archive index"

    def __init__(
        self, path: Path, objects: FileObjectStore, *, checkpoint_pages: int = 1000
    ) -> None:
        super().__init__(path, checkpoint_pages=checkpoint_pages)
        self.objects = objects

    def add(self, message: ArchivedMessage) -> None:
        """Index one archived copy (again: the same id replaces its row)."""
        texts = [message.value(attribute) for attribute in _COLUMNS]
        row = (
            message.archived_message_id,
            utc(message.received_at),
            message.model_dump_json(by_alias=True),
        )
        with self._transaction() as db:
            # a new id (the usual case) in one statement; the same id again replaces its row
            cursor = db.execute(
                "INSERT INTO archived (id, received_at, row) VALUES (?,?,?) "
                "ON CONFLICT (id) DO NOTHING",
                row,
            )
            if not cursor.rowcount:
                _forget(db, message.archived_message_id)
                cursor = db.execute(
                    "INSERT INTO archived (id, received_at, row) VALUES (?,?,?)", row
                )
            rowid = cursor.lastrowid
            db.execute(
                f"INSERT INTO archived_text (rowid, {', '.join(_COLUMNS.values())}) "  # noqa: S608 -- fixed column names
                f"VALUES (?{', ?' * len(texts)})",
                (rowid, *texts),
            )

    def matching(self, query: ArchiveQuery) -> Iterator[ArchivedMessage]:
        """Every match, newest first (search takes the first `limit`; export takes them all)."""
        where: list[str] = []
        parameters: list[Any] = []
        terms = [
            "(" + " OR ".join(f"{_COLUMNS[attribute]} : {_phrase(v)}" for v in values) + ")"
            for attribute, values in query.conditions()
            if all(len(v) >= _TRIGRAM for v in values)
        ]
        if terms:
            where.append("rowid IN (SELECT rowid FROM archived_text WHERE archived_text MATCH ?)")
            parameters.append(" AND ".join(terms))
        if query.since is not None:
            where.append("received_at >= ?")
            parameters.append(utc(query.since))
        if query.until is not None:
            where.append("received_at <= ?")
            parameters.append(utc(query.until))
        sql = "SELECT row FROM archived" + (" WHERE " + " AND ".join(where) if where else "")  # noqa: S608 -- fixed clauses, values bound
        rows = self.db.execute(sql + " ORDER BY received_at DESC, rowid DESC", parameters)
        for (row,) in rows:
            message = ArchivedMessage.model_validate_json(row)
            if query.matches(message):
                yield message

    def search(self, query: ArchiveQuery) -> list[ArchivedMessage]:
        found: list[ArchivedMessage] = []
        for message in self.matching(query):
            found.append(message)
            if len(found) >= query.limit:
                break
        return found

    def get(self, archived_message_id: str) -> ArchivedMessage | None:
        row = self.db.execute(
            "SELECT row FROM archived WHERE id=?", (archived_message_id,)
        ).fetchone()
        return None if row is None else ArchivedMessage.model_validate_json(row[0])

    def find(self, prefix: str) -> list[str]:
        """Archived message ids that start with `prefix` (commands take a short id)."""
        rows = self.db.execute(
            "SELECT id FROM archived WHERE id >= ? AND id < ? ORDER BY id LIMIT 5",
            (prefix, prefix + "\U0010ffff"),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def raw(self, archived_message_id: str) -> bytes:
        message = self.get(archived_message_id)
        if message is None:
            raise PermanentError(f"no archived message {archived_message_id!r}")
        return self.objects.get(ARCHIVE_BUCKET, message.key)

    def purge(
        self, retentions: Mapping[str, str], now: datetime, *, dry_run: bool = False
    ) -> list[ArchivedMessage]:
        """Delete (with dry_run: only list) what is past its archive's `RetentionPeriod`,
        counted from when it was archived; a message of an archive the template no longer
        has is kept (nothing says how long)."""
        gone: list[ArchivedMessage] = []
        for archive_id, period in retentions.items():
            cutoff = retention_cutoff(period, now)
            if cutoff is None:
                continue
            for message in self.expired(cutoff):
                if message.archive_id == archive_id:
                    if not dry_run:
                        self.remove(message)
                    gone.append(message)
        return gone

    def expired(self, before: datetime) -> list[ArchivedMessage]:
        """Archived before `before`: past the retention period, oldest first."""
        rows = self.db.execute(
            "SELECT row FROM archived WHERE received_at < ? ORDER BY received_at",
            (utc(before),),
        ).fetchall()
        return [ArchivedMessage.model_validate_json(r[0]) for r in rows]

    def remove(self, message: ArchivedMessage) -> None:
        """Forget one archived message: its copy first, then its row, so a crash between the
        two leaves a row whose purge is tried again."""
        self.objects.delete(ARCHIVE_BUCKET, message.key)
        with self._transaction() as db:
            _forget(db, message.archived_message_id)


def _forget(db: sqlite3.Connection, archived_message_id: str) -> None:
    """An archived message's row and its text index entry, if it has them."""
    row = db.execute("SELECT rowid FROM archived WHERE id=?", (archived_message_id,)).fetchone()
    if row is not None:
        db.execute("DELETE FROM archived_text WHERE rowid=?", row)
        db.execute("DELETE FROM archived WHERE rowid=?", row)
