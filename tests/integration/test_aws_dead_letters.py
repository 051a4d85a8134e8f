"""The AWS side of deferral and dead letters, on moto: the deferred queue with SQS delays, the
Redeliver consumer starting redelivery executions, and `mxgate dlq --aws` over DynamoDB and SQS.
Resource shapes (the state table's keys, the queues) are read from template.yaml."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mxgate.adapters.aws.dead_letters import QueueingDeadLetters
from mxgate.adapters.aws.deferral import Redeliverer, SqsDeferrals, execution_name
from mxgate.adapters.aws.dynamodb import DynamoState
from mxgate.cli import main
from mxgate.mailmanager.template import read_template
from mxgate.records import (
    DeferredDelivery,
    Delivery,
    DeliveryDeadLetter,
    MessageRef,
    Outcome,
    RecipientState,
)
from tests.fakes import ManualClock
from tests.support import TEMPLATE

REGION = "us-east-1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    resources = read_template(TEMPLATE)["Resources"]
    with mock_aws():
        table = resources["StateTable"]["Properties"]
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(
            TableName="state",
            AttributeDefinitions=table["AttributeDefinitions"],
            KeySchema=table["KeySchema"],
            BillingMode=table["BillingMode"],
        )
        sqs = boto3.client("sqs", region_name=REGION)
        assert "DeferQueue" in resources
        assert "DeadLetterQueue" in resources
        defer_url = sqs.create_queue(QueueName="defer")["QueueUrl"]
        dlq_url = sqs.create_queue(QueueName="dead-letters")["QueueUrl"]
        yield {"dynamodb": dynamodb, "sqs": sqs, "defer": defer_url, "dlq": dlq_url}


def delivery(recipients: list[str], delivery_id: str = "01MSG.workspace.0") -> Delivery:
    return Delivery(
        delivery_id=delivery_id,
        message=MessageRef(
            message_id="01MSG",
            bucket="raw-bucket",
            key="raw/01MSG",
            digest="d" * 64,
            envelope_sender="buyer@shop.example",
            size=100,
            subject="hello",
        ),
        kind="mailbox",
        destination="workspace",
        recipients=recipients,
    )


def receive(aws: dict[str, Any], queue: str) -> list[dict[str, Any]]:
    return (
        aws["sqs"]
        .receive_message(QueueUrl=aws[queue], MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        .get("Messages", [])
    )


def test_deferred_deliveries_wait_in_sqs_then_start_a_redelivery(aws):
    clock = ManualClock()
    deferrals = SqsDeferrals(aws["sqs"], aws["defer"], clock)
    waiting = delivery(["alice@nutrition.co"])
    due = clock.now() + timedelta(hours=2)
    record = DeferredDelivery(record_id="01MSG.workspace.0#3", due_at=due, delivery=waiting)
    deferrals.schedule(record)
    assert receive(aws, "defer") == []  # delayed by SQS (at most 15 minutes)

    sfn = boto3.client("stepfunctions", region_name=REGION)
    machine = sfn.create_state_machine(
        name="pipeline",
        definition=json.dumps({"StartAt": "S", "States": {"S": {"Type": "Succeed"}}}),
        roleArn="arn:aws:iam::123456789012:role/sfn",
    )["stateMachineArn"]
    consumer = Redeliverer(deferrals, sfn, machine, clock)
    body = record.model_dump_json()
    assert consumer.start_due(body) == "waiting"  # early: back on the queue with the time left
    assert sfn.list_executions(stateMachineArn=machine)["executions"] == []
    clock.advance(2 * 3600)
    assert consumer.start_due(body) == "started 01MSG-workspace-0-3"
    (execution,) = sfn.list_executions(stateMachineArn=machine)["executions"]
    described = sfn.describe_execution(executionArn=execution["executionArn"])
    assert json.loads(described["input"])["deliveries"][0]["recipients"] == ["alice@nutrition.co"]


def test_execution_names_are_valid():
    assert (
        execution_name("01A.workspace.0#redrive-20250602T090000")
        == "01A-workspace-0-redrive-20250602T090000"
    )
    assert len(execution_name("x" * 200)) == 80


def test_dlq_cli_on_aws_lists_shows_and_redrives(aws, capsys):
    clock = ManualClock()
    state = DynamoState(aws["dynamodb"], "state", clock)
    dead = QueueingDeadLetters(state, aws["sqs"], aws["dlq"])
    failed = delivery(["alice@nutrition.co", "bob@nutrition.co"])
    dead.put(
        DeliveryDeadLetter(
            record_id=failed.delivery_id,
            delivery=failed,
            message_id="01MSG",
            kind="mailbox",
            destination="workspace",
            recipients=["alice@nutrition.co", "bob@nutrition.co"],
            error="PermanentError",
            reason="PermanentError: 550 5.1.1 No such user",
            at=clock.now(),
        )
    )
    other = delivery(["x@nutrition.co"], "other.record")
    dead.put(
        DeliveryDeadLetter(
            record_id="other.record",
            delivery=other,
            message_id="01MSG",
            kind="mailbox",
            destination="workspace",
            recipients=["x@nutrition.co"],
            error="PermanentError",
            at=clock.now(),
        )
    )
    for recipient in ("alice@nutrition.co", "bob@nutrition.co"):
        state.settle(
            RecipientState(
                message_id="01MSG",
                recipient=recipient,
                outcome=Outcome.DEAD_LETTERED,
                at=clock.now(),
                route="workspace",
            )
        )
    flags = [
        "--aws",
        "--table",
        "state",
        "--defer-queue",
        aws["defer"],
        "--dead-letter-queue",
        aws["dlq"],
        "--region",
        REGION,
    ]

    assert main(["dlq", "list", "--json", *flags]) == 0
    listing = json.loads(capsys.readouterr().out)["dead_letters"]
    assert sorted(r["id"] for r in listing) == sorted(["other.record", failed.delivery_id])
    assert main(["dlq", "show", failed.delivery_id, *flags]) == 0
    assert "550 5.1.1 No such user" in capsys.readouterr().out

    assert main(["dlq", "redrive", failed.delivery_id, "--json", *flags]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["redriven"][0]["recipients"] == ["alice@nutrition.co", "bob@nutrition.co"]
    (queued,) = receive(aws, "defer")
    assert DeferredDelivery.model_validate_json(queued["Body"]).delivery.recipients == [
        "alice@nutrition.co",
        "bob@nutrition.co",
    ]
    assert state.states("01MSG") == []  # reopened, to be settled by the redelivery
    assert [r.record_id for r in state.list()] == ["other.record"]
    notices = [json.loads(m["Body"])["id"] for m in receive(aws, "dlq")]
    assert notices == ["other.record"]  # the redriven one's notice is gone, the other stays

    assert main(["dlq", "redrive", failed.delivery_id, *flags]) == 1  # no longer there
    assert "no dead letter" in capsys.readouterr().out


def test_dlq_cli_on_aws_needs_its_resources(capsys, monkeypatch):
    monkeypatch.delenv("MXGATE_STATE_TABLE", raising=False)
    assert main(["dlq", "list", "--aws"]) == 1
    assert "--table or MXGATE_STATE_TABLE" in capsys.readouterr().err
