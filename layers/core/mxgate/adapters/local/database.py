"""The gateway's SQLite databases (WAL mode): every process opens its own connection to each
file. The state database's schema is here; the archive index keeps its own file.

Commits are not fsynced (synchronous=NORMAL): a power cut may forget the last records, never
the messages, whose spool files are fsynced and replayed on start; replays are harmless
because deliveries are idempotent. A spool file goes only after `make_durable` (under `mxgate
run` the gateway's, one a look for every file finished since) has made its recipients' ends
durable. A `durable` transaction is fsynced on
commit. Within `grouped()` (a message's run in a worker), timeline events and idempotency
records wait in memory for the next transaction or the group's end: one commit where there
were several. A database another process keeps busy past the timeout, a full disk and an I/O
error raise TransientError: the step is retried, the mail waits, nothing is quarantined for it.
"""

from __future__ import annotations

import builtins
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from mxgate.errors import TransientError

# The tables keyed by text are WITHOUT ROWID: a row is written into its key's b-tree alone,
# where a rowid table writes it twice (the table, and the index of its primary key), a page
# more for each in every message's commit. A database made before keeps its rowid tables,
# which every statement here reads and writes alike.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    at TEXT NOT NULL,
    stage TEXT NOT NULL,
    recipient TEXT,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_by_message ON events (message_id, id);
-- the arrivals alone (what `recent` lists): an index of every event by its stage had a page
-- of its own to write for each stage a message reaches, in every message's commit
CREATE INDEX IF NOT EXISTS events_arrived ON events (message_id, id)
    WHERE stage IN ('accepted', 'parsed');
