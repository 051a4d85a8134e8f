"""The timeline, idempotency keys, dead letters and the deferred queue in the state database
(`adapters/local/database.py`: its connection, schema and durability).

A recipient's terminal state is keyed by its casefolded address, as on DynamoDB: `Alice@` and
`alice@` are one recipient, which settles once. Its `terminal` timeline event is written in the
same transaction; a settle that finds a state already there writes nothing.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from mxgate.adapters.local.database import StateDatabase, utc
from mxgate.records import (
    DEAD_LETTER,
    DEFERRED,
    DeadLetter,
    Deferred,
    MessageSummary,
    Outcome,
    RecipientState,
    Stage,
    TimelineEvent,
)

_INSERT_EVENT = "INSERT INTO events (message_id, at, stage, recipient, detail) VALUES (?,?,?,?,?)"
_INSERT_FIRST_EVENT = (
    "INSERT INTO events (message_id, at, stage, recipient, detail) SELECT ?,?,?,?,? "
    "WHERE NOT EXISTS (SELECT 1 FROM events INDEXED BY events_by_message "
    "WHERE message_id=? AND stage=?)"
)  # by message: the planner once took an index of stages, a scan of every accepted event
# the condition of the events_arrived index, as its text has it: SQLite uses a partial index
# for a query whose WHERE names the same condition, never one with bound values in its place
_ARRIVED = f"stage IN ('{Stage.ACCEPTED.value}', '{Stage.PARSED.value}')"


def _event_row(event: TimelineEvent) -> tuple[str, str, str, str | None, str]:
    return (
        event.message_id,
        event.at.isoformat(),
        event.stage.value,
        event.recipient,
        event.detail,
    )


def _dead_letter(record_id: str, body: str) -> DeadLetter:
    """Records of earlier versions were stored without their id."""
    return DEAD_LETTER.validate_python({**json.loads(body), "record_id": record_id})


@dataclass(frozen=True)
class Waiting:
    """A record of the deferred queue, and whether a worker has it now."""

    record: Deferred
    running: bool


class SqliteState(StateDatabase):
    """Implements the Timeline, Idempotency, DeadLetters and Deferrals ports."""

    # ----------------------------------------------------------------------- Timeline

    def record(self, event: TimelineEvent) -> None:
        self.record_many([event])

    def record_many(self, events: Sequence[TimelineEvent]) -> None:
        self._later("events", _INSERT_EVENT, [_event_row(e) for e in events])
        self._later(
            "messages",
            "INSERT OR REPLACE INTO messages (message_id, at, summary) VALUES (?,?,?)",
            [
                (e.message_id, utc(e.at), e.summary.model_dump_json(by_alias=True))
                for e in events
                if e.summary is not None
            ],
        )

    def record_first(self, event: TimelineEvent) -> None:
        """Record the event unless its message has an event of its stage already (an
        `accepted` event written again by a replay of the same spool file)."""
        self._later(
            "events",
            _INSERT_FIRST_EVENT,
            [(*_event_row(event), event.message_id, event.stage.value)],
        )

    def summaries(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[tuple[str, datetime, MessageSummary]]:
        """Parsed messages with who sent them to whom about what, newest first."""
        rows = self._read(
            "SELECT message_id, at, summary FROM messages WHERE at >= ? AND at <= ? "
            "ORDER BY at DESC",
            (utc(since) if since else "", utc(until) if until else "\uffff"),
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
            if first:
                db.execute(_INSERT_EVENT, _event_row(state.event()))
        return first

    def revise(self, state: RecipientState, replaces: frozenset[Outcome]) -> bool:
        if not replaces:
            return False
        marks = ",".join("?" * len(replaces))
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE recipient_states SET outcome=?, at=?, route=?, detail=? "  # noqa: S608 -- the marks are "?,?": no value goes into the text
                f"WHERE message_id=? AND recipient_key=? AND outcome IN ({marks})",
                (
                    state.outcome.value,
                    state.at.isoformat(),
                    state.route,
                    state.detail,
                    state.message_id,
                    state.recipient.casefold(),
                    *sorted(o.value for o in replaces),
                ),
            )
            revised = cursor.rowcount == 1
            if revised:  # its terminal event says the new state, as DynamoDB's (one a recipient)
                db.execute(
                    "DELETE FROM events WHERE id=(SELECT max(id) FROM events WHERE message_id=? "
                    "AND stage=? AND recipient=?)",
                    (state.message_id, Stage.TERMINAL.value, state.recipient),
                )
                db.execute(_INSERT_EVENT, _event_row(state.event()))
        return revised

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
            tables=("recipient_states",),
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
            "SELECT message_id, at, stage, recipient, detail FROM events WHERE message_id=? "
            "ORDER BY at, id",  # time order, as DynamoDB keys them; ties in recorded order
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
        """Messages that were accepted (or parsed, when they came without the ingress), newest
        first."""
        rows = self._read(
            f"SELECT message_id, MAX(id) AS latest FROM events WHERE {_ARRIVED} "  # noqa: S608 -- constant text
            "GROUP BY message_id ORDER BY latest DESC LIMIT ?",
            (limit,),
        )
        return [r[0] for r in rows]

    def accepted_count(self) -> int:
        """How many messages `recent` chooses from."""
        rows = self._read(f"SELECT COUNT(DISTINCT message_id) FROM events WHERE {_ARRIVED}")  # noqa: S608 -- constant text
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
        rows = self._read(
            "SELECT outcome FROM idempotency WHERE key=?", (key,), tables=("idempotency",)
        )
        return str(rows[0][0]) if rows else None

    def remember(self, key: str, outcome: str) -> None:
        self._later(
            "idempotency", "INSERT OR REPLACE INTO idempotency VALUES (?,?)", [(key, outcome)]
        )

    # ----------------------------------------------------------------------- DeadLetters

    def put(self, record: DeadLetter) -> None:
        self._write(
            "INSERT OR REPLACE INTO dead_letters VALUES (?,?)",
            [(record.record_id, record.model_dump_json())],
            durable=True,
        )

    def list(self) -> Iterator[DeadLetter]:
        for record_id, body in self._read("SELECT id, record FROM dead_letters ORDER BY id"):
            yield _dead_letter(record_id, body)

    def get(self, record_id: str) -> DeadLetter | None:
        rows = self._read("SELECT record FROM dead_letters WHERE id=?", (record_id,))
        return _dead_letter(record_id, rows[0][0]) if rows else None

    def remove(self, record_id: str) -> None:
        self._write("DELETE FROM dead_letters WHERE id=?", [(record_id,)])

    # ----------------------------------------------------------------------- Deferrals
    # The deferred queue: the gateway's scheduler leases due records, a worker runs each and
    # then deletes it. A lease that runs out (the worker died) makes the record due again;
    # deliveries are idempotent, so running one twice is harmless.

    def schedule(self, record: Deferred) -> None:
        self._write(
            "INSERT OR REPLACE INTO deferred (id, message_id, due_at, leased_until, document) "
            "VALUES (?,?,?,NULL,?)",
            [(record.record_id, record.message_id, utc(record.due_at), record.model_dump_json())],
            durable=True,
        )

    def lease_due(
        self, now: datetime, lease_seconds: float, limit: int = 50
    ) -> builtins.list[Deferred]:
        """Due records, leased for `lease_seconds` so no one else takes them meanwhile."""
        stamp = utc(now)
        until = utc(now + timedelta(seconds=lease_seconds))
        with self._transaction() as db:
            rows = db.execute(
                "SELECT id, document FROM deferred WHERE due_at <= ? "
                "AND (leased_until IS NULL OR leased_until <= ?) ORDER BY due_at LIMIT ?",
                (stamp, stamp, limit),
            ).fetchall()
            db.executemany(
                "UPDATE deferred SET leased_until=? WHERE id=?", [(until, r[0]) for r in rows]
            )
        return [DEFERRED.validate_json(r[1]) for r in rows]

    def next_due(self) -> datetime | None:
        """When the queue next has a record to hand out (a leased one: when its lease ends)."""
        rows = self._read(
            "SELECT MIN(CASE WHEN leased_until > due_at THEN leased_until ELSE due_at END) "
            "FROM deferred"
        )
        return datetime.fromisoformat(rows[0][0]) if rows and rows[0][0] else None

    def postpone(self, record_id: str, due: datetime) -> None:
        """A leased record its worker could not run for now: let go, due again at `due`."""
        with self._transaction(durable=True) as db:
            row = db.execute("SELECT document FROM deferred WHERE id=?", (record_id,)).fetchone()
            if row is None:
                return
            record = DEFERRED.validate_json(row[0]).model_copy(update={"due_at": due})
            db.execute(
                "UPDATE deferred SET due_at=?, leased_until=NULL, document=? WHERE id=?",
                (utc(due), record.model_dump_json(), record_id),
            )

    def release_leases(self) -> None:
        """On start: nothing runs yet, so every lease belongs to a previous, stopped run."""
        self._write("UPDATE deferred SET leased_until=NULL WHERE leased_until IS NOT NULL", [()])

    def finish_deferred(self, record_id: str) -> None:
        self._write("DELETE FROM deferred WHERE id=?", [(record_id,)])

    def deferred(self, message_id: str | None = None) -> builtins.list[Waiting]:
        """Waiting records (all, or one message's), soonest first, for `mxgate trace`."""
        sql = "SELECT leased_until, document FROM deferred"
        params: tuple[object, ...] = ()
        if message_id is not None:
            sql += " WHERE message_id=?"
            params = (message_id,)
        rows = self._read(sql + " ORDER BY due_at", params)
        return [Waiting(DEFERRED.validate_json(r[1]), running=r[0] is not None) for r in rows]

    def is_scheduled(self, record_id: str) -> bool:
        """Whether the deferred queue holds this record (a rule set retry owning a spool file)."""
        return bool(
            self._read("SELECT 1 FROM deferred WHERE id=?", (record_id,), tables=("deferred",))
        )
