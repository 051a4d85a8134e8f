"""The operator's commands with --aws: the quarantine and tracking on the state table and the
deferred queue in moto, Mail Manager's archive API through botocore's Stubber (moto has no
mailmanager service; the Stubber checks every request and answer against botocore's model),
and the stack's names read from its CloudFormation outputs."""

from __future__ import annotations

import http.cookiejar
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import uvicorn
from botocore.stub import ANY, Stubber
from moto import mock_aws

from mxgate.adapters.aws import operator as operator_module
from mxgate.adapters.aws.archive import MailManagerArchive
from mxgate.adapters.aws.bootstrap import aws_desk
from mxgate.adapters.aws.dynamodb import DynamoQuarantine, DynamoState
from mxgate.adapters.aws.operator import stack_names
from mxgate.archive.query import ArchiveQuery
from mxgate.cli import main
from mxgate.console.app import create_app
from mxgate.console.security import csrf_token
from mxgate.mailmanager.template import read_template
from mxgate.records import (
    DeferredDelivery,
    HeldRecipient,
    MessageRef,
    MessageSummary,
    Outcome,
    QuarantineRecord,
    RecipientState,
    Stage,
    TimelineEvent,
)
from tests.fakes import ManualClock
from tests.records import a_deferred_delivery
from tests.support import REPO, TEMPLATE, wait_for

REGION = "us-east-1"
RAW = b"From: Invoices <billing@invoices.example>\r\nTo: bob@nutrition.co\r\nSubject: Invoice 4471\r\n\r\nopen it\r\n"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    table = read_template(TEMPLATE)["Resources"]["StateTable"]["Properties"]
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(
            TableName="state",
            AttributeDefinitions=table["AttributeDefinitions"],
            KeySchema=table["KeySchema"],
            BillingMode=table["BillingMode"],
        )
        sqs = boto3.client("sqs", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="raw-bucket")
        s3.put_object(Bucket="raw-bucket", Key="raw/01MSG", Body=RAW)
        defer = sqs.create_queue(QueueName="defer")["QueueUrl"]
        stranded = sqs.create_queue(QueueName="defer-dlq")["QueueUrl"]
        cloudformation = boto3.client("cloudformation", region_name=REGION)
        outputs = {
            "StateTableName": "state",
            "DeferQueueUrl": defer,
            "DeferDeadLetterQueueUrl": stranded,
            "RawMailBucketName": "raw-bucket",
        }
        cloudformation.create_stack(
            StackName="mxgate",
            TemplateBody=json.dumps(
                {
                    "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                    "Outputs": {k: {"Value": v} for k, v in outputs.items()},
                }
            ),
        )
        yield {"dynamodb": dynamodb, "sqs": sqs, "s3": s3, "defer": defer, "stranded": stranded}


def held_record(clock: ManualClock) -> QuarantineRecord:
    return QuarantineRecord(
        quarantine_id="01MSG",
        message_id="01MSG",
        held_at=clock.now(),
        message=MessageRef(
            message_id="01MSG",
            bucket="raw-bucket",
            key="raw/01MSG",
            digest="d" * 64,
            envelope_sender="billing@invoices.example",
            size=len(RAW),
            subject="Invoice 4471",
        ),
        from_="billing@invoices.example",
        recipients=[
            HeldRecipient(
                recipient="bob@nutrition.co",
                route="workspace",
                rule="executable-attachment",
                reason="attachment invoice.exe",
            )
        ],
    )


