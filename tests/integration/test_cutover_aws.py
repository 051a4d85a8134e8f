"""`mxgate check --aws` and `mxgate rules replay --aws`: the stack's outputs and the SES
identity in moto, the ingress point through botocore's Stubber with the real mailmanager model
(moto has no Mail Manager), the test message and its terminal state in moto's S3 and DynamoDB,
and the raw bucket replayed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.stub import Stubber
from moto import mock_aws

from mxgate.adapters.aws.arrivals import DynamoArrivals
from mxgate.adapters.aws.dynamodb import DynamoState
from mxgate.adapters.aws.operator import OperatorAws, stack_names
from mxgate.adapters.aws.stack import DeployedStack
from mxgate.cli import build_parser, main
from mxgate.cli.check import build_report
from mxgate.cli.common import settings_from
from mxgate.cli.cutover import Run, local_facts
from mxgate.cli.cutover_aws import follow_aws
from mxgate.clock import SystemClock
from mxgate.cutover.model import Status
from mxgate.local.bootstrap import Bootstrap
from mxgate.mailmanager.template import read_template
from mxgate.records import Envelope, Outcome, RecipientState
from mxgate.workflow.model import Arrival
from tests.dnsserver import Zone, ZoneServer
from tests.support import TEMPLATE, local_config
from tests.templates import gateway_template

REGION = "us-east-1"
TARGET = "abc123.mail-manager-smtp.us-east-1.amazonaws.com"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        table = read_template(TEMPLATE)["Resources"]["StateTable"]["Properties"]
        boto3.client("dynamodb").create_table(
            TableName="state",
            AttributeDefinitions=table["AttributeDefinitions"],
            KeySchema=table["KeySchema"],
            BillingMode=table["BillingMode"],
        )
        boto3.client("s3").create_bucket(Bucket="raw-mail")
        outputs = {
            "MxTarget": TARGET,
            "StateTableName": "state",
            "RawMailBucketName": "raw-mail",
            "IngressPointId": "inp-abc123",
        }
        boto3.client("cloudformation").create_stack(
            StackName="mxgate",
            TemplateBody=json.dumps(
                {
                    "Parameters": {"DirectMode": {"Type": "String", "Default": "false"}},
                    "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                    "Outputs": {k: {"Value": v} for k, v in outputs.items()},
                }
            ),
        )
        yield


def deployed(stubbed: Any) -> DeployedStack:
    session = boto3.session.Session(region_name=REGION)
    names = stack_names(session, {}, "mxgate")
    return DeployedStack(OperatorAws(session, names, {"mailmanager": stubbed}))


def stubbed_mail_manager(status: str = "ACTIVE") -> tuple[Any, Stubber]:
    client = boto3.client("mailmanager", region_name=REGION)
    stubber = Stubber(client)
    stubber.add_response(
        "get_ingress_point",
        {
            "IngressPointId": "inp-abc123",
            "IngressPointName": "mxgate-mx",
            "Status": status,
            "Type": "OPEN",
            "ARecord": TARGET,
        },
        {"IngressPointId": "inp-abc123"},
    )
    return client, stubber


@pytest.fixture
def dns() -> Iterator[ZoneServer]:
    zone = Zone()
    zone.add("nutrition.co", "MX", TARGET)
    zone.add("customer-support.nutrition.co", "MX", TARGET)
    server = ZoneServer(zone)
    yield server
    server.stop()


def arguments(tmp_path: Path, dns: ZoneServer, *more: str) -> Any:
    return build_parser().parse_args(
        [
            "check",
            "--domain",
            "nutrition.co",
            "--config",
            str(local_config(tmp_path)),
            "--home",
            str(tmp_path / "home"),
            "--resolver",
            f"127.0.0.1:{dns.port}",
            "--aws",
            "--stack",
            "mxgate",
            *more,
        ]
    )


def test_the_deployed_stack_gives_the_mx_target_and_is_checked(
    aws: None, tmp_path: Path, dns: ZoneServer
) -> None:
    boto3.client("sesv2").create_email_identity(EmailIdentity="nutrition.co")
    client, stubber = stubbed_mail_manager()
    with stubber:
        report = build_report(arguments(tmp_path, dns), deployed(client))
    stubber.assert_no_pending_responses()
    checks = {c.name: c for c in report.checks}
    assert checks["aws.stack"].status is Status.PASS
    assert checks["aws.ingress-point"].status is Status.PASS
    assert checks["aws.ingress-point"].summary == f"ingress point inp-abc123 is ACTIVE at {TARGET}"
    assert checks["mx"].status is Status.PASS  # compared with the stack's MxTarget output
    identity = checks["aws.ses-identity"]
    assert identity.status is Status.FAIL  # moto verifies the domain but starts no DKIM
    assert "DKIM is NOT_STARTED" in identity.summary
    assert "customer-support.nutrition.co inherits the verification of nutrition.co" in (
        identity.evidence
    )


def test_an_ingress_point_that_is_not_active_fails(
    aws: None, tmp_path: Path, dns: ZoneServer
) -> None:
    client, stubber = stubbed_mail_manager("PROVISIONING")
    with stubber:
        report = build_report(arguments(tmp_path, dns), deployed(client))
    checks = {c.name: c for c in report.checks}
    assert checks["aws.ses-identity"].summary == "nutrition.co is not an SES identity"
    assert checks["aws.ingress-point"].status is Status.FAIL
    assert "it is PROVISIONING, not ACTIVE" in checks["aws.ingress-point"].summary


def test_a_missing_stack_is_a_failed_check(aws: None, tmp_path: Path, dns: ZoneServer) -> None:
    session = boto3.session.Session(region_name=REGION)
    missing = DeployedStack(
        OperatorAws(session, stack_names(session, {}, None).model_copy(update={"stack": "other"}))
    )
    report = build_report(arguments(tmp_path, dns), missing)
    (stack,) = [c for c in report.checks if c.name == "aws.stack"]
    assert stack.status is Status.FAIL
    assert "other" in stack.summary


def test_send_test_on_aws_finds_the_message_by_its_token(
    aws: None, tmp_path: Path, dns: ZoneServer
) -> None:
    args = arguments(tmp_path, dns, "--send-test", "--smtp", f"{TARGET}:25", "--wait", "5")
    stack = deployed(boto3.client("mailmanager", region_name=REGION))
    settings = settings_from(args)
    run = Run(args, local_facts(settings), dns.resolver(), Bootstrap(settings))
    run.token = "mxgate-check-0123456789abcdef"
    run.outputs = stack.outputs()
    sent_at = datetime.now(UTC) - timedelta(minutes=1)
    s3 = boto3.client("s3")
    s3.put_object(Bucket="raw-mail", Key="raw/other", Body=b"Subject: x\r\n\r\nno token\r\n")
    s3.put_object(
        Bucket="raw-mail",
        Key="raw/0000mm-message-id",
        Body=f"X-Mxgate-Check: {run.token}\r\nSubject: mxgate check\r\n\r\nhi\r\n".encode(),
    )
    DynamoState(boto3.client("dynamodb"), "state", SystemClock()).settle(
        RecipientState(
            message_id="0000mm-message-id",
            recipient="postmaster@nutrition.co",
            outcome=Outcome.DELIVERED,
            at=datetime.now(UTC),
            route="workspace",
            detail="sent through SES",
        )
    )
    follow_aws(run, stack, "postmaster@nutrition.co", sent_at)
    (terminal,) = run.checks
    assert terminal.status is Status.PASS
    assert terminal.summary == "0000mm-message-id: postmaster@nutrition.co delivered"


def test_replay_on_aws_runs_the_raw_bucket_as_received(
    aws: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s3 = boto3.client("s3")
    for number, recipient in enumerate(["alice@nutrition.co", "carol@nutrition.co"]):
        key = f"raw/0000mm-{number}"
        stored = (  # as WriteToS3 stores it: after the rule set's AddHeader
            f"X-Mxgate-Loop: mxgate\r\nFrom: billing@supplier.example\r\nTo: {recipient}\r\n"
            f"Subject: Invoice {number}\r\n\r\npay\r\n"
        )
        s3.put_object(Bucket="raw-mail", Key=key, Body=stored.encode())
    envelope = Envelope(
        message_id="0000mm-1",
        mail_from="bounces@supplier.example",
        recipients=["carol@nutrition.co", "dave@nutrition.co"],
    )
    # the envelope Mail Manager's InvokeLambda event brought, in the message's arrival record
    arrivals = DynamoArrivals(boto3.client("dynamodb"), "state", SystemClock())
    arrivals.record(Arrival(message_id="0000mm-1", envelope=envelope))
    document = yaml.safe_load(gateway_template(tmp_path / "new").read_text())
    rules = document["Resources"]["RuleSet"]["Properties"]["Rules"]
    rules.insert(
        0,
        {
            "Name": "no-dave",
            "Conditions": [
                {
                    "StringExpression": {
                        "Evaluate": {"Attribute": "RECIPIENT"},
                        "Operator": "EQUALS",
                        "Values": ["dave@nutrition.co"],
                    }
                }
            ],
            "Actions": [{"Drop": {}}],
        },
    )
    new = tmp_path / "new" / "template.yaml"
    new.write_text(yaml.safe_dump(document, sort_keys=False))
    code = main(
        [
            "rules",
            "replay",
            "--template",
            str(new),
            "--config",
            str(local_config(tmp_path)),
            "--aws",
            "--raw-bucket",
            "raw-mail",
            "--table",
            "state",
            "--json",
            "--no-auth",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["replayed"]["source"] == "s3://raw-mail/raw/"
    # carol's and dave's message from its envelope; alice's has none, and is left out (never
    # guessed from its To field)
    assert (report["replayed"]["messages"], report["replayed"]["recipients"]) == (1, 2)
    (change,) = report["changed"]
    assert change["recipient"] == "dave@nutrition.co"
    assert change["mail_from"] == "bounces@supplier.example"
    # not a loop: the stored copy's X-Mxgate-Loop was the rule set's own, and came off
    assert (change["old"]["outcome"], change["old"]["route"]) == ("delivered", "mailbox:m365")
    assert (change["new"]["outcome"], change["new"]["why"]) == ("dropped", "rule no-dave: Drop")
