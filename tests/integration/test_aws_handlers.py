"""Each Lambda handler in process against moto, on the stack template.yaml defines, fed with the
canonical payloads in events/: process -> deliver -> dead_letter, and quarantine."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from email import message_from_bytes, policy
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mxgate.errors import PermanentError
from mxgate.sandbox.stack import MOTO_CONFIG, REGION, Stack, sent_messages
from mxgate.workflow.model import DeadLetterInput, DeliverInput, ProcessInput, QuarantineInput
from tests.awsstack import EVENTS, canonical_event, create_stack

STORED = (EVENTS / "stored-message.eml").read_bytes()


@pytest.fixture
def stack() -> Iterator[Stack]:
    with mock_aws(config=MOTO_CONFIG):
        created = create_stack()
        yield created
        created.close()


def store(stack: Stack, key: str, body: bytes = STORED) -> None:
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=stack.resource("RawMailBucket"), Key=key, Body=body
    )


def items(stack: Stack, pk: str) -> list[dict[str, Any]]:
    response = boto3.client("dynamodb", region_name=REGION).query(
        TableName=stack.resource("StateTable"),
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": pk}},
    )
    return response["Items"]


def outcomes(stack: Stack, message_id: str) -> dict[str, str]:
    return {
        i["recipient"]["S"]: i["outcome"]["S"]
        for i in items(stack, f"msg#{message_id}")
        if i["sk"]["S"].startswith("rcpt#")
    }


def queued(stack: Stack, queue: str) -> list[dict[str, Any]]:
    response = boto3.client("sqs", region_name=REGION).receive_message(
        QueueUrl=stack.resource(queue), MaxNumberOfMessages=10
    )
    return [json.loads(m["Body"]) for m in response.get("Messages", [])]


def without_received_date(delivery: dict[str, Any]) -> dict[str, Any]:
    """The Received trace field ends in the time of processing; drop that part."""
    copy = json.loads(json.dumps(delivery))
    copy["prepend"] = [[name, value.rsplit("; ", 1)[0]] for name, value in copy["prepend"]]
    return dict(copy)


def test_canonical_events_name_the_stack_and_the_stored_message(stack):
    bucket = stack.resource("RawMailBucket")
    created = canonical_event("s3-object-created")
    assert created["detail"]["bucket"]["name"] == bucket
    assert created["detail"]["object"]["size"] == len(STORED)
    assert created["detail"]["object"]["etag"] == hashlib.md5(STORED).hexdigest()
    assert ProcessInput.model_validate(canonical_event("process")).bucket == bucket
    for name, model in (
        ("deliver", DeliverInput),
        ("dead-letter", DeadLetterInput),
    ):
        delivery = model.model_validate(canonical_event(name)).delivery  # type: ignore[attr-defined]
        assert delivery.message.bucket == bucket
        assert delivery.message.digest == hashlib.sha256(STORED).hexdigest()
        assert delivery.message.size == len(STORED)
    assert QuarantineInput.model_validate(canonical_event("quarantine")).bucket == bucket
    mail = canonical_event("ses-receiving")["Records"][0]["ses"]["mail"]
    assert f"raw/{mail['messageId']}" == created["detail"]["object"]["key"]


def test_the_bucket_is_encrypted_private_and_expires_mail(stack):
    s3 = boto3.client("s3", region_name=REGION)
    bucket = stack.resource("RawMailBucket")
    encryption = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert rule["Expiration"]["Days"] == int(stack.parameter("RawMailRetentionDays"))


def test_process_plans_for_the_envelope_recipients_a_bcc_included(stack, capsys):
    store(stack, canonical_event("process")["key"])
    planned = stack.invoke("process", canonical_event("process"))
    routes = {d["destination"]: d["recipients"] for d in planned["deliveries"]}
    # the SMTP envelope Mail Manager saw: bob was a Bcc recipient, in no header
    assert routes == {
        "workspace": ["alice@nutrition.co", "eve@nutrition.co", "bob@nutrition.co"],
        "m365": ["carol@nutrition.co"],
    }
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    assert metrics[-1]["DeliveriesPlanned"] == [float(len(planned["deliveries"]))]


def test_process_refuses_a_document_it_cannot_read(stack):
    with pytest.raises(PermanentError, match="ValidationError: 11 validation errors"):
        stack.invoke("process", canonical_event("s3-object-created"))


def test_deliveries_reach_ses_with_the_routed_recipients_once(stack):
    store(stack, canonical_event("process")["key"])
    planned = stack.invoke("process", canonical_event("process"))
    workspace, m365 = planned["deliveries"]
    # the canonical Deliver payload is what Process plans for the stored message
    assert without_received_date(workspace) == without_received_date(
        canonical_event("deliver")["delivery"]
    )

    first = stack.invoke("deliver", canonical_event("deliver"))
    second = stack.invoke("deliver", {"delivery": m365})
    assert [r["outcome"] for r in first["results"] + second["results"]] == ["delivered"] * 4

    sent = sent_messages()
    # SES is asked for the routing addresses (moto adds the header To and Cc to its list)
    routing = (".test-google-a.com", ".mail.onmicrosoft.com")
    assert [sorted(d for d in m.destinations if d.endswith(routing)) for m in sent] == [
        [
            "alice@nutrition.co.test-google-a.com",
            "bob@nutrition.co.test-google-a.com",
            "eve@nutrition.co.test-google-a.com",
        ],
        ["carol@nutritionco.mail.onmicrosoft.com"],
    ]
    relayed = sent[0].raw_data.encode() if isinstance(sent[0].raw_data, str) else sent[0].raw_data
    assert relayed.startswith(b"Authentication-Results: mxgate;")
    assert (
        b"\r\nReceived: from mail.nutrition.co ([198.51.100.25]) (using TLSv1.3 with cipher "
        b"TLS_AES_256_GCM_SHA384 (256 bits)) by mxgate (mxgate) with ESMTPS" in relayed
    )
    assert relayed.endswith(STORED)  # the bytes as received, after the trace field
    assert message_from_bytes(relayed, policy=policy.default)["Subject"] == (
        "Lyon warehouse closed on Friday"
    )

    message_id = planned["message"]["message_id"]
    assert outcomes(stack, message_id) == {
        "alice@nutrition.co": "delivered",
        "eve@nutrition.co": "delivered",
        "bob@nutrition.co": "delivered",
        "carol@nutrition.co": "delivered",
    }
    # a replayed delivery (an Express execution runs at least once) sends nothing again
    again = stack.invoke("deliver", {"delivery": m365})
    assert again["results"][0]["detail"] == "already settled"
    assert len(sent_messages()) == 2


def test_a_delivery_that_fails_is_dead_lettered_with_its_record(stack):
    key = canonical_event("process")["key"]
    store(stack, key)
    planned = stack.invoke("process", canonical_event("process"))
    workspace, m365 = planned["deliveries"]
    stack.invoke("deliver", {"delivery": workspace})
    # as for a message too large to travel inline, the delivery reads the stored one...
    m365 = {**m365, "message": {**m365["message"], "inline": None}}
    # ...and the stored message expires (a redrive after RawMailRetentionDays): permanent failure
    boto3.client("s3", region_name=REGION).delete_object(
        Bucket=stack.resource("RawMailBucket"), Key=key
    )
    with pytest.raises(PermanentError, match="not found") as failure:
        stack.invoke("deliver", {"delivery": m365})

    # what the state machine's Catch hands to DeadLetter (ResultPath $.error)
    caught = {
        "delivery": m365,
        "error": {
            "Error": type(failure.value).__name__,
            "Cause": json.dumps(
                {"errorMessage": str(failure.value), "errorType": type(failure.value).__name__}
            ),
        },
    }
    recorded = stack.invoke("dead_letter", caught)
    ((result),) = recorded["results"]
    assert (result["recipient"], result["outcome"]) == ("carol@nutrition.co", "dead_lettered")
    assert f"dead letter {m365['delivery_id']}: PermanentError: " in result["detail"]
    (record,) = items(stack, "dlq")
    assert record["sk"]["S"] == m365["delivery_id"]
    assert json.loads(record["record"]["S"])["recipients"] == ["carol@nutrition.co"]
    (notice,) = queued(stack, "DeadLetterQueue")
    assert notice["id"] == m365["delivery_id"]
    assert notice["error"] == "PermanentError"
    assert notice["recipients"] == ["carol@nutrition.co"]
    assert outcomes(stack, planned["message"]["message_id"]) == {
        "alice@nutrition.co": "delivered",
        "eve@nutrition.co": "delivered",
        "bob@nutrition.co": "delivered",
        "carol@nutrition.co": "dead_lettered",
    }


def test_the_canonical_dead_letter_payload_is_recorded(stack):
    result = stack.invoke("dead_letter", canonical_event("dead-letter"))
    assert [r["outcome"] for r in result["results"]] == ["dead_lettered"]
    (notice,) = queued(stack, "DeadLetterQueue")
    assert notice["error"] == "TransientError"
    assert "TooManyRequestsException" in notice["cause"]


def test_a_message_that_cannot_be_processed_is_quarantined_per_recipient(stack):
    # the execution starts, but the stored message is gone
    with pytest.raises(PermanentError, match="not found"):
        stack.invoke("process", canonical_event("process"))
    result = stack.invoke("quarantine", canonical_event("quarantine"))
    message_id = canonical_event("process")["key"].removeprefix("raw/")
    # the envelope in the execution's input names every recipient, Bcc included
    assert outcomes(stack, message_id) == dict.fromkeys(
        ["alice@nutrition.co", "carol@nutrition.co", "eve@nutrition.co", "bob@nutrition.co"],
        "quarantined",
    )
    assert {r["outcome"] for r in result["results"]} == {"quarantined"}


def test_a_function_creates_only_the_clients_it_calls(stack):
    store(stack, canonical_event("process")["key"])
    stack.invoke("process", canonical_event("process"))
    module = stack.function_by_code("process").module
    assert module is not None
    services = module.services()
    assert services.objects.client.created  # read the message
    assert services.timeline.client.created  # recorded the timeline
    assert not services.app_events.client.created
    assert not services.dead_letters.client.created
    assert not any(t.client.created for t in services.transports.values())


def test_the_template_rule_hands_stored_messages_only_to_the_start_function(stack):
    """The EventBridge rule of the Start function, on moto's own S3 events (a probe queue
    stands in for the function)."""
    function = stack.properties("StartFunction")
    pattern = function["Events"]["MessageStored"]["Properties"]["Pattern"]
    sqs = boto3.client("sqs", region_name=REGION)
    probe = sqs.create_queue(QueueName="probe")["QueueUrl"]
    events = boto3.client("events", region_name=REGION)
    events.put_rule(Name="message-stored", EventPattern=json.dumps(pattern))
    events.put_targets(
        Rule="message-stored",
        Targets=[{"Id": "probe", "Arn": f"arn:aws:sqs:{REGION}:123456789012:probe"}],
    )
    key = canonical_event("process")["key"]
    store(stack, key)
    store(stack, "attachments/0123abcd", b"an attachment")  # what Process itself writes
    received = sqs.receive_message(QueueUrl=probe, MaxNumberOfMessages=10).get("Messages", [])
    assert [json.loads(m["Body"])["detail"]["object"]["key"] for m in received] == [key]
    # and the Start function reads the event as S3 sends it: the stored half of the message
    stack.deploy_state_machine()
    answer = stack.invoke("start", json.loads(received[0]["Body"]))
    assert answer["result"] == "waiting for the envelope (InvokeLambda)"
