"""Timeline, idempotency keys and dead-letter records in one DynamoDB table (pk, sk).

Items: `msg#<id>` / `event#<time>#<token>` (the timeline events one step records, together in
one item), `msg#<id>` / `rcpt#<recipient>` (terminal states, written once with a condition;
each also stands for its `terminal` timeline event), `recent#<day>` / `<time>#<id>` (the recent
list), `idem#<key>` / `-` (idempotency, expiring), `dlq` / `<delivery id>` (dead letters),
`quarantine` / `<message id>` (quarantine records, expiring).

On-demand tables bill every item written (per KB), so events that happen together are one
item and a terminal state is not written twice: the workflow writes about four items per
message and recipient (bench/cost.py counts them). Terminal states are read strongly
consistent (twice the read units): a delivery that finds none sends, so it must see the one
an earlier attempt wrote a moment ago.

Throttling, 5xx answers and lost connections come out as TransientError, so the state machine
retries them.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from mxgate.adapters.aws.failures import error_code, transient_failures
from mxgate.errors import TransientError
from mxgate.ports import Clock
from mxgate.records import (
    DEAD_LETTER,
    DeadLetter,
    MessageSummary,
    Outcome,
    QuarantineRecord,
    RecipientState,
    Stage,
    TimelineEvent,
)
from mxgate.workflow.quarantine import merged

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

IDEMPOTENCY_DAYS = 14
_RECENT_STAGES = (Stage.ACCEPTED, Stage.PARSED)  # a message enters the recent list here


def _s(value: str) -> dict[str, Any]:
    return {"S": value}


def _event_attributes(event: TimelineEvent) -> dict[str, Any]:
    return {
        "at": _s(event.at.isoformat()),
        "stage": _s(event.stage.value),
        "recipient": _s(event.recipient or ""),
        "detail": _s(event.detail),
    }


def _state_of(message_id: str, item: Mapping[str, Any]) -> RecipientState:
    return RecipientState(
        message_id=message_id,
        recipient=item["recipient"]["S"],
        outcome=Outcome(item["outcome"]["S"]),
        at=datetime.fromisoformat(item["at"]["S"]),
        route=item["route"]["S"],
        detail=item["detail"]["S"],
    )


def _event_of(message_id: str, attributes: Mapping[str, Any]) -> TimelineEvent:
    return TimelineEvent(
        message_id=message_id,
        at=datetime.fromisoformat(attributes["at"]["S"]),
        stage=Stage(attributes["stage"]["S"]),
        recipient=attributes["recipient"]["S"] or None,
        detail=attributes["detail"]["S"],
    )


class DynamoState:
    """Implements the Timeline, Idempotency and DeadLetters ports."""

    def __init__(self, client: DynamoDBClient, table: str, clock: Clock) -> None:
        self.client = client
        self.table = table
        self.clock = clock

    # ----------------------------------------------------------------------- Timeline

    def record(self, event: TimelineEvent) -> None:
        self.record_many([event])

    def record_many(self, events: Sequence[TimelineEvent]) -> None:
        by_message: dict[str, list[TimelineEvent]] = {}
        for event in events:
            by_message.setdefault(event.message_id, []).append(event)
        items = [
            {
                "pk": _s(f"msg#{message_id}"),
                # a random token keeps two containers recording at the same instant apart
                "sk": _s(f"event#{batch[0].at.isoformat()}#{secrets.token_hex(4)}"),
                "events": {"L": [{"M": _event_attributes(e)} for e in batch]},
            }
            for message_id, batch in by_message.items()
        ]
        items += [
            {
                "pk": _s(f"recent#{e.at.date().isoformat()}"),
                "sk": _s(f"{e.at.isoformat()}#{e.message_id}"),
                # what tracking searches, on the item the recent list writes anyway
                **({"summary": _s(e.summary.model_dump_json(by_alias=True))} if e.summary else {}),
            }
            for e in events
            if e.stage in _RECENT_STAGES
        ]
        for start in range(0, len(items), 25):
            requests: Any = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
            self._batch_write(requests)

    def _batch_write(self, requests: Any) -> None:
        """BatchWriteItem, again for what DynamoDB hands back unprocessed (throttling)."""
        for attempt in range(5):
            with transient_failures("DynamoDB timeline write"):
                response = self.client.batch_write_item(RequestItems={self.table: requests})
            requests = response.get("UnprocessedItems", {}).get(self.table)
            if not requests:
                return
            self.clock.sleep(0.05 * 2**attempt)
        raise TransientError(f"DynamoDB left {len(requests)} timeline items unwritten")

    @staticmethod
    def _state_item(state: RecipientState) -> dict[str, Any]:
        return {
            "pk": _s(f"msg#{state.message_id}"),
            "sk": _s(f"rcpt#{state.recipient.casefold()}"),
            "recipient": _s(state.recipient),
            "outcome": _s(state.outcome.value),
            "at": _s(state.at.isoformat()),
            "route": _s(state.route),
            "detail": _s(state.detail),
        }

    def settle(self, state: RecipientState) -> bool:
        item = self._state_item(state)
        with transient_failures(f"DynamoDB settle {state.recipient}"):
            try:
                self.client.put_item(
                    TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)"
                )
            except ClientError as error:
                if error_code(error) == "ConditionalCheckFailedException":
                    return False
                raise
        return True

    def revise(self, state: RecipientState, replaces: frozenset[Outcome]) -> bool:
        """One conditional write: the state, only over one of `replaces` (so a late or
        repeated report never undoes a later one)."""
        if not replaces:
            return False
        names = {f":was{i}": _s(o.value) for i, o in enumerate(sorted(replaces))}
        with transient_failures(f"DynamoDB revise {state.recipient}"):
            try:
                self.client.put_item(
                    TableName=self.table,
                    Item=self._state_item(state),
                    ConditionExpression=f"outcome IN ({', '.join(names)})",
                    ExpressionAttributeValues=names,
                )
            except ClientError as error:
                if error_code(error) == "ConditionalCheckFailedException":
                    return False
                raise
        return True

    def reopen(self, message_id: str, recipient: str) -> None:
        """Forget a recipient's terminal state (a redrive gives it a new one)."""
        with transient_failures("DynamoDB reopen"):
            self.client.delete_item(
                TableName=self.table,
                Key={"pk": _s(f"msg#{message_id}"), "sk": _s(f"rcpt#{recipient.casefold()}")},
            )

    def _query(self, pk: str, prefix: str, *, consistent: bool = False) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        values = {":pk": _s(pk), **({":prefix": _s(prefix)} if prefix else {})}
        with transient_failures(f"DynamoDB query {pk}"):
            for page in self.client.get_paginator("query").paginate(
                TableName=self.table,
                # DynamoDB refuses an empty string in a key condition: no prefix, no begins_with
                KeyConditionExpression="pk = :pk"
                + (" AND begins_with(sk, :prefix)" if prefix else ""),
                ExpressionAttributeValues=values,
                ConsistentRead=consistent,
            ):
                items.extend(page["Items"])
        return items

    def states(self, message_id: str) -> list[RecipientState]:
        """Strongly consistent: deliveries decide from these whether to send."""
        return [
            _state_of(message_id, i)
            for i in self._query(f"msg#{message_id}", "rcpt#", consistent=True)
        ]

    def events(self, message_id: str) -> list[TimelineEvent]:
        """The recorded events, and each terminal state as its `terminal` event."""
        found: list[TimelineEvent] = []
        for item in self._query(f"msg#{message_id}", ""):
            sk = item["sk"]["S"]
            if sk.startswith("event#"):
                found += [_event_of(message_id, e["M"]) for e in item["events"]["L"]]
            elif sk.startswith("rcpt#"):
                found.append(_state_of(message_id, item).event())
        return sorted(found, key=lambda e: e.at)  # stable: a batch keeps its own order

    def recent(self, limit: int) -> list[str]:
        today = self.clock.now().date()
        found: list[str] = []
        for day in (today, today - timedelta(days=1)):
            with transient_failures("DynamoDB recent"):
                response = self.client.query(
                    TableName=self.table,
                    KeyConditionExpression="pk = :pk",
                    ExpressionAttributeValues={":pk": _s(f"recent#{day.isoformat()}")},
                    ScanIndexForward=False,
                    Limit=limit,
                )
            found += [i["sk"]["S"].split("#", 1)[1] for i in response["Items"]]
        return list(dict.fromkeys(found))[:limit]

    def summaries(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[tuple[str, datetime, MessageSummary]]:
        """Parsed messages, newest first, from the recent list's days (since: default two
        days back, as `recent`)."""
        now = self.clock.now()
        first = (since or now - timedelta(days=1)).date()
        day = (until or now).date()
        while day >= first:
            for item in self._query(f"recent#{day.isoformat()}", "")[::-1]:
                if "summary" not in item:
                    continue
                at, _, message_id = item["sk"]["S"].partition("#")
                moment = datetime.fromisoformat(at)
                if (since is None or moment >= since) and (until is None or moment <= until):
                    yield (
                        message_id,
                        moment,
                        MessageSummary.model_validate_json(item["summary"]["S"]),
                    )
            day -= timedelta(days=1)

    # ----------------------------------------------------------------------- Idempotency

    def seen(self, key: str) -> str | None:
        with transient_failures("DynamoDB idempotency read"):
            item = self.client.get_item(
                TableName=self.table,
                Key={"pk": _s(f"idem#{key}"), "sk": _s("-")},
                ConsistentRead=True,
            ).get("Item")
        return None if item is None else str(item["outcome"]["S"])

    def remember(self, key: str, outcome: str) -> None:
        expires = int(self.clock.now().timestamp()) + IDEMPOTENCY_DAYS * 86400
        with transient_failures("DynamoDB idempotency write"):
            self.client.put_item(
                TableName=self.table,
                Item={
                    "pk": _s(f"idem#{key}"),
                    "sk": _s("-"),
                    "outcome": _s(outcome),
                    "expires_at": {"N": str(expires)},
                },
            )

    # ----------------------------------------------------------------------- DeadLetters

    def put(self, record: DeadLetter) -> None:
        with transient_failures(f"DynamoDB dead letter {record.record_id}"):
            self.client.put_item(
                TableName=self.table,
                Item={
                    "pk": _s("dlq"),
                    "sk": _s(record.record_id),
                    "record": _s(record.model_dump_json()),
                },
            )

    def list(self) -> Iterator[DeadLetter]:
        for item in self._query("dlq", ""):
            yield _dead_letter(item)

    def get(self, record_id: str) -> DeadLetter | None:
        with transient_failures(f"DynamoDB dead letter {record_id}"):
            item = self.client.get_item(
                TableName=self.table,
                Key={"pk": _s("dlq"), "sk": _s(record_id)},
                ConsistentRead=True,
            ).get("Item")
        return None if item is None else _dead_letter(item)

    def remove(self, record_id: str) -> None:
        with transient_failures(f"DynamoDB dead letter {record_id}"):
            self.client.delete_item(
                TableName=self.table, Key={"pk": _s("dlq"), "sk": _s(record_id)}
            )


def _dead_letter(item: Mapping[str, Any]) -> DeadLetter:
    """Records of earlier versions were stored without their id (the sort key)."""
    return DEAD_LETTER.validate_python(
        {**json.loads(item["record"]["S"]), "record_id": item["sk"]["S"]}
    )


class DynamoQuarantine:
    """Quarantine records in the state table: `quarantine` / `<id>`, each expiring (TTL
    `expires_at`) when the quarantine's retention ends, as the raw message does in S3."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self.client = client
        self.table = table

    def _item(self, record: QuarantineRecord) -> dict[str, Any]:
        item = {
            "pk": _s("quarantine"),
            "sk": _s(record.quarantine_id),
            "record": _s(record.model_dump_json(by_alias=True)),
        }
        if record.expires_at is not None:
            item["expires_at"] = {"N": str(int(record.expires_at.timestamp()))}
        return item

    def hold(self, record: QuarantineRecord) -> None:
        self.replace(merged(self.get(record.quarantine_id), record))

    def replace(self, record: QuarantineRecord) -> None:
        with transient_failures(f"DynamoDB quarantine {record.quarantine_id}"):
            self.client.put_item(TableName=self.table, Item=self._item(record))

    def get(self, quarantine_id: str) -> QuarantineRecord | None:
        with transient_failures(f"DynamoDB quarantine {quarantine_id}"):
            item = self.client.get_item(
                TableName=self.table,
                Key={"pk": _s("quarantine"), "sk": _s(quarantine_id)},
                ConsistentRead=True,
            ).get("Item")
        return None if item is None else QuarantineRecord.model_validate_json(item["record"]["S"])

    def records(self) -> Iterator[QuarantineRecord]:
        found = []
        with transient_failures("DynamoDB quarantine"):
            for page in self.client.get_paginator("query").paginate(
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": _s("quarantine")},
            ):
                found += [
                    QuarantineRecord.model_validate_json(i["record"]["S"]) for i in page["Items"]
                ]
        yield from sorted(found, key=lambda r: r.held_at, reverse=True)

    def remove(self, quarantine_id: str) -> None:
        with transient_failures(f"DynamoDB quarantine {quarantine_id}"):
            self.client.delete_item(
                TableName=self.table, Key={"pk": _s("quarantine"), "sk": _s(quarantine_id)}
            )