def test_quarantine_on_aws_lists_shows_and_releases_once(aws, capsys):
    clock = ManualClock(datetime(2025, 6, 2, 9, 0, tzinfo=UTC))
    state = DynamoState(aws["dynamodb"], "state", clock)
    DynamoQuarantine(aws["dynamodb"], "state").hold(held_record(clock))
    state.settle(
        RecipientState(
            message_id="01MSG",
            recipient="bob@nutrition.co",
            outcome=Outcome.QUARANTINED,
            at=clock.now(),
            route="quarantine:executable-attachment",
        )
    )
    flags = [
        "--aws",
        "--stack",
        "mxgate",
        "--region",
        REGION,
        "--routes",
        str(REPO / "config" / "routes.yaml"),
    ]

    assert main(["quarantine", "list", "--json", *flags]) == 0
    (listed,) = json.loads(capsys.readouterr().out)["quarantined"]
    assert (listed["quarantine_id"], listed["held"]) == ("01MSG", ["bob@nutrition.co"])
    assert main(["quarantine", "show", "01M", *flags]) == 0  # a prefix, the message from S3
    shown = capsys.readouterr().out
    assert "executable-attachment" in shown
    assert "open it" in shown

    assert main(["quarantine", "release", "01MSG", "--json", *flags]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["released"] == ["bob@nutrition.co"]
    assert report["by"].startswith("arn:aws:")  # the operator's identity, from STS
    (queued,) = aws["sqs"].receive_message(QueueUrl=aws["defer"], MaxNumberOfMessages=10)[
        "Messages"
    ]
    delivery = DeferredDelivery.model_validate_json(queued["Body"]).delivery
    assert (delivery.kind, delivery.destination, delivery.recipients) == (
        "mailbox",
        "workspace",
        ["bob@nutrition.co"],
    )
    assert state.states("01MSG") == []  # reopened: the redelivery settles it
    assert any(e.stage is Stage.RELEASED for e in state.events("01MSG"))

    assert main(["quarantine", "release", "01MSG", "--json", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["released"] == []  # nothing twice
    assert main(["quarantine", "purge", *flags]) == 1
    assert "purges itself" in capsys.readouterr().err


def test_dlq_on_aws_lists_and_redrives_what_the_redeliver_function_never_started(aws, capsys):
    """SQS moves a deferred record the Redeliver function failed to start five times to the
    deferred queue's own dead-letter queue: `mxgate dlq --aws` lists it with the dead letters,
    shows it, and redrives it to the deferred queue, due now."""
    clock = ManualClock(datetime(2025, 6, 2, 9, 0, tzinfo=UTC))
    stuck = a_deferred_delivery("01STUCK.workspace.0#abcd#3", clock.now(), message_id="01STUCK")
    aws["sqs"].send_message(QueueUrl=aws["stranded"], MessageBody=stuck.model_dump_json())
    flags = ["--aws", "--stack", "mxgate", "--region", REGION]

    assert main(["dlq", "list", "--json", *flags]) == 0
    (listed,) = json.loads(capsys.readouterr().out)["dead_letters"]
    assert (listed["id"], listed["kind"], listed["message_id"]) == (
        stuck.record_id,
        "deferred-queue",
        "01STUCK",
    )
    assert listed["recipients"] == stuck.delivery.recipients
    assert main(["dlq", "show", stuck.record_id, *flags]) == 0
    assert "could not start it 5 times" in capsys.readouterr().out

    assert main(["dlq", "redrive", "--all", "--json", *flags]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)["redriven"]] == [stuck.record_id]
    (queued,) = aws["sqs"].receive_message(QueueUrl=aws["defer"], MaxNumberOfMessages=10)[
        "Messages"
    ]
    again = DeferredDelivery.model_validate_json(queued["Body"])
    assert again.record_id == stuck.record_id
    assert again.delivery == stuck.delivery
    left = aws["sqs"].receive_message(QueueUrl=aws["stranded"], MaxNumberOfMessages=10)
    assert left.get("Messages", []) == []


def test_trace_search_reads_the_summaries_on_the_recent_list(aws):
    clock = ManualClock(datetime(2025, 6, 2, 9, 0, tzinfo=UTC))
    state = DynamoState(aws["dynamodb"], "state", clock)
    state.record(
        TimelineEvent(
            message_id="01MSG",
            at=clock.now(),
            stage=Stage.PARSED,
            summary=MessageSummary(
                envelope_sender="billing@invoices.example",
                recipients=["bob@nutrition.co"],
                subject="Invoice",
            ),
        )
    )
    found = list(state.summaries())
    assert [(m, s.subject) for m, _, s in found] == [("01MSG", "Invoice")]


def test_stack_names_come_from_flags_then_environment_then_outputs(aws):
    session = boto3.session.Session(region_name=REGION)
    names = stack_names(
        session, {"state_table": "given"}, "mxgate", environ={"MXGATE_RAW_BUCKET": "env-bucket"}
    )
    assert (names.state_table, names.raw_bucket, names.defer_queue) == (
        "given",
        "env-bucket",
        aws["defer"],
    )
    with pytest.raises(Exception, match="--archive-id or MXGATE_ARCHIVE_ID"):
        names.need("archive_id")


# ------------------------------------------------------------------------------ the archive API


def stubbed_archive() -> tuple[MailManagerArchive, Stubber]:
    client = boto3.client("mailmanager", region_name=REGION)
    stubber = Stubber(client)
    return MailManagerArchive(
        client,
        "a-archive123",
        ManualClock(datetime(2025, 6, 2, 9, 0, tzinfo=UTC)),
        fetch=lambda link: RAW,
    ), stubber


def test_archive_search_runs_a_search_job_with_mail_managers_filters():
    archive, stubber = stubbed_archive()
    query = ArchiveQuery(subject=["invoice"], has_attachments=True, limit=5)
    stubber.add_response(
        "start_archive_search",
        {"SearchId": "search-1"},
        {
            "ArchiveId": "a-archive123",
            "Filters": query.filters(),
            "FromTimestamp": ANY,
            "ToTimestamp": ANY,
            "MaxResults": 5,
        },
    )
    stubber.add_response(
        "get_archive_search", {"Status": {"State": "RUNNING"}}, {"SearchId": "search-1"}
    )
    stubber.add_response(
        "get_archive_search", {"Status": {"State": "COMPLETED"}}, {"SearchId": "search-1"}
    )
    stubber.add_response(
        "get_archive_search_results",
        {
            "Rows": [
                {
                    "ArchivedMessageId": "msg-1",
                    "ReceivedTimestamp": datetime(2026, 11, 28, 9, 10, tzinfo=UTC),
                    "From": "billing@invoices.example",
                    "To": "bob@nutrition.co",
                    "Subject": "Invoice 4471",
                    "HasAttachments": True,
                    "Envelope": {"From": "billing@invoices.example", "To": ["bob@nutrition.co"]},
                }
            ]
        },
        {"SearchId": "search-1"},
    )
    with stubber:
        (row,) = archive.search(query)
    stubber.assert_no_pending_responses()
    assert (row.archived_message_id, row.subject, row.envelope_to) == (
        "msg-1",
        "Invoice 4471",
        ["bob@nutrition.co"],
    )


def test_archive_search_failure_says_why():
    archive, stubber = stubbed_archive()
    stubber.add_response("start_archive_search", {"SearchId": "s"})
    stubber.add_response(
        "get_archive_search", {"Status": {"State": "FAILED", "ErrorMessage": "quota"}}
    )
    with stubber, pytest.raises(Exception, match="failed: quota"):
        archive.search(ArchiveQuery())


def test_archive_show_reads_the_message_through_its_download_link():
    archive, stubber = stubbed_archive()
    stubber.add_response(
        "get_archive_message",
        {
            "MessageDownloadLink": "https://example.invalid/presigned",
            "Envelope": {
                "From": "billing@invoices.example",
                "To": ["bob@nutrition.co"],
                "Helo": "mx",
            },
            "Metadata": {
                "Timestamp": datetime(2026, 11, 28, tzinfo=UTC),
                "SenderIpAddress": "203.0.113.9",
            },
        },
        {"ArchivedMessageId": "msg-1"},
    )
    with stubber:
        found = archive.get("msg-1")
    assert found is not None
    assert (found.subject, found.sender_ip, found.helo) == ("Invoice 4471", "203.0.113.9", "mx")
    stubber.add_client_error("get_archive_message", "ResourceNotFoundException")
    with stubber:
        assert archive.get("gone") is None


def test_archive_export_on_aws_writes_eml_files(aws, tmp_path, monkeypatch, capsys):
    """The command end to end: an export job (stubbed) into the raw bucket (moto), downloaded."""
    client = boto3.client("mailmanager", region_name=REGION)
    stubber = Stubber(client)
    stubber.add_response(
        "start_archive_export",
        {"ExportId": "export-1"},
        {
            "ArchiveId": "a-archive123",
            "Filters": ArchiveQuery(subject=["invoice"]).filters(),
            "FromTimestamp": ANY,
            "ToTimestamp": ANY,
            "ExportDestinationConfiguration": {"S3": {"S3Location": ANY}},
            "IncludeMetadata": False,
        },
    )

    def written(*_: Any, **__: Any) -> None:  # what Mail Manager's job leaves in the bucket
        aws["s3"].put_object(Bucket="raw-bucket", Key="exports/run/msg-1.eml", Body=RAW)

    stubber.add_response(
        "get_archive_export", {"Status": {"State": "PROCESSING"}}, {"ExportId": "export-1"}
    )
    stubber.add_response(
        "get_archive_export", {"Status": {"State": "COMPLETED"}}, {"ExportId": "export-1"}
    )
    client.meta.events.register("before-parameter-build.mailmanager.GetArchiveExport", written)
    real = operator_module.OperatorAws.client

    def client_for(self: Any, service: str) -> Any:
        return client if service == "mailmanager" else real(self, service)

    monkeypatch.setattr(operator_module.OperatorAws, "client", client_for)
    monkeypatch.setattr("mxgate.adapters.aws.archive.POLL_SECONDS", 0.0)
    out = tmp_path / "export"
    with stubber:
        code = main(
            [
                "archive",
                "export",
                "subject:invoice",
                "--to",
                str(out),
                "--aws",
                "--stack",
                "mxgate",
                "--archive-id",
                "a-archive123",
                "--export-location",
                "s3://raw-bucket/exports/run",
                "--json",
            ]
        )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert [p.rsplit("/", 1)[-1] for p in report["files"]] == ["msg-1.eml"]
    assert (out / "msg-1.eml").read_bytes() == RAW


def test_console_on_aws_serves_the_stacks_quarantine_and_archive(aws, monkeypatch):
    """`mxgate console --aws` as an operator runs it: uvicorn on loopback, the stack in moto,
    the archive API stubbed; no page without the token, release through a CSRF-checked form."""

    clock = ManualClock(datetime.now(UTC))
    DynamoQuarantine(aws["dynamodb"], "state").hold(held_record(clock))
    client = boto3.client("mailmanager", region_name=REGION)
    stubber = Stubber(client)
    stubber.add_response("start_archive_search", {"SearchId": "s"})
    stubber.add_response("get_archive_search", {"Status": {"State": "COMPLETED"}})
    stubber.add_response(
        "get_archive_search_results",
        {
            "Rows": [
                {
                    "ArchivedMessageId": "m1",
                    "ReceivedTimestamp": clock.now(),
                    "Subject": "Invoice 4471",
                }
            ]
        },
    )
    real = operator_module.OperatorAws.client
    monkeypatch.setattr(
        operator_module.OperatorAws,
        "client",
        lambda self, service: client if service == "mailmanager" else real(self, service),
    )
    session = boto3.session.Session(region_name=REGION)
    names = stack_names(session, {"archive_id": "a-archive123"}, "mxgate")
    desk = aws_desk(operator_module.OperatorAws(session, names), REPO / "config" / "routes.yaml")
    server = uvicorn.Server(
        uvicorn.Config(create_app(desk, "secret"), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "/quarantine", timeout=10)
        assert refused.value.code == 403
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        assert (
            "Invoice 4471"
            in browser.open(base + "/quarantine?token=secret", timeout=10).read().decode()
        )
        with stubber:
            page = browser.open(base + "/archive?q=subject%3Ainvoice", timeout=10).read().decode()
        assert "Invoice 4471" in page
        assert "Mailboxes" not in page  # no local Maildirs on AWS
        with pytest.raises(urllib.error.HTTPError) as forged:
            browser.open(base + "/quarantine/01MSG/release", data=b"csrf=forged", timeout=10)
        assert forged.value.code == 403
        form = urllib.parse.urlencode({"csrf": csrf_token("secret")}).encode()
        answer = (
            browser.open(base + "/quarantine/01MSG/release", data=form, timeout=10).read().decode()
        )
        assert "released to bob@nutrition.co" in answer
    finally:
        server.should_exit = True
        thread.join(10)
    (queued,) = aws["sqs"].receive_message(QueueUrl=aws["defer"], MaxNumberOfMessages=10)[
        "Messages"
    ]
    assert DeferredDelivery.model_validate_json(queued["Body"]).delivery.recipients == [
        "bob@nutrition.co"
    ]
