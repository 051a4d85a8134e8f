"""The S3 and DynamoDB adapters against moto, on the table and bucket template.yaml defines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.retries import standard
from moto import mock_aws
from moto.dynamodb.exceptions import DynamodbException
from moto.dynamodb.models import DynamoDBBackend

from mxgate.adapters.aws.bootstrap import arc_sealer
from mxgate.adapters.aws.clients import LazyClient
from mxgate.adapters.aws.dynamodb import DynamoState
from mxgate.adapters.aws.s3 import S3ObjectStore
from mxgate.adapters.aws.settings import AwsSettings
from mxgate.errors import PermanentError, TransientError
from mxgate.records import Outcome, RecipientState, Stage, TimelineEvent
from mxgate.sandbox.stack import MOTO_CONFIG, REGION, Stack
from tests.awsstack import create_stack
from tests.fakes import ManualClock
from tests.mailtools import make_keys
from tests.records import a_dead_letter

T0 = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)  # as the Lambda runtime sets it
    with mock_aws(config=MOTO_CONFIG):
        yield create_stack()


def client(service: str) -> Any:
    """A client as the composition root makes it (retries, timeouts, signatures)."""
    return LazyClient(service)


@pytest.fixture
def state(stack: Stack) -> DynamoState:
    return DynamoState(client("dynamodb"), stack.resource("StateTable"), ManualClock(T0))


def event(
    message_id: str, minutes: int, stage: Stage, recipient: str | None = None
) -> TimelineEvent:
    return TimelineEvent(
        message_id=message_id, at=T0 + timedelta(minutes=minutes), stage=stage, recipient=recipient
    )


def test_the_timeline_keeps_events_in_order_with_terminal_states(state):
    state.record_many(
        [
            event("m1", 0, Stage.PARSED),
            event("m1", 0, Stage.CLASSIFIED, "alice@nutrition.co"),
            event("m2", 1, Stage.PARSED),
        ]
    )
    state.record(event("m1", 2, Stage.ATTEMPT))
    first = RecipientState(
        message_id="m1",
        recipient="alice@nutrition.co",
        outcome=Outcome.DELIVERED,
        at=T0 + timedelta(minutes=3),
        route="workspace",
        detail="SES message 1",
    )
    assert state.settle(first) is True
    assert state.settle(first.model_copy(update={"outcome": Outcome.DEAD_LETTERED})) is False

    assert [(e.stage, e.recipient) for e in state.events("m1")] == [
        (Stage.PARSED, None),
        (Stage.CLASSIFIED, "alice@nutrition.co"),
        (Stage.ATTEMPT, None),
        (Stage.TERMINAL, "alice@nutrition.co"),
    ]
    assert state.events("m1")[-1].detail == "delivered (workspace): SES message 1"
    assert [s.outcome for s in state.states("m1")] == [Outcome.DELIVERED]
    assert state.recent(10) == ["m2", "m1"]


def test_one_step_writes_one_timeline_item_per_message(stack, state):
    state.record_many(
        [event("m1", 0, Stage.PARSED)]
        + [event("m1", 0, Stage.CLASSIFIED, f"user{n}@nutrition.co") for n in range(30)]
    )
    items = boto3.client("dynamodb", region_name=REGION).scan(
        TableName=stack.resource("StateTable")
    )["Items"]
    assert sorted(i["pk"]["S"] for i in items) == ["msg#m1", "recent#2026-11-30"]
    assert len(state.events("m1")) == 31


def test_idempotency_keys_remember_outcomes_and_expire(stack, state):
    assert state.seen("digest:alice@nutrition.co:mailbox:workspace") is None
    state.remember("digest:alice@nutrition.co:mailbox:workspace", "delivered")
    assert state.seen("digest:alice@nutrition.co:mailbox:workspace") == "delivered"
    (item,) = boto3.client("dynamodb", region_name=REGION).scan(
        TableName=stack.resource("StateTable")
    )["Items"]
    ttl = stack.properties("StateTable")["TimeToLiveSpecification"]["AttributeName"]
    assert int(item[ttl]["N"]) > T0.timestamp()


def test_dead_letter_records_list_get_and_remove(state):
    state.put(a_dead_letter("m1.m365.0", ["carol@nutrition.co"]))
    state.put(a_dead_letter("m2.workspace.0", ["alice@nutrition.co"]))
    assert [r.record_id for r in state.list()] == ["m1.m365.0", "m2.workspace.0"]
    assert state.get("m1.m365.0") == a_dead_letter("m1.m365.0", ["carol@nutrition.co"])
    state.remove("m1.m365.0")
    assert state.get("m1.m365.0") is None


def test_terminal_states_are_read_strongly_consistent(state):
    """A delivery sends to a recipient it finds no state for: it must see a state written a
    moment ago (by an earlier attempt on another container), never a stale view."""
    asked: list[dict[str, Any]] = []
    state.client.meta.events.register(
        "before-parameter-build.dynamodb.Query", lambda params, **_: asked.append(params)
    )
    state.states("m1")
    assert [params.get("ConsistentRead") for params in asked] == [True]
    asked.clear()
    state.events("m1")  # what `mxgate trace` shows may lag a moment: half the read units
    assert [params.get("ConsistentRead") for params in asked] == [False]


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ProvisionedThroughputExceededException", 400),
        ("ThrottlingException", 400),
        ("RequestLimitExceeded", 400),
        ("InternalServerError", 500),
    ],
)
def test_throttling_and_service_failures_are_transient(state, monkeypatch, code, status):
    """The state machine retries TransientError by name; a ClientError would be taken for a
    permanent failure and dead-lettered."""

    class Refused(DynamodbException):
        code = status

    def refuse(*_: Any, **__: Any) -> Any:
        raise Refused(code, "try again later")

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)
    recipient = RecipientState(
        message_id="m1", recipient="a@nutrition.co", outcome=Outcome.DELIVERED, at=T0
    )
    for operation, call in (
        ("put_item", lambda: state.settle(recipient)),
        ("put_item", lambda: state.put(a_dead_letter("m1.workspace.0"))),
        ("query", lambda: state.states("m1")),
        ("get_item", lambda: state.seen("k")),
    ):
        with monkeypatch.context() as patch:
            patch.setattr(DynamoDBBackend, operation, refuse)
            with pytest.raises(TransientError, match=code):
                call()


def test_other_dynamodb_refusals_pass_as_they_are(state):
    state.table = "no-such-table"
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        state.states("m1")


def test_the_object_store_reads_what_it_wrote_and_names_what_is_missing(stack):
    objects = S3ObjectStore(client("s3"))
    bucket = stack.resource("RawMailBucket")
    info = objects.put(
        bucket, "raw/m1", b"Subject: hi\r\n\r\nhello\r\n", {"content-type": "message/rfc822"}
    )
    assert objects.head(bucket, "raw/m1") == info
    assert objects.get(bucket, "raw/m1").endswith(b"hello\r\n")
    assert objects.exists(bucket, "raw/m1")
    assert not objects.exists(bucket, "raw/m2")
    assert "X-Amz-Signature" in objects.link(bucket, "raw/m1")
    with pytest.raises(PermanentError, match="raw/m2: not found"):
        objects.get(bucket, "raw/m2")


@pytest.mark.parametrize("as_json", [True, False])
def test_the_arc_sealing_key_comes_from_secrets_manager(monkeypatch, as_json):
    """What the Process function reads on a cold start when ArcSealKeySecretArn is set: the
    PEM, or JSON with it under "private_key"."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    pem = make_keys().private.decode()
    with mock_aws():
        secrets = boto3.client("secretsmanager", region_name=REGION)
        value = json.dumps({"private_key": pem}) if as_json else pem
        arn = secrets.create_secret(Name="mxgate-arc-seal", SecretString=value)["ARN"]
        environment = {
            "MXGATE_RAW_BUCKET": "raw",
            "MXGATE_STATE_TABLE": "state",
            "MXGATE_DEAD_LETTER_QUEUE": "https://sqs/dlq",
            "MXGATE_ARC_SEAL_KEY_SECRET": arn,
            "MXGATE_ARC_SEAL_DOMAIN": "nutrition.co",
        }
        sealer = arc_sealer(AwsSettings.from_env(environment))
    assert sealer is not None
    assert (sealer.domain, sealer.selector) == ("nutrition.co", "arc")
    unset = AwsSettings.from_env({k: v for k, v in environment.items() if "ARC" not in k})
    assert arc_sealer(unset) is None
