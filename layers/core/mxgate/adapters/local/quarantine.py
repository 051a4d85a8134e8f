"""Quarantine records on one machine: a table in the state database, beside the timeline."""

from __future__ import annotations

from collections.abc import Iterator

from mxgate.adapters.local.state import SqliteState
from mxgate.records import QuarantineRecord
from mxgate.workflow.quarantine import merged

_SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine (
    id TEXT PRIMARY KEY,
    held_at TEXT NOT NULL,
    record TEXT NOT NULL
);
"""


class SqliteQuarantine:
    """Implements the Quarantine port on the state database's connection and lock."""

    def __init__(self, state: SqliteState) -> None:
        self.state = state
        self._ready = False

    def _table(self) -> None:
        if not self._ready:
            self.state.db.executescript(_SCHEMA)
            self._ready = True

    def hold(self, record: QuarantineRecord) -> None:
        self._table()
        with self.state._transaction(durable=True) as db:
            row = db.execute(
                "SELECT record FROM quarantine WHERE id=?", (record.quarantine_id,)
            ).fetchone()
            old = QuarantineRecord.model_validate_json(row[0]) if row else None
            kept = merged(old, record)
            db.execute(
                "INSERT OR REPLACE INTO quarantine VALUES (?,?,?)",
                (kept.quarantine_id, kept.held_at.isoformat(), kept.model_dump_json(by_alias=True)),
            )

    def replace(self, record: QuarantineRecord) -> None:
        self._table()
        self.state._write(
            "INSERT OR REPLACE INTO quarantine VALUES (?,?,?)",
            [
                (
                    record.quarantine_id,
                    record.held_at.isoformat(),
                    record.model_dump_json(by_alias=True),
                )
            ],
            durable=True,
        )

    def get(self, quarantine_id: str) -> QuarantineRecord | None:
        self._table()
        rows = self.state._read("SELECT record FROM quarantine WHERE id=?", (quarantine_id,))
        return QuarantineRecord.model_validate_json(rows[0][0]) if rows else None

    def records(self) -> Iterator[QuarantineRecord]:
        self._table()
        for (body,) in self.state._read("SELECT record FROM quarantine ORDER BY held_at DESC"):
            yield QuarantineRecord.model_validate_json(body)

    def remove(self, quarantine_id: str) -> None:
        self._table()
        self.state._write("DELETE FROM quarantine WHERE id=?", [(quarantine_id,)])
