"""The deferred queue on AWS: an SQS queue with message delays, and the consumer that starts
an execution of the state machine when a record comes due: a redelivery for a deferred
delivery, a new execution of the stored message (with its envelope and its deferral) for
deferred processing.

SQS delays a message by at most 15 minutes, so a longer wait is a chain: a message that
arrives before its due time is sent back with the time that is left.
"""

from __future__ import annotations

import builtins
import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mxgate.adapters.aws.failures import transient_failures
from mxgate.errors import PermanentError
from mxgate.ports import Clock
from mxgate.records import DEFERRED, Deferred, DeferredDelivery, DeferredProcessing
from mxgate.workflow.model import Redelivery, Reprocessing

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
        if not isinstance(record, DeferredDelivery | DeferredProcessing):
            raise PermanentError(
                f"{record.record_id}: only deliveries and stored messages are deferred on AWS"
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
        """Start the execution of one queued record (a delivery again, or a stored message
        through Process again), or send it back if it is early."""
        deferred = DEFERRED.validate_json(body)
        execution_input: Redelivery | Reprocessing
        if isinstance(deferred, DeferredProcessing):
            execution_input = Reprocessing(stored=deferred.stored, deferral=deferred.deferral)
        elif isinstance(deferred, DeferredDelivery):
            execution_input = Redelivery(deliveries=[deferred.delivery])
        else:
            raise PermanentError(f"{deferred.record_id}: not deferred work of the state machine")
        if (deferred.due_at - self.clock.now()).total_seconds() > EARLY_SLACK:
            self.deferrals.schedule(deferred)
            return "waiting"
        name = execution_name(deferred.record_id)  # one per attempt: the ids count them
        self.sfn.start_execution(
            stateMachineArn=self.state_machine_arn,
            name=name,
            input=execution_input.model_dump_json(exclude_none=True),
        )
        return f"started {name}"


class StrandedDeferrals:
    """The deferred queue's own dead-letter queue: records the Redeliver function failed to
    start five times (SQS moved them there). `mxgate dlq --aws` lists them next to the dead
    letters and redrives them: back on the deferred queue, due now."""

    PEEK_ROUNDS = 20  # up to 200 records; more stay in the queue, where the alarm counts them

    def __init__(
        self, client: SQSClient, queue_url: str, defer_queue_url: str, clock: Clock
    ) -> None:
        self.client = client
        self.queue_url = queue_url
        self.defer_queue_url = defer_queue_url
        self.clock = clock

    def _peek(self) -> dict[str, tuple[dict[str, object], str, str]]:
        """record id -> (document, SentTimestamp, receipt handle). Each message stays hidden
        for a moment while the queue is paged, then is made visible again by the caller."""
        found: dict[str, tuple[dict[str, object], str, str]] = {}
        for _ in range(self.PEEK_ROUNDS):
            with transient_failures("SQS deferred dead-letter queue"):
                batch = self.client.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=10,
                    VisibilityTimeout=30,
                    WaitTimeSeconds=0,
                    AttributeNames=["SentTimestamp"],
                ).get("Messages", [])
            if not batch:
                break
            for message in batch:
                try:
                    document = json.loads(message.get("Body", ""))
                except ValueError:
                    document = {"body": message.get("Body", "")}
                if not isinstance(document, dict):
                    document = {"body": document}
                record_id = str(document.get("record_id") or message.get("MessageId", ""))
                sent = message.get("Attributes", {}).get("SentTimestamp", "0")
                found[record_id] = (document, sent, message["ReceiptHandle"])
        return found

    def _release(self, handles: list[str]) -> None:
        for handle in handles:
            self.client.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=handle, VisibilityTimeout=0
            )

    def list(self) -> list[tuple[str, dict[str, object], datetime]]:
        peeked = self._peek()
        self._release([handle for _, _, handle in peeked.values()])
        return [
            (record_id, document, datetime.fromtimestamp(int(sent) / 1000, UTC))
            for record_id, (document, sent, _) in peeked.items()
        ]

    def redrive(self, record_ids: set[str] | None) -> builtins.list[str]:
        """Send the records (all of them for None) back to the deferred queue, due now."""
        peeked = self._peek()
        moved: list[str] = []
        keep: list[str] = []
        for record_id, (document, _, handle) in peeked.items():
            if record_ids is not None and record_id not in record_ids:
                keep.append(handle)
                continue
            with transient_failures(f"SQS redrive of deferred record {record_id}"):
                self.client.send_message(
                    QueueUrl=self.defer_queue_url,
                    MessageBody=json.dumps({**document, "due_at": self.clock.now().isoformat()}),
                    MessageAttributes={
                        "record_id": {"DataType": "String", "StringValue": record_id}
                    },
                )
                self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=handle)
            moved.append(record_id)
        self._release(keep)
        return moved
