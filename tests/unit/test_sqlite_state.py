"""The SQLite state store: recipients keyed as DynamoDB keys them, durable writes fsynced as a
whole, and a busy database reported as a transient failure (the state machine retries it)."""

from __future__ import annotations

import sqlite3
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mxgate.adapters.local.state import SqliteState
from mxgate.errors import TransientError
from mxgate.records import MessageSummary, Outcome, RecipientState, Stage, TimelineEvent
from tests.records import a_dead_letter, a_deferred_delivery

T0 = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


def state_of(
    recipient: str, outcome: Outcome = Outcome.DELIVERED, minutes: int = 0
) -> RecipientState:
    return RecipientState(
        message_id="m1",
        recipient=recipient,
        outcome=outcome,
        at=T0 + timedelta(minutes=minutes),
        route="workspace",
    )


def test_a_recipient_settles_once_whatever_its_case(tmp_path: Path) -> None:
    store = SqliteState(tmp_path / "state.db")
    assert store.settle(state_of("Alice@Nutrition.co")) is True
    assert store.settle(state_of("alice@nutrition.co", Outcome.DEAD_LETTERED)) is False
    (kept,) = store.states("m1")
    assert (kept.recipient, kept.outcome) == ("Alice@Nutrition.co", Outcome.DELIVERED)  # as written
    store.reopen("m1", "ALICE@NUTRITION.CO")
    assert store.states("m1") == []


