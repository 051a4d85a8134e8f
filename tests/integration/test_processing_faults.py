"""Faults during Process are retried, then deferred, never quarantined; the Map keeps no
results. statemachine/pipeline.asl.json runs in moto's Step Functions interpreter with the real
handlers (tests/awsstack.py), retry waits recorded instead of slept."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.retries import standard
from moto import mock_aws
from moto.dynamodb.exceptions import DynamodbException
from moto.dynamodb.models import DynamoDBBackend
from moto.sqs.models import sqs_backends
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

from mxgate.adapters.aws.deferral import Redeliverer, SqsDeferrals
from mxgate.records import DeferredProcessing
from mxgate.sandbox.stack import (
    ACCOUNT,
    MOTO_CONFIG,
    REGION,
    Stack,
    run_execution,
    wait_for_execution,
)
from tests.awsstack import EVENTS, canonical_event, create_stack
from tests.fakes import ManualClock

STORED = (EVENTS / "stored-message.eml").read_bytes()


@pytest.fixture
def storm(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many more timeline writes (`msg#` items) DynamoDB throttles; botocore's own
    retries and the state machine's waits are recorded, not slept."""
    left = {"msg#": 0}
    put = DynamoDBBackend.put_item

    def throttling(backend: Any, table_name: str, item_attrs: dict[str, Any], *args: Any) -> Any:
        if left["msg#"] and item_attrs["pk"]["S"].startswith("msg#"):
            left["msg#"] -= 1
            raise DynamodbException(
                "ProvisionedThroughputExceededException", "Rate of requests exceeds capacity."
            )
        return put(backend, table_name, item_attrs, *args)

    monkeypatch.setattr(DynamoDBBackend, "put_item", throttling)
    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)
    monkeypatch.setattr(retrier_decl, "time", SimpleNamespace(sleep=lambda seconds: None))
    return left


@pytest.fixture
def stack() -> Iterator[Stack]:
    with mock_aws(config=MOTO_CONFIG):
        created = create_stack()
        key = canonical_event("process")["key"]
        boto3.client("s3", region_name=REGION).put_object(
            Bucket=created.resource("RawMailBucket"), Key=key, Body=STORED
        )
        yield created
        created.close()


def outcomes(stack: Stack) -> dict[str, str]:
    rows = boto3.client("dynamodb", region_name=REGION).scan(
        TableName=stack.resource("StateTable")
    )["Items"]
    return {
        r["recipient"]["S"]: r["outcome"]["S"] for r in rows if r["sk"]["S"].startswith("rcpt#")
    }


def deferred_records(stack: Stack) -> list[dict[str, Any]]:
    """What waits in the deferred queue, delayed or not (moto's queue itself)."""
    name = stack.resource("DeferQueue").rsplit("/", 1)[-1]
    queue = sqs_backends[ACCOUNT][REGION].queues[name]
    return [json.loads(m.body) for m in queue._messages]


def test_a_throttling_storm_outlasting_the_retries_is_deferred_then_delivered(stack, storm):
    machine = stack.deploy_state_machine()
    storm["msg#"] = 15  # five Process invocations, three botocore attempts each
    first = run_execution(machine, canonical_event("process"), name="storm")
    assert first["status"] == "SUCCEEDED"
    assert outcomes(stack) == {}  # nothing quarantined: every recipient still open
    (record,) = deferred_records(stack)
    waiting = DeferredProcessing.model_validate(record)
    assert waiting.deferral is not None
    assert waiting.deferral.attempts == 1
    assert "TransientError" in waiting.deferral.last_error

    # the storm is over; the record comes due and the Redeliver function starts it
    clock = ManualClock(current=datetime.now(UTC) + timedelta(days=1))  # past its due time
    sqs = boto3.client("sqs", region_name=REGION)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    redeliverer = Redeliverer(
        SqsDeferrals(sqs, stack.resource("DeferQueue"), clock), sfn, machine, clock
    )
    started = redeliverer.start_due(json.dumps(record))
    assert started.startswith("started ")
    (execution,) = [
        e
        for e in sfn.list_executions(stateMachineArn=machine)["executions"]
        if e["name"] != "storm"
    ]
    described = wait_for_execution(execution["executionArn"])
    assert described["status"] == "SUCCEEDED"
    assert outcomes(stack) == dict.fromkeys(
        ["alice@nutrition.co", "eve@nutrition.co", "bob@nutrition.co", "carol@nutrition.co"],
        "relayed",
    )


def test_the_map_keeps_no_results_whatever_the_number_of_recipients(stack):
    """The execution's output is what Process planned: the Map's results (one per delivery,
    each listing its recipients' outcomes) are not collected into the document, so it stays
    within Step Functions' 256 KB however many recipients a message has."""
    machine = stack.deploy_state_machine()
    recipients = [f"user{n:03d}@nutrition.co" for n in range(120)]
    key = "raw/01KB7Y4M3N8Q2W5R6T9V0MANY0"
    # no To or Cc: moto's SES counts header recipients among a send's 50
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=stack.resource("RawMailBucket"),
        Key=key,
        Body=b"From: facilities@lyon-logistics.example\r\nSubject: all hands\r\n\r\nat noon\r\n",
    )
    execution_input = {
        "stored": {
            "bucket": stack.resource("RawMailBucket"),
            "key": key,
            "envelope": {
                "message_id": key.removeprefix("raw/"),
                "mail_from": "facilities@lyon-logistics.example",
                "recipients": recipients,
            },
        }
    }
    described = run_execution(machine, execution_input, name="many")
    assert described["status"] == "SUCCEEDED"
    output = json.loads(described["output"])
    assert set(output) == {"message", "deliveries", "authentication", "quarantined"}
    assert [len(d["recipients"]) for d in output["deliveries"]] == [50, 50, 20]
    assert set(outcomes(stack).values()) == {"relayed"}
    assert len(outcomes(stack)) == 120
