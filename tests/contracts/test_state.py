"""The Timeline, Idempotency and DeadLetters ports: in memory, SQLite, DynamoDB (and the
dead-letter queue's notices on top of it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mxgate.adapters.aws.clients import LazyClient
from mxgate.adapters.aws.dead_letters import QueueingDeadLetters
from mxgate.adapters.aws.dynamodb import DynamoState
from mxgate.adapters.local.state import SqliteState
from mxgate.records import Outcome, RecipientState, Stage, TimelineEvent
from tests.contracts.conftest import unique
from tests.fakes import ManualClock, MemoryState
from tests.records import a_dead_letter, a_processing_dead_letter, a_rule_set_dead_letter

NOW = datetime.now(UTC).replace(microsecond=0)  # DynamoDB lists the recent days only

STORES = ["memory", "sqlite", "dynamodb"]


def _dynamodb(request: pytest.FixtureRequest, clock: ManualClock) -> DynamoState:
    stack = request.getfixturevalue("aws")
    return DynamoState(LazyClient("dynamodb"), stack.resource("StateTable"), clock)


MAKERS: dict[str, Callable[[pytest.FixtureRequest, Path, ManualClock], Any]] = {
    "memory": lambda request, tmp_path, clock: MemoryState(clock),
    "sqlite": lambda request, tmp_path, clock: SqliteState(tmp_path / "state.db"),
    "dynamodb": lambda request, tmp_path, clock: _dynamodb(request, clock),
}


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return MAKERS[request.param](request, tmp_path, ManualClock(NOW))


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def state(message_id: str, recipient: str, outcome: Outcome, seconds: float) -> RecipientState:
    return RecipientState(
        message_id=message_id,
        recipient=recipient,
        outcome=outcome,
        at=at(seconds),
        route="workspace",
        detail=f"{outcome.value} by the contract",
    )


# ----------------------------------------------------------------------------- Timeline


def test_events_come_back_in_time_order_and_batches_keep_theirs(store):
    message = unique("m")
    store.record(TimelineEvent(message_id=message, at=at(3), stage=Stage.ATTEMPT, detail="3"))
    store.record_many(
        [
            TimelineEvent(message_id=message, at=at(1), stage=Stage.PARSED, detail="1a"),
            TimelineEvent(
                message_id=message,
                at=at(1),
                stage=Stage.CLASSIFIED,
                recipient="alice@nutrition.co",
                detail="1b",
            ),
        ]
    )
    store.record(TimelineEvent(message_id=unique("other"), at=at(2), stage=Stage.PARSED))
    events = store.events(message)
    assert [e.detail for e in events] == ["1a", "1b", "3"]
    assert events[1] == TimelineEvent(
        message_id=message,
        at=at(1),
        stage=Stage.CLASSIFIED,
        recipient="alice@nutrition.co",
        detail="1b",
    )


def test_a_recipient_settles_once_whatever_its_case_and_shows_one_terminal_event(store):
    message = unique("m")
    first = state(message, "Alice@Nutrition.co", Outcome.DELIVERED, 1)
    assert store.settle(first) is True
    assert store.settle(state(message, "alice@nutrition.co", Outcome.DEAD_LETTERED, 2)) is False
    assert store.states(message) == [first]  # as first written
    terminal = [e for e in store.events(message) if e.stage is Stage.TERMINAL]
    assert terminal == [first.event()]
    assert terminal[0].detail == "delivered (workspace): delivered by the contract"


def test_a_reopened_recipient_settles_anew(store):
    message = unique("m")
    store.settle(state(message, "bob@nutrition.co", Outcome.DEAD_LETTERED, 1))
    store.reopen(message, "BOB@nutrition.co")
    assert store.states(message) == []
    again = state(message, "bob@nutrition.co", Outcome.DELIVERED, 2)
    assert store.settle(again) is True
    assert store.states(message) == [again]


def test_a_state_is_revised_only_over_the_states_it_may_replace(store):
    message = unique("m")
    relayed = state(message, "carol@nutrition.co", Outcome.RELAYED, 1)
    store.settle(relayed)
    bounced = state(message, "Carol@Nutrition.co", Outcome.BOUNCED, 3)
    assert store.revise(bounced, replaces=frozenset({Outcome.DELIVERED})) is False
    assert store.states(message) == [relayed]
    delivered = state(message, "carol@nutrition.co", Outcome.DELIVERED, 2)
    assert store.revise(delivered, replaces=frozenset({Outcome.RELAYED})) is True
    assert store.revise(delivered, replaces=frozenset({Outcome.RELAYED})) is False  # repeated
    assert store.states(message) == [delivered]
    terminal = [e for e in store.events(message) if e.stage is Stage.TERMINAL]
    assert terminal == [delivered.event()]  # one terminal event, the state it has now
    assert (
        store.revise(
            state(message, "dan@nutrition.co", Outcome.DELIVERED, 2),
            replaces=frozenset({Outcome.RELAYED}),
        )
        is False
    )  # never settled


def test_states_come_in_recipient_order(store):
    message = unique("m")
    for n, recipient in enumerate(["carol@x.example", "Alice@x.example", "bob@x.example"]):
        store.settle(state(message, recipient, Outcome.DELIVERED, n))
    assert [s.recipient for s in store.states(message)] == [
        "Alice@x.example",
        "bob@x.example",
        "carol@x.example",
    ]


def test_recent_messages_are_the_accepted_or_parsed_newest_first(store):
    older, newer, neither = unique("older"), unique("newer"), unique("neither")
    store.record(TimelineEvent(message_id=older, at=at(-60), stage=Stage.ACCEPTED))
    store.record(TimelineEvent(message_id=older, at=at(-50), stage=Stage.RULES))
    store.record(TimelineEvent(message_id=newer, at=at(-40), stage=Stage.PARSED))
    store.record(TimelineEvent(message_id=neither, at=at(-30), stage=Stage.ATTEMPT))
    recent = store.recent(1000)
    assert neither not in recent
    assert recent.index(newer) < recent.index(older)


# ----------------------------------------------------------------------------- Idempotency


def test_idempotency_keys_remember_the_last_outcome(store):
    key = unique("digest:alice@nutrition.co:mailbox:workspace")
    assert store.seen(key) is None
    store.remember(key, "posted")
    assert store.seen(key) == "posted"
    store.remember(key, "hooked")
    assert store.seen(key) == "hooked"


# ----------------------------------------------------------------------------- DeadLetters


@pytest.fixture(params=[*STORES, "dynamodb+sqs"])
def dead_letters(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    clock = ManualClock(NOW)
    if request.param == "dynamodb+sqs":
        stack = request.getfixturevalue("aws")
        return QueueingDeadLetters(
            _dynamodb(request, clock), LazyClient("sqs"), stack.resource("DeadLetterQueue")
        )
    return MAKERS[request.param](request, tmp_path, clock)


def test_dead_letters_of_every_kind_come_back_as_they_were_put(dead_letters):
    delivery = a_dead_letter(unique("m.workspace.0"), ["alice@nutrition.co", "bob@nutrition.co"])
    rules = a_rule_set_dead_letter(unique("m.rule-set"))
    processing = a_processing_dead_letter(unique("m5.processing"))
    for record in (delivery, rules, processing):
        dead_letters.put(record)
        assert dead_letters.get(record.record_id) == record
    listed = {r.record_id: r for r in dead_letters.list()}
    for record in (delivery, rules, processing):
        assert listed[record.record_id] == record


def test_a_dead_letter_of_the_same_id_is_written_over_and_one_removed_is_gone(dead_letters):
    record_id = unique("m.m365.0")
    dead_letters.put(a_dead_letter(record_id, ["carol@nutrition.co"]))
    dead_letters.put(a_dead_letter(record_id, ["dave@nutrition.co"]))
    kept = dead_letters.get(record_id)
    assert kept is not None
    assert kept.recipients == ["dave@nutrition.co"]
    assert [r.record_id for r in dead_letters.list()].count(record_id) == 1
    dead_letters.remove(record_id)
    assert dead_letters.get(record_id) is None
    assert record_id not in [r.record_id for r in dead_letters.list()]
    dead_letters.remove(record_id)  # removing what is gone is no error


def test_dead_letters_are_listed_by_id(dead_letters):
    prefix = unique("sorted")
    for suffix in ("b", "a", "c"):
        dead_letters.put(a_dead_letter(f"{prefix}.{suffix}"))
    ours = [r.record_id for r in dead_letters.list() if r.record_id.startswith(prefix)]
    assert ours == [f"{prefix}.a", f"{prefix}.b", f"{prefix}.c"]