def test_a_database_of_the_earlier_schema_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE recipient_states (
            message_id TEXT NOT NULL, recipient TEXT NOT NULL, outcome TEXT NOT NULL,
            at TEXT NOT NULL, route TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (message_id, recipient)
        );
        INSERT INTO recipient_states VALUES
            ('m1', 'bob@nutrition.co', 'dead_lettered', '2026-11-30T07:05:00+00:00', '', ''),
            ('m1', 'Bob@nutrition.co', 'delivered', '2026-11-30T07:01:00+00:00', '', ''),
            ('m1', 'carol@nutrition.co', 'delivered', '2026-11-30T07:02:00+00:00', '', '');
        """
    )
    old.close()
    store = SqliteState(path)
    kept = {s.recipient: s.outcome for s in store.states("m1")}
    # the two spellings of bob were one recipient settled twice: the first state stands
    assert kept == {"Bob@nutrition.co": Outcome.DELIVERED, "carol@nutrition.co": Outcome.DELIVERED}
    assert store.settle(state_of("CAROL@nutrition.co")) is False
    store.close()
    assert {s.recipient for s in SqliteState(path).states("m1")} == set(kept)  # migrated once


def test_a_busy_database_is_a_transient_failure(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteState(path, busy_timeout=0.05)
    store.record(TimelineEvent(message_id="m1", at=T0, stage=Stage.PARSED))
    other = sqlite3.connect(path, isolation_level=None)  # another process, writing
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(TransientError, match="state database busy"):
            store.record(TimelineEvent(message_id="m1", at=T0, stage=Stage.CLASSIFIED))
        with pytest.raises(TransientError):
            store.put(a_dead_letter("m1.workspace.0"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.record(TimelineEvent(message_id="m1", at=T0, stage=Stage.CLASSIFIED))  # free again
    assert [e.stage for e in store.events("m1")] == [Stage.PARSED, Stage.CLASSIFIED]


def test_a_durable_write_is_fsynced_as_a_whole_while_other_threads_write(tmp_path: Path) -> None:
    """Each durable commit happens under synchronous=FULL: no other thread of the connection
    resets it to NORMAL (or writes) between the PRAGMA and the commit."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    store = SqliteState(tmp_path / "state.db")
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)

    def durable(n: int) -> None:
        for i in range(250):
            store.put(a_dead_letter(f"d{n}.{i}"))

    threads = [threading.Thread(target=durable, args=(n,)) for n in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(interval)
    synchronous = "NORMAL"
    for statement in statements:
        if statement.startswith("PRAGMA synchronous="):
            synchronous = statement.removeprefix("PRAGMA synchronous=")
        elif statement == "COMMIT":
            assert synchronous == "FULL"
    assert statements.count("COMMIT") == 1000
    assert len(list(store.list())) == 1000


def test_a_full_database_is_a_transient_failure(tmp_path: Path) -> None:
    """SQLITE_FULL, here from the database's own page limit (what a full disk gives too)."""
    store = SqliteState(tmp_path / "state.db")
    store.record(TimelineEvent(message_id="m1", at=T0, stage=Stage.ACCEPTED))
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count={pages}")
    big = TimelineEvent(message_id="m1", at=T0, stage=Stage.PARSED, detail="x" * 1000)
    with pytest.raises(TransientError, match="state database full"):
        store.record_many([big] * 200)
    assert [e.stage for e in store.events("m1")] == [Stage.ACCEPTED]  # nothing half-written


def test_the_queue_says_when_it_next_has_work_and_takes_a_record_back(tmp_path: Path) -> None:
    store = SqliteState(tmp_path / "state.db")
    assert store.next_due() is None
    store.schedule(a_deferred_delivery("soon", T0 + timedelta(seconds=5)))
    store.schedule(a_deferred_delivery("later", T0 + timedelta(minutes=5)))
    assert store.next_due() == T0 + timedelta(seconds=5)
    (leased,) = store.lease_due(T0 + timedelta(seconds=5), 600)
    assert store.next_due() == T0 + timedelta(minutes=5)  # the leased one: after its lease
    store.postpone(leased.record_id, T0 + timedelta(seconds=30))  # its worker kept it
    assert store.next_due() == T0 + timedelta(seconds=30)
    (back,) = store.lease_due(T0 + timedelta(seconds=30), 600)
    assert (back.record_id, back.due_at) == ("soon", T0 + timedelta(seconds=30))


def test_an_accepted_event_is_written_without_reading_other_messages_events(
    tmp_path: Path,
) -> None:
    """Its check for an `accepted` event already written (a replayed spool file) looks at the
    message's own events: the work it takes does not grow with every message ever accepted
    (counted in SQLite's virtual machine instructions, not timed)."""
    store = SqliteState(tmp_path / "state.db")

    def accepted(message_id: str) -> TimelineEvent:
        return TimelineEvent(message_id=message_id, at=T0, stage=Stage.ACCEPTED, detail="5 bytes")

    def instructions_to_record(message_id: str) -> int:
        counted = [0]

        def count() -> int:
            counted[0] += 1
            return 0  # go on

        store.db.set_progress_handler(count, 1)
        store.record_first(accepted(message_id))
        store.db.set_progress_handler(None, 1)
        return counted[0]

    on_an_empty_database = instructions_to_record("m-first")
    store.record_many([accepted(f"m{n:05d}") for n in range(3000)])
    assert instructions_to_record("m-last") < on_an_empty_database * 2
    store.record_first(accepted("m-last"))  # written once
    assert [e.stage for e in store.events("m-last")] == [Stage.ACCEPTED]


def test_only_the_arrivals_are_indexed_by_stage_and_recent_reads_that_index(
    tmp_path: Path,
) -> None:
    """A message's later events (classified, terminal...) go into no index of stages, which
    gave each commit a page to write per stage; the newest messages are still found without
    reading their other events (the query plan), and a database written with the old index
    loses it on open."""
    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, message_id TEXT NOT NULL, at TEXT NOT "
        "NULL, stage TEXT NOT NULL, recipient TEXT, detail TEXT NOT NULL DEFAULT '');"
        "CREATE INDEX events_by_stage ON events (stage, id);"
    )
    old.close()
    store = SqliteState(path)
    store.record_many(
        [
            TimelineEvent(message_id="m1", at=T0, stage=Stage.ACCEPTED),
            TimelineEvent(message_id="m1", at=T0, stage=Stage.CLASSIFIED, recipient="a@x.example"),
            TimelineEvent(message_id="m2", at=T0, stage=Stage.PARSED),
            TimelineEvent(message_id="m3", at=T0, stage=Stage.CLASSIFIED, recipient="a@x.example"),
        ]
    )
    assert store.recent(10) == ["m2", "m1"]
    assert store.accepted_count() == 2
    indexes = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "events_by_stage" not in indexes
    plan = store.db.execute(
        "EXPLAIN QUERY PLAN SELECT message_id, MAX(id) FROM events WHERE "
        "stage IN ('accepted', 'parsed') GROUP BY message_id"
    ).fetchall()
    assert any("events_arrived" in str(step) for step in plan)


