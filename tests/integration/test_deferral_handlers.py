"""The Defer and Redeliver Lambda handlers, run in-process on moto with the environment the
template gives them: a deferred delivery goes on the queue with a delay, and the consumer
starts a redelivery execution when it is due (early ones wait, broken ones are reported)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mxgate.adapters.aws import bootstrap
from mxgate.adapters.aws.dynamodb import DynamoState
from mxgate.adapters.aws.settings import settings
from mxgate.clock import SystemClock
from mxgate.mailmanager.template import read_template
from mxgate.records import DeferredDelivery, Delivery, MessageRef, Stage
from tests.support import REPO, TEMPLATE, routes_parameters_of_samconfig

REGION = "us-east-1"


@dataclass
class Context:
    """The fields of a Lambda context that powertools reads."""

    function_name: str = "test"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:test"
    aws_request_id: str = "req-1"


def handler_module(step: str) -> ModuleType:
    """functions/<step>/app.py under its own name (every handler module is called `app`)."""
    spec = importlib.util.spec_from_file_location(
        f"handler_{step}", REPO / "functions" / step / "app.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    environment = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "POWERTOOLS_SERVICE_NAME": "mxgate",
        "POWERTOOLS_METRICS_NAMESPACE": "mxgate",
        "MXGATE_ROUTES_FILE": str(REPO / "config" / "routes.yaml"),
        "MXGATE_ROUTES_PARAMETERS": json.dumps(routes_parameters_of_samconfig()),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    bootstrap.services.cache_clear()
    settings.cache_clear()
    table = read_template(TEMPLATE)["Resources"]["StateTable"]["Properties"]
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="raw")
        boto3.client("dynamodb").create_table(
            TableName="state",
            AttributeDefinitions=table["AttributeDefinitions"],
            KeySchema=table["KeySchema"],
            BillingMode=table["BillingMode"],
        )
        sqs = boto3.client("sqs")
        names = {
            "MXGATE_RAW_BUCKET": "raw",
            "MXGATE_STATE_TABLE": "state",
            "MXGATE_DEFER_QUEUE": sqs.create_queue(QueueName="defer")["QueueUrl"],
            "MXGATE_DEAD_LETTER_QUEUE": sqs.create_queue(QueueName="dlq")["QueueUrl"],
        }
        for name, value in names.items():
            monkeypatch.setenv(name, value)
        yield names
    bootstrap.services.cache_clear()
    settings.cache_clear()


def delivery() -> Delivery:
    return Delivery(
        delivery_id="01MSG.workspace.0",
        message=MessageRef(
            message_id="01MSG",
            bucket="raw",
            key="raw/01MSG",
            digest="d" * 64,
            envelope_sender="buyer@shop.example",
            size=10,
        ),
        kind="mailbox",
        destination="workspace",
        recipients=["alice@nutrition.co"],
    )


def test_defer_handler_queues_the_delivery_with_its_deferral(aws):
    defer = handler_module("defer")
    event = {
        "delivery": delivery().model_dump(mode="json"),
        "error": {
            "Error": "TransientError",
            "Cause": json.dumps(
                {"errorType": "TransientError", "errorMessage": "SES TooManyRequestsException"}
            ),
        },
    }
    result = defer.handler(event, Context())
    assert [r["outcome"] for r in result["results"]] == ["deferred"]
    sqs = boto3.client("sqs")
    # delayed: not visible yet
    assert sqs.receive_message(QueueUrl=aws["MXGATE_DEFER_QUEUE"]).get("Messages", []) == []
    attributes = sqs.get_queue_attributes(
        QueueUrl=aws["MXGATE_DEFER_QUEUE"], AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"
    timeline = DynamoState(boto3.client("dynamodb"), "state", SystemClock())
    details = [e.detail for e in timeline.events("01MSG") if e.stage is Stage.DEFERRED]
    assert len(details) == 1
    assert "SES TooManyRequestsException; deferral 1" in details[0]


def record(body: str, message_id: str) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"handle-{message_id}",
        "body": body,
        "attributes": {},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:defer",
        "awsRegion": REGION,
    }


def test_redeliver_handler_starts_due_executions_and_reports_broken_records(aws, monkeypatch):
    sfn = boto3.client("stepfunctions")
    machine = sfn.create_state_machine(
        name="pipeline",
        definition=json.dumps({"StartAt": "S", "States": {"S": {"Type": "Succeed"}}}),
        roleArn="arn:aws:iam::123456789012:role/sfn",
    )["stateMachineArn"]
    monkeypatch.setenv("MXGATE_STATE_MACHINE_ARN", machine)
    settings.cache_clear()
    redeliver = handler_module("redeliver")
    now = datetime.now(UTC)
    due = DeferredDelivery(
        record_id="01MSG.workspace.0#2", due_at=now.isoformat(), delivery=delivery()
    )
    early = DeferredDelivery(
        record_id="01MSG.workspace.0#3",
        due_at=(now + timedelta(hours=1)).isoformat(),
        delivery=delivery(),
    )
    event = {
        "Records": [
            record(due.model_dump_json(), "m1"),
            record(early.model_dump_json(), "m2"),
            record("not a deferred delivery", "m3"),
        ]
    }
    answer = redeliver.handler(event, Context())
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m3"}]}
    (execution,) = sfn.list_executions(stateMachineArn=machine)["executions"]
    assert execution["name"] == "01MSG-workspace-0-2"
    waiting = boto3.client("sqs").get_queue_attributes(
        QueueUrl=aws["MXGATE_DEFER_QUEUE"], AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert waiting["ApproximateNumberOfMessagesDelayed"] == "1"  # the early one, waiting again
