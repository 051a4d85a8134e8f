"""The AppEvents port on EventBridge, and dead-letter notices on SQS."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from mxgate.adapters.aws.failures import transient_failures
from mxgate.errors import TransientError
from mxgate.ports import DeadLetters

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_sqs import SQSClient

SOURCE = "mxgate"
DETAIL_TYPE = "Application mail"


class EventBridgeAppEvents:
    def __init__(self, client: EventBridgeClient, bus: str = "default") -> None:
        self.client = client
        self.bus = bus

    def publish(self, app: str, event_id: str, event: Mapping[str, object]) -> str:
        with transient_failures(f"EventBridge event for {app}"):
            response = self.client.put_events(
                Entries=[
                    {
                        "Source": SOURCE,
                        "DetailType": DETAIL_TYPE,
                        "EventBusName": self.bus,
                        "Resources": [f"mxgate:app:{app}"],
                        "Detail": json.dumps(event),
                    }
                ]
            )
        entry = response["Entries"][0]
        if response.get("FailedEntryCount", 0) or "EventId" not in entry:
            raise TransientError(f"EventBridge refused the event: {entry.get('ErrorCode', '')}")
        return f"eventbridge:{self.bus}:{entry['EventId']}"


class QueueingDeadLetters:
    """Dead letters kept in a store for `mxgate dlq`, each also announced on an SQS queue."""

    def __init__(self, store: DeadLetters, client: SQSClient, queue_url: str) -> None:
        self.store = store
        self.client = client
        self.queue_url = queue_url

    def put(self, record_id: str, record: Mapping[str, object]) -> None:
        self.store.put(record_id, record)
        with transient_failures(f"SQS notice of dead letter {record_id}"):  # a retry puts again
            self.client.send_message(
                QueueUrl=self.queue_url, MessageBody=json.dumps({"id": record_id, **record})
            )

    def list(self) -> Iterator[tuple[str, dict[str, object]]]:
        return self.store.list()

    def get(self, record_id: str) -> dict[str, object] | None:
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
