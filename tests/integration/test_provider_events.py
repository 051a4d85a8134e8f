"""What the provider did: a delivery SES accepts ends `relayed`; SES's configuration set events
(the canonical EventBridge payloads in events/ses-*.json) move each recipient to `delivered` or
`bounced`, and a provider bounce after the relay shows on the timeline. The handlers run in
process against moto, on the stack template.yaml defines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mxgate.errors import TransientError
from mxgate.sandbox.stack import MOTO_CONFIG, REGION, Stack, sent_messages
from tests.awsstack import EVENTS, canonical_event, create_stack

STORED = (EVENTS / "stored-message.eml").read_bytes()
MESSAGE_ID = canonical_event("process")["key"].removeprefix("raw/")


@pytest.fixture
def stack() -> Iterator[Stack]:
    with mock_aws(config=MOTO_CONFIG):
        created = create_stack()
        boto3.client("s3", region_name=REGION).put_object(
            Bucket=created.resource("RawMailBucket"),
            Key=canonical_event("process")["key"],
            Body=STORED,
        )
        yield created
        created.close()


def states(stack: Stack) -> dict[str, tuple[str, str]]:
    response = boto3.client("dynamodb", region_name=REGION).query(
        TableName=stack.resource("StateTable"),
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"msg#{MESSAGE_ID}"}},
    )
    return {
        i["recipient"]["S"]: (i["outcome"]["S"], i["detail"]["S"])
        for i in response["Items"]
        if i["sk"]["S"].startswith("rcpt#")
    }


def timeline(stack: Stack) -> list[dict[str, str]]:
    response = boto3.client("dynamodb", region_name=REGION).query(
        TableName=stack.resource("StateTable"),
        KeyConditionExpression="pk = :pk AND begins_with(sk, :event)",
        ExpressionAttributeValues={":pk": {"S": f"msg#{MESSAGE_ID}"}, ":event": {"S": "event#"}},
    )
    return [
        {k: v["S"] for k, v in e["M"].items()} for i in response["Items"] for e in i["events"]["L"]
    ]


def deliver_all(stack: Stack) -> None:
    planned = stack.invoke("process", canonical_event("process"))
    for delivery in planned["deliveries"]:
        stack.invoke("deliver", {"delivery": delivery})


def test_ses_deliveries_go_through_the_configuration_set_with_our_tags(stack, monkeypatch):
    sent: list[dict[str, Any]] = []
    from moto.sesv2.responses import SESV2Response  # noqa: PLC0415

    original = SESV2Response.send_email

    def recording(self: Any) -> Any:
        sent.append(json.loads(self.body))
        return original(self)

    monkeypatch.setattr(SESV2Response, "send_email", recording)
    deliver_all(stack)
    configuration_set = stack.resource("DeliveryConfigurationSet")
    assert [request["ConfigurationSetName"] for request in sent] == [configuration_set] * 2
    assert sorted(
        {t["Name"]: t["Value"] for t in request["EmailTags"]}["mxgate-route"] for request in sent
    ) == ["m365", "workspace"]
    assert all(
        {t["Name"]: t["Value"] for t in r["EmailTags"]}["mxgate-message"] == MESSAGE_ID
        for r in sent
    )
    assert len(sent_messages()) == 2
    # SES took them: relayed, until the mailbox host's answer is reported
    assert {r: outcome for r, (outcome, _) in states(stack).items()} == dict.fromkeys(
        ["alice@nutrition.co", "eve@nutrition.co", "bob@nutrition.co", "carol@nutrition.co"],
        "relayed",
    )


def test_a_delivery_report_means_the_mailbox_host_took_it(stack):
    deliver_all(stack)
    answer = stack.invoke("provider_events", canonical_event("ses-delivery"))
    assert answer["recorded"] == 2
    found = states(stack)
    assert found["alice@nutrition.co"][0] == "delivered"
    assert "250 2.0.0 OK" in found["alice@nutrition.co"][1]
    assert "a8-70.smtp-out.amazonses.com" in found["alice@nutrition.co"][1]
    assert found["carol@nutrition.co"][0] == "relayed"  # no report for her yet
    # reported twice (EventBridge delivers at least once): nothing changes
    again = stack.invoke("provider_events", canonical_event("ses-delivery"))
    assert {r["outcome"] for r in again["results"]} == {"delivered"}
    assert states(stack) == found


def test_a_provider_bounce_after_relay_changes_the_state_and_shows_on_the_timeline(stack):
    deliver_all(stack)
    stack.invoke("provider_events", canonical_event("ses-bounce"))
    outcome, detail = states(stack)["carol@nutrition.co"]
    assert outcome == "bounced"
    assert "5.1.10" in detail
    assert "RecipientNotFound" in detail
    provider = [e for e in timeline(stack) if e["stage"] == "provider"]
    assert [(e["recipient"], e["detail"].split(":", 1)[0]) for e in provider] == [
        ("carol@nutrition.co", "bounced")
    ]
    assert "Permanent bounce (General)" in provider[0]["detail"]
    # a late Delivery report for her (out of order) does not undo the bounce
    late = canonical_event("ses-delivery")
    late["detail"]["mail"]["tags"]["mxgate-route"] = ["m365"]
    late["detail"]["delivery"]["recipients"] = ["carol@nutritionco.mail.onmicrosoft.com"]
    stack.invoke("provider_events", late)
    assert states(stack)["carol@nutrition.co"][0] == "bounced"


def test_a_report_before_its_delivery_is_recorded_is_tried_again(stack):
    with pytest.raises(TransientError, match="before its delivery was recorded"):
        stack.invoke("provider_events", canonical_event("ses-bounce"))


def test_reports_of_mail_that_is_not_ours_are_ignored(stack):
    event = canonical_event("ses-bounce")
    del event["detail"]["mail"]["tags"]["mxgate-message"]  # a DSN, or another sender's mail
    assert stack.invoke("provider_events", event) == {"recorded": 0}


def test_the_template_rule_takes_the_configuration_sets_reports_only(stack):
    """The ProviderEvents function's EventBridge rule, on the canonical reports (a probe
    queue stands in for the function, which moto's EventBridge cannot invoke)."""
    function = stack.properties("ProviderEventsFunction")
    pattern = function["Events"]["Reported"]["Properties"]["Pattern"]
    sqs = boto3.client("sqs", region_name=REGION)
    probe = sqs.create_queue(QueueName="probe")["QueueUrl"]
    events = boto3.client("events", region_name=REGION)
    events.put_rule(Name="reported", EventPattern=json.dumps(pattern))
    events.put_targets(
        Rule="reported",
        Targets=[{"Id": "probe", "Arn": f"arn:aws:sqs:{REGION}:123456789012:probe"}],
    )
    other = canonical_event("ses-delivery")
    other["detail"]["mail"]["tags"]["ses:configuration-set"] = ["marketing"]
    for event in (canonical_event("ses-delivery"), canonical_event("ses-bounce"), other):
        events.put_events(
            Entries=[
                {
                    "Source": event["source"],
                    "DetailType": event["detail-type"],
                    "Detail": json.dumps(event["detail"]),
                }
            ]
        )
    received = sqs.receive_message(QueueUrl=probe, MaxNumberOfMessages=10).get("Messages", [])
    assert sorted(json.loads(m["Body"])["detail-type"] for m in received) == [
        "Email Bounced",
        "Email Delivered",
    ]
