"""The deferred queue on AWS: an SQS queue with message delays, and the consumer that starts
a redelivery execution of the state machine when a deferred delivery comes due.

SQS delays a message by at most 15 minutes, so a longer wait is a chain: a message that
arrives before its due time is sent back with the time that is left.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from mxgate.adapters.aws.failures import transient_failures
from mxgate.ports import Clock
from mxgate.workflow.model import DeferredDelivery, Redelivery

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient

MAX_DELAY_SECONDS = 900  # SQS DelaySeconds upper bound
EARLY_SLACK = 1.0  # a message this close to its due time runs now


class SqsDeferrals:
    """The Deferrals port on an SQS queue."""

    def __init__(self, client: SQSClient, queue_url: str, clock: Clock) -> None:
        self.client = client
        self.queue_url = queue_url
        self.clock = clock

    def schedule(self, record_id: str, due_at: datetime, document: Mapping[str, object]) -> None:
        wait = (due_at - self.clock.now()).total_seconds()
        with transient_failures(f"SQS deferral {record_id}"):
            self.client.send_message(
                QueueUrl=self.queue_url,
                MessageBody=json.dumps(document),
                DelaySeconds=max(0, min(MAX_DELAY_SECONDS, int(wait))),
                MessageAttributes={"record_id": {"DataType": "String", "StringValue": record_id}},
            )


def execution_name(record_id: str) -> str:
    """Step Functions names: letters, digits, - and _, at most 80; keep the distinctive tail."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", record_id)[-80:]


class Redeliverer:
    """What the Redeliver function does with one message of the deferred queue."""

    def __init__(
        self, deferrals: SqsDeferrals, sfn: SFNClient, state_machine_arn: str, clock: Clock
    ) -> None:
        self.deferrals = deferrals
        self.sfn = sfn
        self.state_machine_arn = state_machine_arn
        self.clock = clock

    def handle(self, body: str) -> str:
        deferred = DeferredDelivery.model_validate_json(body)
        due = datetime.fromisoformat(deferred.due_at)
        if (due - self.clock.now()).total_seconds() > EARLY_SLACK:
            self.deferrals.schedule(deferred.record_id, due, json.loads(body))
            return "waiting"
        name = execution_name(deferred.record_id)
        self.sfn.start_execution(
            stateMachineArn=self.state_machine_arn,
            name=name,
            input=Redelivery(deliveries=[deferred.delivery]).model_dump_json(),
        )
        return f"started {name}"
