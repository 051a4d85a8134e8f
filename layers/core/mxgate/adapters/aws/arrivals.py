"""The AWS side of the arrival join (workflow.arrival): one DynamoDB item per message, written
with conditions so that exactly one arrival sees the pair complete; Step Functions to start the
execution; an SQS queue with a delay for the later look at a message still half-arrived.

Item `arrival#<message id>` / `-`: `stored` and `envelope` (JSON), `first_at`, `expires_at`
(the table's TTL: the record is kept 14 days). The first half is a put that fails if the item
exists; the second an update that fails if its half is already there (a replay), which then
reads the item. Two writes a message (bench/cost.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from mxgate.adapters.aws.deferral import execution_name
from mxgate.adapters.aws.failures import error_code, transient_failures
from mxgate.adapters.aws.triggers import check_body
from mxgate.ports import Clock
from mxgate.records import Envelope
from mxgate.workflow.model import Arrival, ArrivalRecord, StoredObject

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient

ARRIVAL_DAYS = 14
CHECK_DELAY_SECONDS = 900  # SQS's longest delay: a pair normally completes within seconds
_CONDITION_FAILED = "ConditionalCheckFailedException"


def _key(message_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"arrival#{message_id}"}, "sk": {"S": "-"}}


def _half(arrival: Arrival) -> tuple[str, str]:
    if arrival.stored is not None:
        return "stored", arrival.stored.model_dump_json()
    assert arrival.envelope is not None
    return "envelope", arrival.envelope.model_dump_json()


def _record(message_id: str, item: Mapping[str, Any]) -> ArrivalRecord:
    def text(name: str) -> str:
        return str(item[name]["S"]) if name in item else ""

    return ArrivalRecord(
        message_id=message_id,
        stored=StoredObject.model_validate_json(text("stored")) if "stored" in item else None,
        envelope=Envelope.model_validate_json(text("envelope")) if "envelope" in item else None,
        first_at=text("first_at"),
    )


class DynamoArrivals:
    """The Arrivals port in the state table."""

    def __init__(self, client: DynamoDBClient, table: str, clock: Clock) -> None:
        self.client = client
        self.table = table
        self.clock = clock

    def record(self, arrival: Arrival) -> tuple[ArrivalRecord, bool]:
        name, value = _half(arrival)
        now = self.clock.now()
        expires = int(now.timestamp()) + ARRIVAL_DAYS * 86400
        item = {
            **_key(arrival.message_id),
            name: {"S": value},
            "first_at": {"S": now.isoformat()},
            "expires_at": {"N": str(expires)},
        }
        with transient_failures(f"DynamoDB arrival {arrival.message_id}"):
            try:
                self.client.put_item(
                    TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)"
                )
                return _record(arrival.message_id, item), True
            except ClientError as error:
                if error_code(error) != _CONDITION_FAILED:
                    raise
            try:
                updated = self.client.update_item(
                    TableName=self.table,
                    Key=_key(arrival.message_id),
                    UpdateExpression="SET #half = :value",
                    ConditionExpression="attribute_not_exists(#half)",
                    ExpressionAttributeNames={"#half": name},
                    ExpressionAttributeValues={":value": {"S": value}},
                    ReturnValues="ALL_NEW",
                )
                return _record(arrival.message_id, updated["Attributes"]), True
            except ClientError as error:
                if error_code(error) != _CONDITION_FAILED:
                    raise
        found = self.get(arrival.message_id)  # this half came before: a replay, or a retry
        assert found is not None
        return found, False

    def get(self, message_id: str) -> ArrivalRecord | None:
        with transient_failures(f"DynamoDB arrival {message_id}"):
            item = self.client.get_item(
                TableName=self.table, Key=_key(message_id), ConsistentRead=True
            ).get("Item")
        return None if item is None else _record(message_id, item)


class StepFunctionsExecutions:
    """The Executions port: the pipeline state machine."""

    def __init__(self, client: SFNClient, state_machine_arn: str) -> None:
        self.client = client
        self.state_machine_arn = state_machine_arn

    def start(self, name: str, document: Mapping[str, object]) -> str:
        execution = execution_name(name)
        with transient_failures(f"Step Functions start {execution}"):
            try:
                self.client.start_execution(
                    stateMachineArn=self.state_machine_arn,
                    name=execution,
                    input=json.dumps(document),
                )
            except ClientError as error:
                # Standard workflows keep names for 90 days; Express ones do not refuse them.
                if error_code(error) != "ExecutionAlreadyExists":
                    raise
        return execution


class SqsArrivalChecks:
    """The ArrivalChecks port: a message on the arrival-check queue, delayed 15 minutes; and
    the report of a message found unstarted, on the queue the unstarted-messages alarm watches."""

    def __init__(self, client: SQSClient, queue_url: str, unstarted_queue_url: str) -> None:
        self.client = client
        self.queue_url = queue_url
        self.unstarted_queue_url = unstarted_queue_url

    def report_unstarted(self, record: ArrivalRecord, problem: str) -> None:
        body = {"problem": problem, "arrival": record.model_dump(mode="json")}
        with transient_failures(f"SQS unstarted {record.message_id}"):
            self.client.send_message(
                QueueUrl=self.unstarted_queue_url, MessageBody=json.dumps(body)
            )

    def schedule(self, message_id: str) -> None:
        with transient_failures(f"SQS arrival check {message_id}"):
            self.client.send_message(
                QueueUrl=self.queue_url,
                MessageBody=check_body(message_id),
                DelaySeconds=CHECK_DELAY_SECONDS,
            )
