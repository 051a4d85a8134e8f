"""The AppEvents port: an application's event arrives whole, named for its application, and
publishing the same event again is harmless. Files on one machine, EventBridge on moto (a rule
sends the events to a queue, as an application would subscribe)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mxgate.adapters.aws.clients import LazyClient
from mxgate.adapters.aws.eventbridge import DETAIL_TYPE, SOURCE, EventBridgeAppEvents
from mxgate.adapters.local.appevents import FileAppEvents
from tests.contracts.conftest import unique

EVENT = {"version": "1", "message_id": "01APP", "recipient": "orders@x.example", "size": 42}


def _files(tmp_path: Path) -> tuple[Any, Callable[[str], list[dict[str, Any]]]]:
    def received(app: str) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted((tmp_path / app).glob("*.json"))]

    return FileAppEvents(tmp_path), received


def _eventbridge(
    request: pytest.FixtureRequest,
) -> tuple[Any, Callable[[str], list[dict[str, Any]]]]:
    request.getfixturevalue("aws")
    events, sqs = LazyClient("events"), LazyClient("sqs")
    queue = sqs.create_queue(QueueName=unique("app"))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    rule = unique("app-mail")
    events.put_rule(
        Name=rule, EventPattern=json.dumps({"source": [SOURCE], "detail-type": [DETAIL_TYPE]})
    )
    events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": arn}])

    def received(app: str) -> list[dict[str, Any]]:
        bodies = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        envelopes = [json.loads(m["Body"]) for m in bodies]
        return [e["detail"] for e in envelopes if f"mxgate:app:{app}" in e["resources"]]

    return EventBridgeAppEvents(events), received


@pytest.fixture(params=["files", "eventbridge"])
def bus(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "eventbridge":
        return _eventbridge(request)
    return _files(tmp_path)


def test_an_event_arrives_whole_for_its_application(bus):
    app_events, received = bus
    where = app_events.publish("orders", "01APP.orders@x.example", EVENT)
    assert isinstance(where, str)
    assert where
    assert received("orders") == [EVENT]
    assert received("returns") == []


def test_publishing_the_same_event_again_is_harmless(bus):
    app_events, received = bus
    app_events.publish("orders", "01APP.orders@x.example", EVENT)
    app_events.publish("orders", "01APP.orders@x.example", EVENT)
    assert all(event == EVENT for event in received("orders"))
