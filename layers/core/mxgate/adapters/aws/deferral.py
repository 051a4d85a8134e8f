"""The deferred queue on AWS: an SQS queue with message delays, and the consumer that starts
an execution of the state machine when a record comes due: a redelivery for a deferred
delivery, a new execution of the stored message (with its envelope) for deferred processing.

SQS delays a message by at most 15 minutes, so a longer wait is a chain: a message that
arrives before its due time is sent back with the time that is left.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mxgate.adapters.aws.failures import transient_failures
from mxgate.errors import PermanentError
from mxgate.ports import Clock
from mxgate.records import DEFERRED, Deferred, DeferredDelivery, DeferredProcessing
from mxgate.workflow.model import ProcessInput, Redelivery

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

    def schedule(self, record: Deferred) -> None:
        # Mail Manager runs the rules on AWS, and Step Functions waits out its own retries
        if not isinstance(record, (DeferredDelivery, DeferredProcessing)):
            raise PermanentError(
                f"{record.record_id}: only deliveries and processing are deferred on AWS"
            )
        wait = (record.due_at - self.clock.now()).total_seconds()
        with transient_failures(f"SQS deferral {record.record_id}"):
            self.client.send_message(
                QueueUrl=self.queue_url,
                MessageBody=record.model_dump_json(),
                DelaySeconds=max(0, min(MAX_DELAY_SECONDS, int(wait))),
                MessageAttributes={
                    "record_id": {"DataType": "String", "StringValue": record.record_id}
                },
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

    def start_due(self, body: str) -> str:
        """Start the execution one queued record asks for (a redelivery, or the processing of
        a stored message again), or send the record back if it is early."""
        deferred = DEFERRED.validate_json(body)
        if isinstance(deferred, DeferredDelivery):
            document = Redelivery(deliveries=[deferred.delivery]).model_dump_json()
        elif isinstance(deferred, DeferredProcessing):
            document = ProcessInput(
                bucket=deferred.bucket, key=deferred.key, envelope=deferred.envelope
            ).model_dump_json()
        else:
            raise PermanentError(f"{deferred.record_id}: not deferred work of this runtime")
        if (deferred.due_at - self.clock.now()).total_seconds() > EARLY_SLACK:
            self.deferrals.schedule(deferred)
            return "waiting"
        name = execution_name(deferred.record_id)  # one per attempt: the ids count them
        self.sfn.start_execution(stateMachineArn=self.state_machine_arn, name=name, input=document)
        return f"started {name}"
