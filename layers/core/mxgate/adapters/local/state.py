"""Timeline, idempotency keys and dead letters in one SQLite database (WAL mode).

Every process opens its own connection. Commits are not fsynced (synchronous=NORMAL): a
power cut may forget the last records, never the messages, whose spool files are fsynced
and replayed on start; replays are harmless because deliveries are idempotent. A database
another process keeps busy past the timeout raises TransientError: the step is retried.

A recipient's terminal state is keyed by its casefolded address, as on DynamoDB: `Alice@` and
`alice@` are one recipient, which settles once.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mxgate.errors import TransientError
from mxgate.timeline import MessageSummary, Outcome, RecipientState, Stage, TimelineEvent

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
CREATE INDEX IF NOT EXISTS events_by_stage ON events (stage, id);
CREATE TABLE IF NOT EXISTS recipient_states (
    message_id TEXT NOT NULL,
    recipient_key TEXT NOT NULL,  -- the recipient casefolded
    recipient TEXT NOT NULL,  -- as written
    outcome TEXT NOT NULL,
    at TEXT NOT NULL,
    route TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (message_id, recipient_key)
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    outcome TEXT NOT NULL
);
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
);
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
);
INSERT OR IGNORE INTO recipient_states
    SELECT message_id, casefold(recipient), recipient, outcome, at, route, detail
    FROM recipient_states_before_key ORDER BY at;
DROP TABLE recipient_states_before_key;
"""
_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


@contextmanager
def _busy_is_transient() -> Iterator[None]:
    """SQLITE_BUSY / SQLITE_LOCKED after the connection's timeout: another process holds the
    database; the state machine retries a TransientError."""
    try:
        yield
    except sqlite3.OperationalError as error:
        if getattr(error, "sqlite_errorcode", None) in _BUSY:
            raise TransientError(f"state database busy: {error}") from error
        raise


