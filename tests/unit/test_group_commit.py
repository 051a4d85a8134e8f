"""Group commit in the state database: within `grouped()`, timeline events and idempotency
records wait for the next transaction (a terminal state's), a read of their tables, or the
block's end; what another connection sees is always whole, and nothing waiting is lost when a
commit fails."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mxgate.adapters.local.state import SqliteState
from mxgate.errors import TransientError
from mxgate.records import Outcome, RecipientState, Stage, TimelineEvent

T0 = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)


def event(detail: str) -> TimelineEvent:
    return TimelineEvent(message_id="m1", at=T0, stage=Stage.RULES, detail=detail)


def delivered(recipient: str) -> RecipientState:
    return RecipientState(
        message_id="m1", recipient=recipient, outcome=Outcome.DELIVERED, at=T0, route="workspace"
    )


def on_disk(path: Path) -> tuple[int, int, int]:
    """What another process sees: events, idempotency records, terminal states."""
    with sqlite3.connect(path) as other:
        return tuple(  # type: ignore[return-value]
            other.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("events", "idempotency", "recipient_states")
        )


def test_writes_wait_for_the_terminal_state_and_go_in_its_commit(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteState(path)
    store.record(event("created"))  # outside a group: at once
    assert on_disk(path) == (1, 0, 0)
    with store.grouped():
        store.record(event("rules"))
        store.remember("m1/a/invoke", "done")
        store.record_many([event("stored"), event("parsed")])
        assert on_disk(path) == (1, 0, 0)  # waiting, in memory
        assert store.settle(delivered("a@x.example")) is True
        assert on_disk(path) == (5, 1, 1)  # one transaction wrote them all
        store.record(event("after"))
    assert on_disk(path) == (6, 1, 1)  # the block's end wrote the rest


def test_a_read_of_other_tables_leaves_the_waiting_writes_waiting(tmp_path: Path) -> None:
    """Deliver reads the terminal states before it settles one: the timeline events waiting
    then go with the terminal state's commit, not in one of their own; a read of what waits
    (an idempotency record) still sees it."""
    path = tmp_path / "state.db"
    store = SqliteState(path)
    with store.grouped():
        store.record_many([event("rules"), event("stored")])
        assert store.states("m1") == []
        assert store.is_scheduled("m1.retry") is False
        assert on_disk(path) == (0, 0, 0)  # still waiting: those reads do not need them
        store.remember("m1/a/invoke", "done")
        assert store.seen("m1/a/invoke") == "done"
        assert on_disk(path) == (2, 1, 0)  # a read of a table with a write waiting: first
        store.record(event("parsed"))
        assert store.settle(delivered("a@x.example")) is True
        assert on_disk(path) == (4, 1, 1)


def test_a_read_sees_what_was_written_before_it(tmp_path: Path) -> None:
    store = SqliteState(tmp_path / "state.db")
    with store.grouped():
        store.remember("m1/a/invoke", "done")
        assert store.seen("m1/a/invoke") == "done"
        store.record(event("rules"))
        assert [e.detail for e in store.events("m1")] == ["rules"]


def test_a_failed_commit_loses_nothing_waiting(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteState(path, busy_timeout=0.05)
    store.record(event("created"))
    blocker = sqlite3.connect(path, isolation_level=None)
    with store.grouped():
        store.record(event("rules"))
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(TransientError):
            store.settle(delivered("a@x.example"))
        blocker.execute("ROLLBACK")
        assert store.settle(delivered("a@x.example")) is True  # the retry writes both
    blocker.close()
    assert on_disk(path) == (3, 0, 1)  # created, rules, and the terminal event


def test_a_run_that_fails_drops_what_it_had_not_written(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteState(path)

    def a_run_that_fails() -> None:
        with store.grouped():
            store.record(event("rules"))
            raise TransientError("the disk is full")  # the run is kept and done again

    with pytest.raises(TransientError):
        a_run_that_fails()
    assert store.events("m1") == []  # reads work: nothing is left waiting to be written
    assert on_disk(path) == (0, 0, 0)