CREATE TABLE IF NOT EXISTS recipient_states (
    message_id TEXT NOT NULL,
    recipient_key TEXT NOT NULL,  -- the recipient casefolded
    recipient TEXT NOT NULL,  -- as written
    outcome TEXT NOT NULL,
    at TEXT NOT NULL,
    route TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (message_id, recipient_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    outcome TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deferred (
    id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL,
    due_at TEXT NOT NULL,
    leased_until TEXT,
    document TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deferred_by_due ON deferred (due_at);
CREATE INDEX IF NOT EXISTS deferred_by_message ON deferred (message_id);
CREATE TABLE IF NOT EXISTS messages (
    message_id TEXT PRIMARY KEY,
    at TEXT NOT NULL,  -- UTC ISO text of the parse
    summary TEXT NOT NULL  -- MessageSummary JSON: what tracking searches
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_by_time ON messages (at);
"""

# A database written before recipient_key: each recipient's first state is kept.
_MIGRATE_RECIPIENT_STATES = """
ALTER TABLE recipient_states RENAME TO recipient_states_before_key;
CREATE TABLE recipient_states (
    message_id TEXT NOT NULL,
    recipient_key TEXT NOT NULL,
    recipient TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at TEXT NOT NULL,
    route TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (message_id, recipient_key)
) WITHOUT ROWID;
INSERT OR IGNORE INTO recipient_states
    SELECT message_id, casefold(recipient), recipient, outcome, at, route, detail
    FROM recipient_states_before_key ORDER BY at;
DROP TABLE recipient_states_before_key;
"""
# Primary result codes that say the machine is short of something for now: another process
# holds the database (after the connection's timeout), the disk is full, the device failed
# a read or write, memory ran out, the file could not be opened (no descriptor left).
_FOR_NOW = {
    sqlite3.SQLITE_BUSY: "busy",
    sqlite3.SQLITE_LOCKED: "busy",
    sqlite3.SQLITE_FULL: "full",
    sqlite3.SQLITE_IOERR: "failing",
    sqlite3.SQLITE_NOMEM: "out of memory",
    sqlite3.SQLITE_CANTOPEN: "not openable",
}


class _TemporaryIsTransient:
    """What may pass (`_FOR_NOW`) becomes TransientError, which the state machine retries.
    A class, not a @contextmanager: it wraps every statement, and a generator's setup cost
    a read as much as its own SQL did (1.5 of 5 us)."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(error, sqlite3.OperationalError):
            code = getattr(error, "sqlite_errorcode", None)
            said = _FOR_NOW.get(code & 0xFF) if code is not None else None  # extended -> primary
            if said is not None:
                raise TransientError(f"{self.what} {said}: {error}") from error


class SqliteDatabase:
    """One connection to a database file of the gateway (WAL mode), and its one write lock;
    a subclass names its schema (and how an earlier version of it is brought up to date)."""

    schema = ""
    what = "database"  # what a busy error names

    def __init__(
        self,
        path: Path,
        busy_timeout: float = 30.0,
        before_durable_commit: Callable[[], None] | None = None,
        *,
        checkpoint_pages: int = 1000,
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout  # seconds to wait for another process's write
        # what a durable record may point at is made durable first (a worker's objects)
        self.before_durable_commit = before_durable_commit
        # a commit that leaves the WAL past this many pages copies it into the database and
        # fsyncs both (SQLite's default 1000); see `checkpoint`
        self.checkpoint_pages = checkpoint_pages
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._transient = _TemporaryIsTransient(self.what)
        self._groups = 0  # grouped() blocks open on this connection
        # writes for the next commit: (table, statement, rows)
        self._waiting: list[tuple[str, str, list[Sequence[object]]]] = []

    @property
    def db(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=self.busy_timeout, check_same_thread=False, isolation_level=None
            )
            connection.create_function("casefold", 1, str.casefold, deterministic=True)
            try:
                with self._transient:
                    connection.execute("PRAGMA journal_mode=WAL")
                    connection.execute("PRAGMA synchronous=NORMAL")
                    connection.execute(f"PRAGMA wal_autocheckpoint={int(self.checkpoint_pages)}")
                    connection.executescript(self.schema)
                    self.migrate(connection)
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def migrate(self, connection: sqlite3.Connection) -> None:
        """Bring a database written by an earlier version up to this schema."""

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database (PASSIVE: no writer or reader waits for
        it). The gateway process does this for the workers, whose connections checkpoint only
        past a far larger WAL: the copy and its two fsyncs then overlap their work instead of
        stalling a message every few dozen."""
        if self._connection is None and not self.path.exists():
            return  # nothing written yet (a rule set without Archive has no index)
        with self._lock, self._transient:
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def make_durable(self) -> None:
        """Every commit made so far, by any connection, durable: one fsync of the WAL file. A
        commit's frames are either still in it or were copied into the database by a
        checkpoint, which fsyncs the WAL before it copies and the database before the WAL is
        rewound or deleted; the WAL's name is made durable by SQLite's own sync of its header
        when it starts the file. No WAL (the last connection's close checkpointed it and
        deleted it): the database file's fsync. A failure raises OSError."""
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        except FileNotFoundError:
            fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextmanager
    def grouped(self) -> Iterator[None]:
        """Group commit: the writes `_later` is given meanwhile go with the next transaction
        (a terminal state's, say), before a read of their tables, or when the block ends. A block that ends
        in an error (or cannot write at its end) drops what is still waiting: its run did not
        finish, it is done again, and writes them again."""
        self._groups += 1
        try:
            yield
            if self._groups == 1:
                self._flush()
        finally:
            self._groups -= 1
            if not self._groups:
                self._waiting.clear()

    def _flush(self) -> None:
        if self._waiting:
            with self._transaction():
                pass  # the transaction writes what was waiting

    @contextmanager
    def _transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction, this connection's only one (the lock) from the PRAGMA to the
        commit; the writes waiting for a commit go first. `durable`: fsynced on commit
        (deferred deliveries and dead letters are all that remembers a delivery once the spool
        file is gone): `before_durable_commit` runs first."""
        if durable and self.before_durable_commit is not None:
            self.before_durable_commit()
        with self._lock, self._transient:
            db = self.db
            if durable:
                db.execute("PRAGMA synchronous=FULL")
            waiting, self._waiting = self._waiting, []
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    for _, sql, rows in waiting:
                        db.executemany(sql, rows)
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except BaseException:
                self._waiting = waiting + self._waiting  # kept for the next try
                raise
            finally:
                if durable:
                    db.execute("PRAGMA synchronous=NORMAL")

    def _write(self, sql: str, rows: Sequence[Sequence[object]], *, durable: bool = False) -> int:
        with self._transaction(durable=durable) as db:
            return db.executemany(sql, rows).rowcount

    def _later(self, table: str, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """A write to `table` that may wait for the next commit of a `grouped()` block (at
        once outside)."""
        if not rows:
            return
        if self._groups:
            waiting = self._waiting
            if waiting and waiting[-1][1] == sql:  # one executemany for consecutive writes
                waiting[-1][2].extend(rows)
            else:
                waiting.append((table, sql, list(rows)))
        else:
            self._write(sql, rows)

    def _read(
        self, sql: str, parameters: Sequence[object] = (), *, tables: Collection[str] = ()
    ) -> builtins.list[Any]:
        """A read sees every write made before it: what waits goes first, unless the read
        names the `tables` it reads and none of them has a write waiting (a terminal state's
        read then leaves the timeline events for the terminal state's own commit)."""
        if not tables or any(table in tables for table, _, _ in self._waiting):
            self._flush()
        with self._transient:
            return self.db.execute(sql, parameters).fetchall()


class StateDatabase(SqliteDatabase):
    """The state database: the timeline, terminal states, idempotency keys, dead letters and
    the deferred queue (`adapters/local/state.py`), and quarantine records."""

    schema = _SCHEMA
    what = "state database"

    def migrate(self, connection: sqlite3.Connection) -> None:
        _migrate_recipient_states(connection)
        connection.execute("DROP INDEX IF EXISTS events_by_stage")  # events_arrived's before


def _migrate_recipient_states(connection: sqlite3.Connection) -> None:
    """Key terminal states by the casefolded recipient (once: the check is repeated inside the
    write lock, so two processes starting together migrate it once)."""

    def keyed() -> bool:
        columns = connection.execute("PRAGMA table_info(recipient_states)").fetchall()
        return any(column[1] == "recipient_key" for column in columns)

    if keyed():
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        if not keyed():
            for statement in _MIGRATE_RECIPIENT_STATES.split(";"):
                if statement.strip():
                    connection.execute(statement)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def utc(moment: datetime) -> str:
    """ISO text in UTC, so that text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