class SqliteState:
    """Implements the Timeline, Idempotency, DeadLetters and Deferrals ports."""

    def __init__(self, path: Path, busy_timeout: float = 30.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout  # seconds to wait for another process's write
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @property
    def db(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=self.busy_timeout, check_same_thread=False, isolation_level=None
            )
            connection.create_function("casefold", 1, str.casefold, deterministic=True)
            try:
                with _busy_is_transient():
                    connection.execute("PRAGMA journal_mode=WAL")
                    connection.execute("PRAGMA synchronous=NORMAL")
                    connection.executescript(_SCHEMA)
                    _migrate(connection)
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @contextmanager
    def _transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction, this connection's only one (the lock) from the PRAGMA to the
        commit. `durable`: fsynced on commit (deferred deliveries and dead letters are all that
        remembers a delivery once the spool file is gone)."""
        with self._lock, _busy_is_transient():
            db = self.db
            if durable:
                db.execute("PRAGMA synchronous=FULL")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            finally:
                if durable:
                    db.execute("PRAGMA synchronous=NORMAL")

    def _write(self, sql: str, rows: Sequence[Sequence[object]], *, durable: bool = False) -> int:
        with self._transaction(durable=durable) as db:
            return db.executemany(sql, rows).rowcount

    def _read(self, sql: str, parameters: Sequence[object] = ()) -> builtins.list[Any]:
        with _busy_is_transient():
            return self.db.execute(sql, parameters).fetchall()

    # ----------------------------------------------------------------------- Timeline

    def record(self, event: TimelineEvent) -> None:
        self.record_many([event])

    def record_many(self, events: Sequence[TimelineEvent]) -> None:
        if not events:
            return
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO events (message_id, at, stage, recipient, detail) VALUES (?,?,?,?,?)",
                [
                    (e.message_id, e.at.isoformat(), e.stage.value, e.recipient, e.detail)
                    for e in events
                ],
            )
            db.executemany(
                "INSERT OR REPLACE INTO messages (message_id, at, summary) VALUES (?,?,?)",
                [
                    (e.message_id, _utc(e.at), e.summary.model_dump_json(by_alias=True))
                    for e in events
                    if e.summary is not None
                ],
            )

    def summaries(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[tuple[str, datetime, MessageSummary]]:
        """Parsed messages with who sent them to whom about what, newest first."""
        rows = self._read(
            "SELECT message_id, at, summary FROM messages WHERE at >= ? AND at <= ? "
            "ORDER BY at DESC",
            (_utc(since) if since else "", _utc(until) if until else "\uffff"),
        )
        for message_id, at, summary in rows:
            yield (
                message_id,
                datetime.fromisoformat(at),
                MessageSummary.model_validate_json(summary),
            )

    def settle(self, state: RecipientState) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO recipient_states "
                "(message_id, recipient_key, recipient, outcome, at, route, detail) "
                "VALUES (?,?,?,?,?,?,?)",
                (
                    state.message_id,
                    state.recipient.casefold(),
                    state.recipient,
                    state.outcome.value,
                    state.at.isoformat(),
                    state.route,
                    state.detail,
                ),
            )
            first = cursor.rowcount == 1
            detail = (
                f"{state.outcome.value} ({state.route}): {state.detail}"
                if state.route
                else (f"{state.outcome.value}: {state.detail}")
            )
            if not first:
                detail = f"ignored, already settled: {detail}"
            db.execute(
                "INSERT INTO events (message_id, at, stage, recipient, detail) VALUES (?,?,?,?,?)",
                (
                    state.message_id,
                    state.at.isoformat(),
                    Stage.TERMINAL.value,
                    state.recipient,
                    detail,
                ),
            )
        return first

    def reopen(self, message_id: str, recipient: str) -> None:
        """Forget a recipient's terminal state (a redrive gives it a new one)."""
        self._write(
            "DELETE FROM recipient_states WHERE message_id=? AND recipient_key=?",
            [(message_id, recipient.casefold())],
        )

    def states(self, message_id: str) -> list[RecipientState]:
        rows = self._read(
            "SELECT message_id, recipient, outcome, at, route, detail FROM recipient_states "
            "WHERE message_id=? ORDER BY recipient_key",
            (message_id,),
        )
        return [
            RecipientState(
                message_id=r[0],
                recipient=r[1],
                outcome=Outcome(r[2]),
                at=datetime.fromisoformat(r[3]),
                route=r[4],
                detail=r[5],
            )
            for r in rows
        ]

    def events(self, message_id: str) -> list[TimelineEvent]:
        rows = self._read(
            "SELECT message_id, at, stage, recipient, detail FROM events WHERE message_id=? ORDER BY id",
            (message_id,),
        )
        return [
            TimelineEvent(
                message_id=r[0],
                at=datetime.fromisoformat(r[1]),
                stage=Stage(r[2]),
                recipient=r[3],
                detail=r[4],
            )
            for r in rows
        ]

    def recent(self, limit: int) -> list[str]:
        rows = self._read(
            "SELECT message_id FROM events WHERE stage=? ORDER BY id DESC LIMIT ?",
            (Stage.ACCEPTED.value, limit),
        )
        return [r[0] for r in rows]

    def accepted_count(self) -> int:
        """How many messages the gateway has accepted (what `recent` chooses from)."""
        rows = self._read("SELECT COUNT(*) FROM events WHERE stage=?", (Stage.ACCEPTED.value,))
        return int(rows[0][0])

    def find(self, prefix: str) -> list[str]:
        """Message ids that start with `prefix` (so `trace` takes a short id)."""
        rows = self._read(
            "SELECT DISTINCT message_id FROM events WHERE message_id >= ? AND message_id < ? LIMIT 5",
            (prefix, prefix + "\U0010ffff"),
        )
        return [r[0] for r in rows]

    # ----------------------------------------------------------------------- Idempotency

    def seen(self, key: str) -> str | None:
        rows = self._read("SELECT outcome FROM idempotency WHERE key=?", (key,))
        return str(rows[0][0]) if rows else None

    def remember(self, key: str, outcome: str) -> None:
        self._write("INSERT OR REPLACE INTO idempotency VALUES (?,?)", [(key, outcome)])

    # ----------------------------------------------------------------------- DeadLetters

    def put(self, record_id: str, record: Mapping[str, object]) -> None:
        self._write(
            "INSERT OR REPLACE INTO dead_letters VALUES (?,?)",
            [(record_id, json.dumps(record))],
            durable=True,
        )

    def list(self) -> Iterator[tuple[str, dict[str, object]]]:
        for record_id, body in self._read("SELECT id, record FROM dead_letters ORDER BY id"):
            yield record_id, json.loads(body)

    def get(self, record_id: str) -> dict[str, object] | None:
        rows = self._read("SELECT record FROM dead_letters WHERE id=?", (record_id,))
        return dict(json.loads(rows[0][0])) if rows else None

    def remove(self, record_id: str) -> None:
        self._write("DELETE FROM dead_letters WHERE id=?", [(record_id,)])

    # ----------------------------------------------------------------------- Deferrals
    # The deferred queue: the gateway's scheduler leases due records, a worker runs each and
    # then deletes it. A lease that runs out (the worker died) makes the record due again;
    # deliveries are idempotent, so running one twice is harmless.

    def schedule(self, record_id: str, due_at: datetime, document: Mapping[str, object]) -> None:
        delivery = document.get("delivery")
        message = delivery.get("message") if isinstance(delivery, dict) else None
        message_id = str(message.get("message_id", "")) if isinstance(message, dict) else ""
        self._write(
            "INSERT OR REPLACE INTO deferred (id, message_id, due_at, leased_until, document) "
            "VALUES (?,?,?,NULL,?)",
            [(record_id, message_id, _utc(due_at), json.dumps(document))],
            durable=True,
        )

    def lease_due(
        self, now: datetime, lease_seconds: float, limit: int = 50
    ) -> builtins.list[tuple[str, dict[str, object]]]:
        """Due records, leased for `lease_seconds` so no one else takes them meanwhile."""
        stamp = _utc(now)
        until = _utc(now + timedelta(seconds=lease_seconds))
        with self._transaction() as db:
            rows = db.execute(
                "SELECT id, document FROM deferred WHERE due_at <= ? "
                "AND (leased_until IS NULL OR leased_until <= ?) ORDER BY due_at LIMIT ?",
                (stamp, stamp, limit),
            ).fetchall()
            db.executemany(
                "UPDATE deferred SET leased_until=? WHERE id=?", [(until, r[0]) for r in rows]
            )
        return [(str(r[0]), json.loads(r[1])) for r in rows]

    def release_leases(self) -> None:
        """On start: nothing runs yet, so every lease belongs to a previous, stopped run."""
        self._write("UPDATE deferred SET leased_until=NULL WHERE leased_until IS NOT NULL", [()])

    def finish_deferred(self, record_id: str) -> None:
        self._write("DELETE FROM deferred WHERE id=?", [(record_id,)])

    def deferred(self, message_id: str | None = None) -> builtins.list[dict[str, object]]:
        """Waiting records (all, or one message's), soonest first, for `mxgate trace`."""
        sql = "SELECT id, due_at, leased_until, document FROM deferred"
        params: tuple[object, ...] = ()
        if message_id is not None:
            sql += " WHERE message_id=?"
            params = (message_id,)
        rows = self._read(sql + " ORDER BY due_at", params)
        return [
            {"id": r[0], "due_at": r[1], "running": r[2] is not None, **json.loads(r[3])}
            for r in rows
        ]

    def is_scheduled(self, record_id: str) -> bool:
        """Whether the deferred queue holds this record (a rule set retry owning a spool file)."""
        row = self.db.execute("SELECT 1 FROM deferred WHERE id=?", (record_id,)).fetchone()
        return row is not None


def _migrate(connection: sqlite3.Connection) -> None:
    """Bring a database of an earlier version up to this schema (once: the check is repeated
    inside the write lock, so two processes starting together migrate it once)."""

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


def _utc(moment: datetime) -> str:
    """ISO text in UTC, so that text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
