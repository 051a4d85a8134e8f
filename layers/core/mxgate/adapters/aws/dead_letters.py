"""Dead letters on AWS: the records in the state table, each also announced on the dead-letter
queue (whose depth an alarm watches); a redrive takes the notices of what it redrove away."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mxgate.adapters.aws.failures import transient_failures
from mxgate.ports import DeadLetters
from mxgate.records import DeadLetter

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class QueueingDeadLetters:
    """Dead letters kept in a store for `mxgate dlq`, each also announced on an SQS queue."""

    def __init__(self, store: DeadLetters, client: SQSClient, queue_url: str) -> None:
        self.store = store
        self.client = client
        self.queue_url = queue_url

    def put(self, record: DeadLetter) -> None:
        self.store.put(record)
        notice = {"id": record.record_id, **record.model_dump(mode="json")}
        with transient_failures(
            f"SQS notice of dead letter {record.record_id}"
        ):  # a retry puts again
            self.client.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(notice))

    def list(self) -> Iterator[DeadLetter]:
        return self.store.list()

    def get(self, record_id: str) -> DeadLetter | None:
        return self.store.get(record_id)

    def remove(self, record_id: str) -> None:
        self.store.remove(record_id)


def forget_notices(client: SQSClient, queue_url: str, record_ids: set[str]) -> int:
    """Delete the SQS notices of redriven dead letters, so the queue's depth (and its alarm)
    counts only what is still dead; other notices become visible again at once."""
    removed = 0
    for _ in range(20):  # bounded: a few hundred notices; the rest stay, harmlessly
        batch = client.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=30, WaitTimeSeconds=0
        ).get("Messages", [])
        if not batch:
            break
        for message in batch:
            try:
                record_id = json.loads(message.get("Body", "{}")).get("id")
            except ValueError:
                record_id = None
            if record_id in record_ids:
                client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                removed += 1
            else:
                client.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
    return removed
