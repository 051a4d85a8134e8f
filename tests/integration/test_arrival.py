"""The Start function on moto: Mail Manager's two halves of a message (the WriteToS3 object's S3
event, the InvokeLambda envelope) joined in either order into one execution; replays start
nothing twice; a half that never finds its other half is reported, its recipients (if known)
dead-lettered."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mxgate.adapters.aws.triggers import check_body
from mxgate.cli import main
from mxgate.sandbox.stack import MOTO_CONFIG, REGION, Stack, wait_for_execution
from tests.awsstack import EVENTS, canonical_event, create_stack

STORED = (EVENTS / "stored-message.eml").read_bytes()
MESSAGE_ID = canonical_event("process")["envelope"]["message_id"]
KEY = canonical_event("process")["key"]


@pytest.fixture
def stack() -> Iterator[Stack]:
    with mock_aws(config=MOTO_CONFIG):
        created = create_stack()
        created.deploy_state_machine()
        yield created
        created.close()


def store(stack: Stack) -> None:
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=stack.resource("RawMailBucket"), Key=KEY, Body=STORED
    )


def executions(stack: Stack) -> list[dict[str, Any]]:
    machine = stack.resolver.physical["PipelineStateMachine"]
    client = boto3.client("stepfunctions", region_name=REGION)
    return list(client.list_executions(stateMachineArn=machine)["executions"])


def queued(stack: Stack, queue: str) -> list[Any]:
    client = boto3.client("sqs", region_name=REGION)
    found = client.receive_message(QueueUrl=stack.resource(queue), MaxNumberOfMessages=10)
    return [json.loads(m["Body"]) for m in found.get("Messages", [])]


def outcomes(stack: Stack, field: str = "outcome") -> dict[str, str]:
    """Each recipient's terminal state (or another field of it) in the state table."""
    table = boto3.client("dynamodb", region_name=REGION)
    items = table.query(
        TableName=stack.resource("StateTable"),
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"msg#{MESSAGE_ID}"}},
        ConsistentRead=True,
    )["Items"]
    return {i["recipient"]["S"]: i[field]["S"] for i in items if i["sk"]["S"].startswith("rcpt#")}


def check(stack: Stack) -> None:
    """The arrival check, due now: on its queue, handed to the Start function as Lambda's SQS
    event source would (the real one waits 15 minutes)."""
    boto3.client("sqs", region_name=REGION).send_message(
        QueueUrl=stack.resource("ArrivalCheckQueue"), MessageBody=check_body(MESSAGE_ID)
    )
    assert stack.consume("ArrivalCheckQueue") == 1


@pytest.mark.parametrize(
    "halves", [["s3-object-created", "ses-receiving"], ["ses-receiving", "s3-object-created"]]
)
def test_the_second_half_starts_the_one_execution_and_replays_start_nothing(
    stack: Stack, halves: list[str]
) -> None:
    store(stack)
    first = stack.invoke("start", canonical_event(halves[0]))["result"]
    assert first.startswith("waiting for")
    # Lambda and EventBridge deliver at least once: the first half again changes nothing
    assert stack.invoke("start", canonical_event(halves[0]))["result"] == first
    second = stack.invoke("start", canonical_event(halves[1]))["result"]
    assert second == f"started execution {MESSAGE_ID}"
    for name in halves:  # after the pair: the same execution (name and input) again
        assert stack.invoke("start", canonical_event(name))["result"] == second
    (execution,) = executions(stack)
    assert wait_for_execution(execution["executionArn"])["status"] == "SUCCEEDED"
    # the envelope's recipients, bob (a Bcc) included, each with its end (SES took them:
    # relayed, until its reports say what the mailbox hosts did)
    assert outcomes(stack) == dict.fromkeys(
        ["alice@nutrition.co", "carol@nutrition.co", "eve@nutrition.co", "bob@nutrition.co"],
        "relayed",
    )
    # the first half asked for a later look (delayed 15 minutes: not visible yet)
    attributes = boto3.client("sqs", region_name=REGION).get_queue_attributes(
        QueueUrl=stack.resource("ArrivalCheckQueue"), AttributeNames=["All"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"


def test_an_envelope_whose_object_never_arrives_is_dead_lettered_reported_and_redriven(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """No object: nothing is wrong with the message's content (no quarantine); its recipients
    are dead-lettered, and once the object is there a redrive runs it through Process."""
    stack.invoke("start", canonical_event("ses-receiving"))
    check(stack)
    assert executions(stack) == []
    assert set(outcomes(stack).values()) == {"dead_lettered"}
    assert len(outcomes(stack)) == 4
    (report,) = queued(stack, "UnstartedQueue")
    assert report["problem"].startswith("not started: the stored message (WriteToS3) never")
    assert report["arrival"]["envelope"]["recipients"][-1] == "bob@nutrition.co"
    flags = ["--aws", "--table", stack.resource("StateTable"), "--region", REGION]
    flags += ["--defer-queue", stack.resource("DeferQueue")]
    flags += ["--dead-letter-queue", stack.resource("DeadLetterQueue")]
    capsys.readouterr()  # the functions' logs and metrics so far
    assert main(["dlq", "list", "--json", *flags]) == 0
    (letter,) = json.loads(capsys.readouterr().out)["dead_letters"]
    assert letter["id"] == f"{MESSAGE_ID}.processing"
    assert letter["error"] == "NotArrived"
    # its own wording: nothing failed in processing, the stored message never came
    never = "not started: the stored message (WriteToS3) never arrived (first half at "
    assert letter["reason"].startswith(never)
    assert "processing failed" not in json.dumps(letter)
    assert {d.split(": ", 1)[1][: len(never)] for d in outcomes(stack, "detail").values()} == {
        never
    }

    store(stack)  # it turns up after all
    assert main(["dlq", "redrive", letter["id"], *flags]) == 0
    assert stack.consume("DeferQueue") == 1
    (execution,) = executions(stack)
    assert wait_for_execution(execution["executionArn"])["status"] == "SUCCEEDED"
    assert set(outcomes(stack).values()) == {"relayed"}
    assert len(outcomes(stack)) == 4


def test_an_envelope_whose_s3_event_was_lost_is_joined_by_the_check(stack: Stack) -> None:
    store(stack)  # stored, but the Object Created event never reached the Start function
    stack.invoke("start", canonical_event("ses-receiving"))
    assert executions(stack) == []
    check(stack)
    (execution,) = executions(stack)
    assert execution["name"] == MESSAGE_ID
    assert queued(stack, "UnstartedQueue") == []


def test_an_object_whose_envelope_never_arrives_is_kept_and_reported(stack: Stack) -> None:
    store(stack)
    stack.invoke("start", canonical_event("s3-object-created"))
    check(stack)
    assert executions(stack) == []
    assert outcomes(stack) == {}  # nobody to settle: the recipients are not known
    (report,) = queued(stack, "UnstartedQueue")
    assert "the envelope (InvokeLambda) never arrived" in report["problem"]
    stored = {"bucket": stack.resource("RawMailBucket"), "key": KEY, "envelope": None}
    assert report["arrival"]["stored"] == stored