def _a_message_committed(store: SqliteState, message_id: str) -> None:
    """What a worker's run writes for a message of one recipient, in its one commit."""
    with store.grouped():
        store.record_first(TimelineEvent(message_id=message_id, at=T0, stage=Stage.ACCEPTED))
        store.remember(f"{message_id}:archive", "done")
        store.record_many(
            [
                TimelineEvent(
                    message_id=message_id,
                    at=T0,
                    stage=Stage.PARSED,
                    summary=MessageSummary(
                        envelope_sender="s@x.example", recipients=["a@x.example"]
                    ),
                ),
                TimelineEvent(
                    message_id=message_id, at=T0, stage=Stage.CLASSIFIED, recipient="a@x.example"
                ),
            ]
        )
        store.settle(
            RecipientState(
                message_id=message_id,
                recipient="a@x.example",
                outcome=Outcome.DELIVERED,
                at=T0,
                route="workspace",
            )
        )


def test_a_message_s_commit_writes_seven_pages(tmp_path: Path) -> None:
    """Its rows go into seven b-trees, a page each (counted in the write-ahead log's frames):
    the events and their two indexes, and one for each table keyed by text (a rowid table
    writes its row and its key's index; an index of every event by stage wrote one page for
    each stage)."""
    store = SqliteState(tmp_path / "state.db")
    wal = tmp_path / "state.db-wal"
    page = store.db.execute("PRAGMA page_size").fetchone()[0]
    frames = []
    for n in range(60):
        before = wal.stat().st_size if wal.exists() else 0
        _a_message_committed(store, f"m{n:04d}")
        frames.append((wal.stat().st_size - before) // (24 + page))
    # the fewest: a commit that splits no page (a split writes the new page, its parent, and
    # the database's first page, which holds its size)
    assert min(frames[10:]) == 7
    assert store.seen("m0059:archive") == "done"
    assert [s.outcome for s in store.states("m0059")] == [Outcome.DELIVERED]


def test_a_database_with_rowid_tables_works_as_before(tmp_path: Path) -> None:
    """The text-keyed tables of a database made before they were WITHOUT ROWID are kept."""
    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE idempotency (key TEXT PRIMARY KEY, outcome TEXT NOT NULL);"
        "CREATE TABLE messages (message_id TEXT PRIMARY KEY, at TEXT NOT NULL, summary TEXT "
        "NOT NULL);"
    )
    old.close()
    store = SqliteState(path)
    _a_message_committed(store, "m1")
    _a_message_committed(store, "m1")  # a replay: nothing twice
    assert store.seen("m1:archive") == "done"
    assert [m for m, _, _ in store.summaries()] == ["m1"]
    assert [s.outcome for s in store.states("m1")] == [Outcome.DELIVERED]
    assert [e.stage for e in store.events("m1")] == [
        Stage.ACCEPTED,
        Stage.PARSED,
        Stage.CLASSIFIED,
        Stage.TERMINAL,
        Stage.PARSED,
        Stage.CLASSIFIED,
    ]


def test_a_worker_connection_leaves_the_wal_to_the_gateways_checkpoint(tmp_path: Path) -> None:
    """Past SQLite's default 1000 pages a commit would copy the WAL into the database and
    fsync both itself; a worker's connection leaves that to `checkpoint()` from another
    connection (the gateway's). Until a checkpoint the pages are in the WAL alone."""
    worker = SqliteState(tmp_path / "state.db", checkpoint_pages=100_000)
    events = [
        TimelineEvent(message_id=f"m{n}", at=T0, stage=Stage.ACCEPTED, detail="x" * 2000)
        for n in range(3000)
    ]
    for n in range(0, 3000, 100):
        worker.record_many(events[n : n + 100])
    database, wal = tmp_path / "state.db", tmp_path / "state.db-wal"
    assert wal.stat().st_size > 1000 * 4096 > database.stat().st_size  # never copied
    SqliteState(database).checkpoint()
    assert database.stat().st_size > 1000 * 4096  # copied
    assert len(worker.events("m2999")) == 1  # every write kept, seen by the worker still
    default = SqliteState(tmp_path / "default.db")
    for n in range(0, 3000, 100):
        default.record_many(events[n : n + 100])
    assert (tmp_path / "default.db").stat().st_size > 1_000_000  # its own commits copied it
