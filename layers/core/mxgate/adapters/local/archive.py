"""The archive index on one machine: SQLite with an FTS5 trigram index over the six attributes
Mail Manager searches, beside the archived copies in the object store
(`mxgate-archive/<archive>/<archived message id>.eml`).

The trigram index finds substrings of three characters or more, case-insensitively, without
reading every row; every candidate is then checked against `ArchiveQuery.matches`, which is
the meaning (shorter values and `Unless`-free exact semantics rest on it alone).

A new row holds its texts for the trigram index, which takes them in batches of `INDEX_BATCH`
(FTS5 writes a new segment each commit that adds to it, which cost four times the row itself):
the rows after `archived_indexed.upto` wait for the next batch. A search takes every waiting
row as a candidate, so nothing is missed between batches, and nothing waits anywhere but in
the database. (The texts waited in a table of their own before, a page more each row's commit.)
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from mxgate.adapters.local.database import SqliteDatabase, utc
from mxgate.adapters.local.objects import FileObjectStore
from mxgate.archive.query import STRING_FIELDS, ArchivedMessage, ArchiveQuery, retention_cutoff
from mxgate.errors import PermanentError, TransientError
from mxgate.mailmanager.actions import ARCHIVE_BUCKET

_COLUMNS = {attribute: name.rstrip("_") + "_text" for name, attribute in STRING_FIELDS.items()}
_TEXT_COLUMNS = ", ".join(_COLUMNS.values())
_TEXTS = ", ".join(f"{column} TEXT NOT NULL DEFAULT ''" for column in _COLUMNS.values())
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS archived (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    received_at TEXT NOT NULL,  -- UTC ISO text: text order is time order
    row TEXT NOT NULL,  -- the ArchivedMessage as JSON
    {_TEXTS}  -- for the trigram index (a row written before them: '', indexed already)
);
CREATE INDEX IF NOT EXISTS archived_by_time ON archived (received_at);
CREATE VIRTUAL TABLE IF NOT EXISTS archived_text USING fts5(
    {_TEXT_COLUMNS}, tokenize = 'trigram'
);
-- one row (`_begin_indexed`): every archived row up to `upto` is in archived_text, none after
CREATE TABLE IF NOT EXISTS archived_indexed (upto INTEGER NOT NULL);
"""
_TRIGRAM = 3  # the shortest value the trigram index can look up
INDEX_BATCH = 32  # rows a process adds between two batches into the trigram index
_INSERT = (
    f"INSERT INTO archived (id, received_at, row, {_TEXT_COLUMNS}) "  # noqa: S608 -- fixed column names
    f"VALUES (?, ?, ?{', ?' * len(_COLUMNS)})"
)
_WAITING = "rowid > (SELECT upto FROM archived_indexed)"


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
        self._added = 0  # rows added since this process's last batch into the trigram index

    def migrate(self, connection: sqlite3.Connection) -> None:
        _begin_indexed(connection)

    def add(self, message: ArchivedMessage) -> None:
        """Index one archived copy (again: the same id replaces its row); its texts go into
        the trigram index with the next batch."""
        row = (
            message.archived_message_id,
            utc(message.received_at),
            message.model_dump_json(by_alias=True),
            *(message.value(attribute) for attribute in _COLUMNS),
        )
        with self._transaction() as db:
            # a new id (the usual case) in one statement; the same id again replaces its row
            if not db.execute(_INSERT + " ON CONFLICT (id) DO NOTHING", row).rowcount:
                _forget(db, message.archived_message_id)
                db.execute(_INSERT, row)
            self._added += 1
            if self._added >= INDEX_BATCH:
                _index_waiting(db)
                self._added = 0

    def index_waiting(self) -> None:
        """Every waiting row into the trigram index now (a process that stops)."""
        with self._transaction() as db:
            _index_waiting(db)
        self._added = 0

    def close(self) -> None:
        if self._added:
            with contextlib.suppress(TransientError):  # the next batch takes them
                self.index_waiting()
        super().close()

    def matching(self, query: ArchiveQuery) -> Iterator[ArchivedMessage]:
        """Every match, newest first (search takes the first `limit`; export takes them all)."""
        where: list[str] = []
        parameters: list[Any] = []
        terms = [
            "(" + " OR ".join(f"{_COLUMNS[attribute]} : {_phrase(v)}" for v in values) + ")"
            for attribute, values in query.conditions()
            if all(len(v) >= _TRIGRAM for v in values)
        ]
        if terms:  # with every row still waiting for the trigram index: matches() decides
            where.append(
                "(rowid IN (SELECT rowid FROM archived_text WHERE archived_text MATCH ?)"  # noqa: S608 -- constant text
                f" OR {_WAITING})"
            )
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


def _index_waiting(db: sqlite3.Connection) -> None:
    """The waiting rows' texts into the trigram index, in the caller's transaction."""
    db.execute(
        f"INSERT INTO archived_text (rowid, {_TEXT_COLUMNS}) "  # noqa: S608 -- fixed column names
        f"SELECT rowid, {_TEXT_COLUMNS} FROM archived WHERE {_WAITING}"
    )
    db.execute("UPDATE archived_indexed SET upto = (SELECT coalesce(max(rowid), 0) FROM archived)")


def _forget(db: sqlite3.Connection, archived_message_id: str) -> None:
    """An archived message's row and its text index entry. The last row gone, its rowid is
    the next row's (SQLite takes the largest one plus one): `upto` comes down to the largest
    left, so that a new row is never taken as indexed."""
    row = db.execute("SELECT rowid FROM archived WHERE id=?", (archived_message_id,)).fetchone()
    if row is not None:
        db.execute("DELETE FROM archived_text WHERE rowid=?", row)
        db.execute("DELETE FROM archived WHERE rowid=?", row)
        db.execute(
            "UPDATE archived_indexed SET upto = "
            "min(upto, (SELECT coalesce(max(rowid), 0) FROM archived))"
        )


def _begin_indexed(connection: sqlite3.Connection) -> None:
    """The row of `archived_indexed`, once: every row there is is indexed. An index written
    before the texts were in `archived` has them in `archived_unindexed`, which go into the
    trigram index first, and that table goes. The check is repeated inside the write lock, so
    two processes starting together do it once."""

    def begun() -> bool:
        return connection.execute("SELECT 1 FROM archived_indexed").fetchone() is not None

    if begun():
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        if not begun():
            before = connection.execute(
                "SELECT 1 FROM sqlite_schema WHERE name = 'archived_unindexed'"
            ).fetchone()
            if before is not None:
                columns = {c[1] for c in connection.execute("PRAGMA table_info(archived)")}
                for column in _COLUMNS.values():
                    if column not in columns:
                        connection.execute(
                            f"ALTER TABLE archived ADD COLUMN {column} TEXT NOT NULL DEFAULT ''"
                        )
                connection.execute(
                    f"INSERT INTO archived_text (rowid, {_TEXT_COLUMNS}) "  # noqa: S608 -- fixed column names
                    f"SELECT rowid, {_TEXT_COLUMNS} FROM archived_unindexed"
                )
                connection.execute("DROP TABLE archived_unindexed")
            connection.execute(
                "INSERT INTO archived_indexed SELECT coalesce(max(rowid), 0) FROM archived"
            )
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
