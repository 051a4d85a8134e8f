"""The Deferrals port: what is scheduled comes back, whole, once it is due, and not before.
In memory and SQLite (leased by the gateway's scheduler) and on SQS (delayed messages, read by
the Redeliver function)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mxgate.adapters.aws.clients import LazyClient
from mxgate.adapters.aws.deferral import SqsDeferrals
from mxgate.adapters.local.state import SqliteState
from mxgate.errors import PermanentError
from mxgate.records import DEFERRED, Deferred
from tests.contracts.conftest import unique
from tests.fakes import ManualClock, MemoryState
from tests.records import (
    a_deferred_delivery,
    a_rule_set_retry,
    a_step_retry,
    deferred_processing,
)

NOW = datetime.now(UTC).replace(microsecond=0)


class Queue:
    """One implementation, and how its consumer takes what is due."""

    def __init__(self, deferrals: Any, due: Any) -> None:
        self.deferrals = deferrals
        self.due = due  # now -> the records handed out now

    def schedule(self, record: Deferred) -> None:
        self.deferrals.schedule(record)


def _sqs(request: pytest.FixtureRequest) -> Queue:
    request.getfixturevalue("aws")
    client = LazyClient("sqs")
    url = client.create_queue(QueueName=unique("defer"))["QueueUrl"]  # its own, kept apart

    def due(now: datetime) -> list[Deferred]:
        messages = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        return [DEFERRED.validate_json(m["Body"]) for m in messages]

    return Queue(SqsDeferrals(client, url, ManualClock(NOW)), due)


def _leasing(store: Any) -> Queue:
    return Queue(store, lambda now: store.lease_due(now, 600))


@pytest.fixture(params=["memory", "sqlite", "sqs"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Queue:
    if request.param == "sqs":
        return _sqs(request)
    if request.param == "sqlite":
        return _leasing(SqliteState(tmp_path / "state.db"))
    return _leasing(MemoryState(ManualClock(NOW)))


def test_a_deferred_delivery_comes_back_whole_when_due(queue):
    record = a_deferred_delivery(unique("m.workspace.0#d1"), NOW)
    queue.schedule(record)
    assert queue.due(NOW) == [record]


def test_a_deferred_delivery_does_not_come_back_before_it_is_due(queue):
    # ten minutes: within one SQS delay (at most 15 minutes), so SQS holds it back itself
    queue.schedule(a_deferred_delivery(unique("m.workspace.0#d2"), NOW + timedelta(minutes=10)))
    assert queue.due(NOW) == []


@pytest.fixture(params=["memory", "sqlite"])
def local_queue(request: pytest.FixtureRequest, tmp_path: Path) -> Queue:
    if request.param == "sqlite":
        return _leasing(SqliteState(tmp_path / "state.db"))
    return _leasing(MemoryState(ManualClock(NOW)))


def test_a_rule_set_retry_is_kept_with_its_message_locally(local_queue):
    retry = a_rule_set_retry(unique("m3#rules"), "01RETRYING", NOW)
    local_queue.schedule(retry)
    assert local_queue.due(NOW) == [retry]
    assert retry.message_id == "01RETRYING"


def test_sqlite_finds_deferred_work_by_its_message(tmp_path):
    """What `mxgate trace` shows: both kinds of record, by message id."""
    store = SqliteState(tmp_path / "state.db")
    store.schedule(a_rule_set_retry("01RETRYING#rules", "01RETRYING", NOW))
    store.schedule(a_deferred_delivery("01DEFERRED.workspace.0#d", NOW, message_id="01DEFERRED"))
    assert [w.record.record_id for w in store.deferred("01RETRYING")] == ["01RETRYING#rules"]
    assert [w.record.record_id for w in store.deferred("01DEFERRED")] == [
        "01DEFERRED.workspace.0#d"
    ]


def test_deferred_processing_comes_back_whole_when_due(queue):
    record = deferred_processing(unique("m4#processing#1"), due_at=NOW)
    queue.schedule(record)
    assert queue.due(NOW) == [record]


def test_a_step_retry_comes_back_whole_with_where_its_execution_stands(local_queue):
    retry = a_step_retry(unique("m5#Deliver0#DeliverOne#1"), due_at=NOW)
    local_queue.schedule(retry)
    (back,) = local_queue.due(NOW)
    assert back == retry
    assert back.execution.attempts == {0: 1}  # keys are numbers again after JSON


@pytest.mark.parametrize(
    "record",
    [a_rule_set_retry("m#rules"), a_step_retry("m5#-#Process#1")],
    ids=["rule set retry", "step retry"],
)
def test_aws_defers_deliveries_and_processing_only(request, record):
    """Mail Manager runs the rule set on AWS, and Step Functions waits out its own retries:
    either record there is a mistake, said so."""
    queue = _sqs(request)
    with pytest.raises(PermanentError, match="only deliveries and processing are deferred"):
        queue.schedule(record)
